"""What a sweep's Tune results say: the ranked leaderboard rows, and the best students exported to MLflow."""
from __future__ import annotations

import posixpath
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from tuner.core import faults
from tuner.core import metrics as M
from tuner import tracking
from tuner.core.config import LABEL_KEYS, SEARCHED_PARAMS, TrialConfig, planned_epochs, trial_params
from tuner.core.ranking import row_rank
from tuner.core.sweep_config import SweepConfig
from tuner.driver.storage import trial_id_of

__all__ = ["leaderboard_rows", "log_best_students", "prune_checkpoints", "RESUMABLE", "saved_results",
           "all_errored"]

#: statuses of trials a --resume continues
RESUMABLE = (M.INTERRUPTED, M.PENDING)


def leaderboard_rows(grid: Any, base: TrialConfig, statuses: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
    """One dict per trial: searched params, origin, status, epochs run, best and final metrics.

    ``statuses``: Tune's saved ``{trial_id: status}`` (TERMINATED, RUNNING, PENDING ...), which tells a trial the
    scheduler stopped from one an interrupted driver left half-done; a trial it lacks (its driver could not
    save it: a full disk) is not done. Without ``statuses`` every trial that ended is taken as ended by Tune.
    A trial that errored on a full disk is not ``errored``: ``--resume`` re-runs it once there is space.

    Ranked by the one ranking rule (``metrics.RANK_VAL_ACC``), trials at equal fidelity together:
    those that ran every epoch first, then the others by the epochs they ran.
    """
    rows = []
    for result in grid:
        cfg = dict(result.config or {})
        last = result.metrics or {}
        best = last.get(M.RANK_VAL_ACC, float("nan"))  # as the trial reported it: what ASHA and Optuna ranked
        epochs_run = int(last.get(M.EPOCH, 0))
        planned = planned_epochs(cfg, base.epochs)
        trial_id = last.get("trial_id") or trial_id_of(Path(str(getattr(result, "path", "") or "")).name)
        ended = statuses is None or statuses.get(trial_id) == "TERMINATED"
        errored = bool(result.error) and not faults.is_no_space(result.error)
        status = M.trial_status(errored, bool(last.get(M.DIVERGED_KEY)), epochs_run, planned, ended,
                                stalled=errored and M.is_stall(_error_text(result)))
        effective = trial_params(base, cfg)
        row = {"trial_id": trial_id, **{k: effective[k] for k in SEARCHED_PARAMS if k in effective},
               "origin": cfg.get("origin"), "config_id": cfg.get("config_id"), "seeds": 1,
               "params": {k: v for k, v in cfg.items() if k not in LABEL_KEYS},
               "optuna_trial": cfg.get("optuna_trial"), "status": status, "epochs": epochs_run, M.BEST_VAL_ACC: best, M.VAL_ACC: last.get(M.VAL_ACC),
               M.TEST_ACC: last.get(M.TEST_ACC), M.STUDENT_MACS: last.get(M.STUDENT_MACS), M.STUDENT_PARAMS: last.get(M.STUDENT_PARAMS),
               "node_id": last.get("node_id")}
        rows.append(row)

    rows.sort(key=row_rank)
    return rows


def _error_text(result: Any) -> str:
    """An errored trial's error file as the sweep folder holds it: ``result.error`` is only the last exception, and
    a stall's is the killed worker's (the driver adds the ``StallError`` line to the file: tuner/driver/stalls.py)."""
    if not getattr(result, "path", None):
        return ""
    try:
        with result.filesystem.open_input_stream(posixpath.join(result.path, "error.txt")) as f:
            return f.read().decode(errors="replace")
    except (OSError, ValueError):  # no such file (pyarrow: FileNotFoundError, an OSError)
        return ""


def log_best_students(grid: Any, rows: List[Dict[str, Any]], sweep: SweepConfig, splits: Any, parent_run: str) -> int:
    """Export the final student + connector of the ``top_k`` best finished trials to their runs.

    Only trials that ran every epoch count: an early-stopped trial has no final student to export.

    The driver reads each trial's last checkpoint from ``storage_path`` (shared storage on a
    cluster), so trials that ran on other nodes reach the store too; each checkpoint carries the trial's
    TrialConfig, so nothing is rebuilt from Tune's params and the sweep's base. Returns how many students were
    logged now (a run that already has its student is skipped, so a second call logs none).
    """
    from tuner.core.export import STUDENT_FILE, checkpoint_config, export_student
    from tuner.core.catalog import feature_channels
    from tuner.core.trainer import STATE_FILE

    finished = [r for r in rows if r["status"] == M.FINISHED]  # rows are ranked by the ranking rule
    wanted = {r["trial_id"] for r in finished[: sweep.top_k]}
    runs = tracking.child_run_ids(sweep.tracking_uri, parent_run)
    logged = 0
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id not in wanted or result.checkpoint is None or trial_id not in runs:
            continue
        with result.checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as out:
            cfg = checkpoint_config(Path(folder) / STATE_FILE)  # the trial's own TrialConfig, as it trained
            path = export_student(Path(folder) / STATE_FILE, splits,
                                  feature_channels(cfg.teacher) if cfg.needs_teacher else None,
                                  {k: result.metrics[k] for k in (M.VAL_ACC, M.BEST_VAL_ACC, M.TEST_ACC) if k in result.metrics},
                                  Path(out) / STUDENT_FILE)
            logged += bool(tracking.log_artifacts_once(sweep.tracking_uri, runs[trial_id], {"model": path}))
    return logged


def prune_checkpoints(stage: Any, grid: Any) -> int:
    """Delete every checkpoint but the last of each trial of a stage that ended (``stage``: its
    ``tuner.driver.storage.SweepFolder``, ``grid``: its ResultGrid); returns how many went.

    Call it only once Tune's saved state says every trial of the stage ended: an ended trial's last checkpoint is
    the only one read again (the exported student, ``--sync``, a resumed log's completion), while a trial Tune
    may still restore needs the older ones its lagging saved state can name (docs/architecture.md, "Faults").
    An errored trial keeps them all: ``--resume`` retries it from its checkpoint.
    """
    removed = 0
    for result in grid:
        if result.error is not None or result.checkpoint is None or not result.path:
            continue
        trial = stage.child(Path(result.path).name)
        last = posixpath.basename(result.checkpoint.path.rstrip("/"))
        for name in trial.subfolders("checkpoint_"):
            if name != last:
                trial.remove(name)
                removed += 1
    return removed


def saved_results(folder: Any) -> Optional[Tuple[Any, Dict[str, str]]]:
    """A Tune experiment's results as its files hold them, read without starting Ray: ``(ResultGrid,
    {trial_id: status})``, or None where ``folder`` (a ``tuner.driver.storage.SweepFolder``) holds no experiment."""
    if not folder.has_file("tuner.pkl"):
        return None
    from ray.tune import ExperimentAnalysis, ResultGrid

    path, fs = folder.for_tune()
    analysis = ExperimentAnalysis(path, storage_filesystem=fs)
    return ResultGrid(analysis), {t.trial_id: t.status for t in analysis.trials}


def all_errored(grid: Any, rows: List[Dict[str, Any]]) -> Optional[str]:
    """Why a search ended with every trial errored (or stalled), in one line naming the first trial's error and
    its error file; None when any trial did not. The driver then exits non-zero (README, "When things go wrong")."""
    failed = (M.ERRORED, M.STALLED)
    if not rows or any(r["status"] not in failed for r in rows):
        return None
    first = next((r for r in grid if r.error is not None and getattr(r, "path", None)), None)
    if first is None:
        return f"every one of the {len(rows)} trials of the search errored"
    text = _error_text(first) or str(first.error)
    last = [line.strip() for line in text.strip().splitlines() if line.strip()] or [type(first.error).__name__]
    return (f"every one of the {len(rows)} trials of the search errored; the first: {last[-1][:300]} "
            f"(its error file: {posixpath.join(first.path, 'error.txt')})")
