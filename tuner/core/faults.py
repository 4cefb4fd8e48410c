"""A full disk stops the whole sweep the way Ctrl-C does, and says so in one line naming the field and path.

Every trial of a sweep writes to the same places (the sweep folder under ``storage_path``, the MLflow
store, the Optuna study), so once one of them is full every trial would fail in turn and litter the
logs with tracebacks. Instead the first ``ENOSPC`` seen anywhere on the driver (a trial's checkpoint
upload, Tune's state sync, an MLflow write) records a ``NoSpace`` and sends this process ``SIGUSR1``,
which Tune treats as Ctrl-C: it saves what it can and returns with the trials resumable. The driver
then says where the space ran out and how to continue (docs/architecture.md, "Faults").
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

from tuner.core.uri import redact, sqlite_file

__all__ = ["NoSpace", "is_no_space", "no_space", "note_no_space", "stop_sweep", "stopped", "reset",
           "quiet_no_space_logs", "places_of", "noted", "note_stall", "stall_of", "stalled_ids",
           "forget_stall"]

_TEXTS = ("No space left on device", "Disk quota exceeded", "database or disk is full")
_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class NoSpace(Exception):
    """A file system a sweep writes to is full: ``field`` is the setting that points there, ``path`` the place."""

    def __init__(self, field: str, path: str) -> None:
        self.field, self.path = field, path
        self.resume: Optional[str] = None  # the sweep folder, once the sweep exists: --resume continues it
        free = _free(path)
        shown = f" ({_size(free)} free)" if free is not None else ""
        super().__init__(f"{field}: no space left on the file system of {path}{shown}; free space there")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        # RayTaskError(OSError) carries the trial's exception as .cause
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__


def is_no_space(error: Any) -> bool:
    """True when ``error`` (an exception, or an error file's text) is, or was caused by, a full disk."""
    if isinstance(error, str):
        return any(t in error for t in _TEXTS)
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in _ERRNOS:
            return True
        if any(t in str(e) for t in _TEXTS):
            return True
    return False


def places_of(storage_path: Optional[str], tracking_uri: Optional[str], optuna_storage: Optional[str],
              cache_dir: Optional[str] = None) -> dict:
    """``{field: folder}`` of the places a sweep writes to (a server's by its address)."""
    places = {}
    if storage_path and "://" not in storage_path:
        places["storage_path"] = str(Path(storage_path).expanduser())
    elif storage_path and storage_path.startswith("file://"):
        places["storage_path"] = storage_path[len("file://"):]
    for field, uri in (("tracking_uri", tracking_uri), ("optuna_storage", optuna_storage)):
        if uri and sqlite_file(uri) is not None:
            places[field] = str(sqlite_file(uri).parent)
        elif uri:  # a server's disk: named by its address, its free space unknown here
            places[field] = redact(uri)
    if cache_dir:
        places["cache_dir"] = str(Path(cache_dir).expanduser())
    return places


def no_space(error: Any, places: Mapping[str, str], default_field: Optional[str] = None) -> NoSpace:
    """The ``NoSpace`` for a full-disk ``error``: the place (of ``places``) whose path the error names, else
    ``default_field``'s, else the one with the least free space (the full one); every field whose place
    shares that file system is named."""
    text = error if isinstance(error, str) else " ".join(str(e) for e in _chain(error))
    named = re.findall(r"'(/[^']+)'", text)
    named += [getattr(e, "filename", None) or "" for e in ([] if isinstance(error, str) else _chain(error))]
    free = {f: _free(p) for f, p in places.items()}
    field = next((f for f, folder in places.items()
                  if any(n and Path(os.path.abspath(n)).is_relative_to(os.path.abspath(folder)) for n in named)), None)
    if field is None and default_field in places:
        field = default_field
    if field is None and any(v is not None for v in free.values()):
        field = min((f for f in free if free[f] is not None), key=free.get)
    if field is None:
        return NoSpace("disk", next((n for n in named if n), "?"))
    device = (_disk(places[field]) or (None,))[0]
    same = [f for f in places if f == field or (device is not None and (_disk(places[f]) or (None,))[0] == device)]
    return NoSpace(", ".join(same), places[field])


def _disk(path: str) -> Optional[Tuple[int, int]]:
    """``(device id, free bytes)`` of the file system holding ``path`` (or its nearest existing parent: a
    sweep folder not yet created); None for a URI or what cannot be read."""
    if "://" in path:
        return None
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return os.stat(probe).st_dev, shutil.disk_usage(probe).free
    except OSError:
        return None


def _free(path: str) -> Optional[int]:
    disk = _disk(path)
    return disk[1] if disk else None


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KB", "MB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GB"


# ---- the driver's record of why the sweep stopped ---------------------------------------------------
# Process-wide on purpose: Tune pickles callbacks with its state and rebuilds them on restore, so the
# object handed to Tune is not the one the driver holds; the driver process is one and the same.
_stopped: Optional[NoSpace] = None
_noted: Optional[str] = None  # the first local write that ran out of space in this process


def note_no_space(path: str) -> None:
    """A write of this process (``tuner.driver.atomic_fs``: Tune's state and checkpoints) found the disk full."""
    global _noted
    if _noted is None:
        _noted = path


def noted() -> Optional[str]:
    return _noted


def stop_sweep(fault: NoSpace) -> None:
    """On the driver, inside Tune's loop: stop the sweep as Ctrl-C does (Tune handles SIGUSR1 the same
    way), once; ``stopped()`` returns ``fault`` afterwards."""
    global _stopped
    if _stopped is not None:
        return
    _stopped = fault
    logging.getLogger("srrl").error("%s; stopping the sweep", fault)
    if callable(signal.getsignal(signal.SIGUSR1)):  # Tune's handler; outside Tune the default would kill us
        os.kill(os.getpid(), signal.SIGUSR1)


def stopped() -> Optional[NoSpace]:
    return _stopped


def reset() -> None:
    """Forget an earlier stop (a new sweep in the same process)."""
    global _stopped, _noted
    _stopped = _noted = None
    _stalls.clear()


#: trial id -> the ``StallError`` line of a trial the driver stopped (``tuner.driver.stalls``), until Tune has
#: ended or retried it: the MLflow callback, which Tune calls first, records the trial's end by it
_stalls: Dict[str, str] = {}


def note_stall(trial_id: str, line: str) -> None:
    """The driver killed this trial's worker for sending no result; ``line`` is why (``metrics.STALL_ERROR: ...``)."""
    _stalls[trial_id] = line


def stall_of(trial_id: str) -> Optional[str]:
    """The ``StallError`` line of a trial the driver stopped and Tune has not yet ended or retried, else None."""
    return _stalls.get(trial_id)


def stalled_ids() -> Tuple[str, ...]:
    """The trials stopped for a stall that Tune has not yet ended or retried."""
    return tuple(_stalls)


def forget_stall(trial_id: str) -> Optional[str]:
    """Tune has ended or retried the trial: its stall line, once, for its error file."""
    return _stalls.pop(trial_id, None)


class _QuietNoSpace(logging.Filter):
    """Drops Ray's tracebacks of full-disk writes: ``tuner.driver.no_space.StopOnNoSpace`` says it once, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (is_no_space(error) if error is not None else is_no_space(record.getMessage()))


def quiet_no_space_logs() -> None:
    """Install the filter on the loggers that report Tune's failed writes and trials (idempotent)."""
    # a logger's filters see only its own records, not its children's: each one that logs them
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune", "ray.tune.execution.experiment_state",
                 "ray.train._internal.syncer", "ray._private.worker", "mlflow.store.db.utils"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietNoSpace) for f in logger.filters):
            logger.addFilter(_QuietNoSpace())
