"""The Tune callback that stops a hung trial (docs/architecture.md, "Faults"): a trial that sends no result for its
stall limit is warned about once at half of it, then its worker is killed; Tune retries it from its last checkpoint
under ``max_failures``, and records it ``stalled`` once they are spent. A SIGSTOPped worker, an NFS read that never
returns or a wedged GPU all look the same from the driver: no result."""
from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional

from ray.tune import Callback

from tuner.core import faults
from tuner.core import metrics as M
from tuner.core.sweep_config import SweepConfig
from tuner.driver import ray_internals as RI

__all__ = ["StallWatch", "stall_watch", "FLOOR_S", "EPOCHS", "STARTUP_S", "WARN_AT"]

FLOOR_S = 600.0  # the default limit is never below 10 min (a loaded node, a slow checkpoint upload, an NFS hiccup)
EPOCHS = 10  # the default limit: this many times the slowest wait between two of the trial's results
STARTUP_S = 6 * 3600.0  # the default limit while no trial of the sweep has reported: nothing to scale it by yet
WARN_AT = 0.5  # the one warning comes at this fraction of the limit
_LOOK_EVERY_S = 1.0  # Tune calls on_step_begin ~10 times a second
_AWAY_S = 5.0  # a longer gap between two looks: the driver itself did not run (Ctrl-Z, a call that blocked its loop)

log = logging.getLogger("srrl")


def stall_watch(sweep: SweepConfig) -> "StallWatch":
    """The watch of a sweep's trials: ``stall_timeout`` (None: the default limit, 0: off). A multi-worker trial is
    warned about only: killed, its Train run's placement group would stay held (docs/architecture.md)."""
    logger = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _QuietStallKill) for f in logger.filters):
        logger.addFilter(_QuietStallKill())
    return StallWatch(sweep.stall_timeout, stop=sweep.workers_per_trial == 1)


class _QuietStallKill(logging.Filter):
    """Drops Tune's traceback of a worker this watch killed (``Trial task failed for trial train_srrl_<id>``): the
    watch says it in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Trial task failed for trial ")
                    and any(message.endswith(tid) for tid in faults.stalled_ids()))


class StallWatch(Callback):
    """Tune callback (driver): warns once about a RUNNING trial that has sent no result for ``WARN_AT`` of its
    limit, then (``stop``) kills its actor, so Tune handles it as a dead worker; the kill's ``StallError`` line
    goes to the trial's error file and, through ``faults.note_stall``, to its MLflow run (``stalled``).

    The limit: ``timeout`` seconds, or by default ``max(FLOOR_S, EPOCHS x`` the slowest wait between two of its
    results, its start included``)``, the sweep's slowest before its own first result, ``STARTUP_S`` before any.
    Place it after the MLflow callback: it writes the stall line only once that one has read the mark.
    """

    def __init__(self, timeout: Optional[float] = None, stop: bool = True) -> None:
        self.timeout = timeout
        self.stop = stop
        self._since: Dict[str, float] = {}  # trial id -> time.monotonic() of its last result, or of its (re)start
        self._slowest: Dict[str, float] = {}  # trial id -> its slowest wait for a result, in seconds
        self._epoch: Dict[str, Any] = {}  # trial id -> the epoch of its last result
        self._warned: Dict[str, float] = {}  # trial id -> the wait it was warned about, this stint
        self._looked = 0.0

    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()  # Tune pickles its callbacks; a monotonic time means nothing in another process
        state.update(_since={}, _warned={}, _looked=0.0)
        return state

    # -- Tune hooks --------------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        self._since[trial.trial_id] = time.monotonic()
        self._warned.pop(trial.trial_id, None)

    def on_trial_result(self, iteration: int, trials: List[Any], trial: Any, result: Dict, **info: Any) -> None:
        tid, now = trial.trial_id, time.monotonic()
        waited = now - self._since.get(tid, now)
        self._slowest[tid] = max(self._slowest.get(tid, 0.0), waited, _float(result.get("time_this_iter_s")))
        self._since[tid] = now
        self._epoch[tid] = result.get(M.EPOCH, result.get("training_iteration"))
        if self._warned.pop(tid, None) is not None:
            log.warning("stall: trial %s reported again (epoch %s) after %s", trial, self._epoch[tid], _dur(waited))

    def on_trial_complete(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        self._ended(trial)
        faults.forget_stall(trial.trial_id)  # it finished as it was killed: nothing stalled

    def on_trial_recover(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        if self._record(trial):
            log.warning("stall: trial %s is retried from its last checkpoint (failure %s of --max-failures %s)",
                        trial, getattr(trial, "num_failures", "?"), getattr(trial, "max_failures", "?"))
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        if self._record(trial):
            log.warning("stall: trial %s is recorded %s (failure %s; --max-failures %s)", trial, M.STALLED,
                        getattr(trial, "num_failures", "?"), getattr(trial, "max_failures", "?"))
        self._ended(trial)

    def on_step_begin(self, iteration: int, trials: List[Any], **info: Any) -> None:
        now = time.monotonic()
        if now - self._looked < _LOOK_EVERY_S:
            return
        if self._looked and now - self._looked > _AWAY_S:  # trials wait on the driver too: not their silence
            self._since = {tid: min(now, t + now - self._looked) for tid, t in self._since.items()}
        self._looked = now
        for trial in trials:
            if trial.status == "RUNNING" and faults.stall_of(trial.trial_id) is None:
                self._look(trial, now)

    # -- internals ---------------------------------------------------------------------------------
    def limit(self, trial: Any) -> Optional[float]:
        """Seconds ``trial`` may go without a result; None: no limit (``timeout`` 0)."""
        if self.timeout is not None:
            return float(self.timeout) or None
        own = self._slowest.get(trial.trial_id) or _float((getattr(trial, "last_result", None) or {}).get("time_this_iter_s"))
        basis = own or max(self._slowest.values(), default=0.0)  # a restored trial: its last epoch's time
        return max(FLOOR_S, EPOCHS * basis) if basis else STARTUP_S

    def _why(self) -> str:
        if self.timeout is not None:
            return "--stall-timeout"
        return f"{EPOCHS} x its slowest epoch, at least {_dur(FLOOR_S)}, --stall-timeout to set it"

    def _look(self, trial: Any, now: float) -> None:
        tid = trial.trial_id
        limit = self.limit(trial)
        waited = now - self._since.setdefault(tid, now)
        if limit is None or waited < WARN_AT * limit:
            return
        epoch = self._epoch.get(tid) or (getattr(trial, "last_result", None) or {}).get(M.EPOCH)
        where = f"epoch {epoch}" if epoch else "it started"
        if waited >= limit and self.stop:
            actor = RI.trial_actor(trial)
            if actor is None:  # Tune is between two actors of this trial: look again next second
                return
            import ray

            faults.note_stall(tid, f"{M.STALL_ERROR}: no result for {_dur(waited)} since {where} (stall limit "
                                   f"{_dur(limit)}); the driver killed the trial's worker")
            log.warning("stall: stopping trial %s: no result for %s since %s (limit %s: %s)", trial, _dur(waited),
                        where, _dur(limit), self._why())
            ray.kill(actor, no_restart=True)  # Tune sees its worker die: a retry, or the trial's error
        elif tid not in self._warned:
            self._warned[tid] = waited
            then = f"it is stopped at {_dur(limit)}" if self.stop else "a multi-worker trial is not stopped"
            log.warning("stall: trial %s has sent no result for %s since %s; %s (%s)", trial, _dur(waited), where,
                        then, self._why())

    def _record(self, trial: Any) -> bool:
        """A trial this watch killed failed: append its stall line to its error file (what the leaderboard and
        ``--sync`` read, after the MLflow callback read the mark); True when it was one."""
        line = faults.forget_stall(trial.trial_id)
        if line is None:
            return False
        path = getattr(trial, "error_file", None)  # the driver's copy, uploaded with Tune's next state sync
        if path:
            try:
                with open(path, "a") as f:
                    f.write(line + "\n")
            except OSError as e:
                log.warning("stall: could not record trial %s as %s in %s: %s", trial, M.STALLED, path, e)
        return True

    def _ended(self, trial: Any) -> None:
        self._since.pop(trial.trial_id, None)
        self._warned.pop(trial.trial_id, None)


def _float(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0


def _dur(seconds: float) -> str:
    """``42 s``, ``12 min``, ``6.0 h``: a wait, as a line shows it."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"
