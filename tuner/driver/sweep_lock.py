"""One driver per sweep (docs/architecture.md, "Faults"): an OS file lock beside the sweep folder, held from
before the first write until the driver exits. A second driver is refused in one line naming the holder; the
lock of a killed driver is released by the kernel (on NFS by the server when the client's lease ends), so the
next driver takes it over without a stale-lock rule. Remote storage (s3://, gs://) has no such lock: one
driver per sweep there is the user's to keep."""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from tuner.core.config import ConfigError
from tuner.driver.storage import SweepFolder

__all__ = ["hold_sweep", "lock_path"]


def lock_path(folder: SweepFolder) -> Path:
    """``<storage>/.<name>.lock``: beside the sweep folder, so a fresh sweep is locked before its folder exists
    and the folder holds only what Tune and the sweep write."""
    path = Path(folder.location)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def hold_sweep(folder: SweepFolder) -> Iterator[None]:
    """Hold the sweep's lock for the ``with`` block; ``ConfigError`` (field ``sweep``) when another driver holds it.

    The lock file says who holds it (host, PID, since when): it is opened without truncation, locked
    (``flock``, exclusive, non-blocking), and only then rewritten, so a refused driver reads the holder's line.
    """
    if folder.fs is not None:  # remote storage: no OS lock to take
        yield
        return
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"sweep: {folder.shown!r} is being run by another driver ({_who(fd)}); wait for it "
                              "to end or stop it, then --resume") from None
        me = {"host": socket.gethostname(), "pid": os.getpid(),
              "since": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _who(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        return f"host {info['host']}, PID {info['pid']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its host and PID not written yet"
