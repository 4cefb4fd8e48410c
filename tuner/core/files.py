"""Whole files: a write goes to a part file beside its target and is renamed over it, so a reader (or
a resumed driver) sees the old file or the whole new one, never a torn one."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Tuple

__all__ = ["PART_SUFFIX", "open_part", "atomic_write", "default_cache_dir"]

PART_SUFFIX = ".srrl-part"  # a write in flight, or cut short by a kill


def default_cache_dir() -> Path:
    """Where the teacher cache and the image folders' check results live: ``$SRRL_CACHE_DIR``, else ~/.cache/srrl-tune."""
    return Path(os.environ.get("SRRL_CACHE_DIR") or Path.home() / ".cache" / "srrl-tune")


def open_part(path: str) -> Tuple[str, BinaryIO]:
    """A new part file beside ``path`` to write and then rename over it: ``(part path, open binary file)``.

    Mode 0o666 less the umask, as a plain ``open()`` gives (``mkstemp``'s 0o600 would hide the file
    from a cluster's other users). The name never ends like one Tune or the sweep reads.
    """
    folder, name = os.path.split(path)
    os.makedirs(folder or ".", exist_ok=True)
    part = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}{PART_SUFFIX}")
    return part, os.fdopen(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` to a part file in its folder, fsync, then rename:
    readers see the old file or the whole new one, never a torn one."""
    part, f = open_part(str(path))
    try:
        with f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except OSError as e:
        Path(part).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(path)) from e  # the file it was for (a failed write() names none)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
