"""Backfill MLflow from Tune's own files: what a sweep logged while its tracking server was down.

``MLflowTracking`` retries and buffers in memory, but a driver that ends while the server is still
down takes its buffer with it. Tune's experiment folder keeps everything: one ``train_srrl_*``
folder per trial with ``result.json`` (one reported result per line) and ``params.json`` (the
sampled config), and ``experiment_state-*.json`` with each trial's final status. ``sync_sweep``
reads them and adds to MLflow only what is missing, so running it twice logs nothing the second time:

- a child run for every trial that has none (tags as ``MLflowTracking`` sets them; params = the base
  config of the folder's ``srrl_sweep.yaml`` overridden by the trial's config, as the driver gives them
  to the callback; missing param keys of existing runs),
- every (metric, epoch) of ``tuner.core.metrics.PER_EPOCH`` and, once per trial at the first result that has
  it, every ``PER_TRIAL`` metric, with a finite value that the run lacks (NaN/inf are not logged;
  ``srrl.nonfinite.<key>`` is tagged instead, as the callback does),
- for a run still RUNNING whose trial has ended: ``srrl.status``, ``srrl.last_epoch`` (and
  ``srrl.stopped_at_epoch`` / ``srrl.diverged_epoch`` / ``srrl.error``), then FINISHED or FAILED.

A trial has ended when Tune's state says TERMINATED or ERROR, its last result says ``done``, or it
reached its planned epochs. This module reads files and decides; ``tuner.tracking.backfill`` does the MLflow
calls of the backfill, and the sweep's end reuses the driver's own functions (below) so both end a sweep alike.

Then, if the Tune experiment is over (every trial in Tune's state TERMINATED or ERROR, and Tune's
search state has no trial left to start), sync does what the driver does at a sweep's end: it removes
child runs of trials Tune does not know (``tracking.remove_orphan_runs``), exports the best ``top_k``
students to their runs with the sweep's own ``log_best_students`` (checkpoints from the Tune folder,
``srrl_sweep.yaml`` for the sweep's settings; a run that has its ``model/student.pt`` is skipped) and
ends a RUNNING parent run as FINISHED. A sweep not over keeps its parent run as it is.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple

from tuner.core import metrics as M
from tuner.core.config import ConfigError, planned_epochs, trial_params
from tuner.core.sweep_config import trial_base
from tuner.driver.results import leaderboard_rows, log_best_students
from tuner.driver.sweep_file import SWEEP_FILE, load_sweep_dir, planned_trials
from tuner.tracking.schema import (
    METRIC_KEYS, MLFLOW_END, TAG_NONFINITE, TAG_STATUS, TAG_VERDICT, end_tags, error_summary, flatten, number, result_metrics,
    result_step,
)
from tuner.driver.storage import SweepFolder
from tuner.driver.confirm import CONFIRM_DIR
from tuner.driver.prepare import check_space
from tuner.driver.record import folder_verdict, rebuild_parent, recorded
from tuner.tracking import check_tracking_uri, default_tracking_uri, log_verdict, remove_orphan_runs
from tuner.driver.trial_logs import read_result_lines
from tuner.core.uri import is_uri

if TYPE_CHECKING:
    from tuner.tracking.backfill import SweepRuns
    from tuner.core.config import TrialConfig
    from tuner.core.sweep_config import SweepConfig

__all__ = ["TuneTrial", "SyncSummary", "trial_metrics", "trial_end", "sweep_not_over",
           "sync_sweep"]

_TUNE_ENDED = ("TERMINATED", "ERROR")
_PER_TRIAL = frozenset(M.PER_TRIAL)


@dataclass
class TuneTrial:
    """One trial as Tune's files record it."""

    trial_id: str
    folder: Path
    config: Dict[str, Any]  # params.json (the sampled config)
    results: List[Dict[str, Any]]  # result.json, in order
    tune_status: Optional[str] = None  # TERMINATED, ERROR, RUNNING ... (None: no experiment state)
    error: Optional[str] = None  # the telling line of error.txt, if any


@dataclass
class SyncSummary:
    sweep: str
    experiment: str
    trials: int = 0
    runs_created: int = 0
    metrics_backfilled: int = 0
    runs_ended: int = 0
    params_logged: int = 0
    students_exported: int = 0
    orphans_removed: int = 0
    parent: str = ""  # what became of the parent run, e.g. "ended FINISHED" or "left RUNNING: ..."
    rebuilt: str = ""  # why the parent run was created anew (the store had no record of the sweep), or ""
    verdict: str = ""  # the verdict's sentence, where sync logged it

    def line(self) -> str:
        orphans = f", {self.orphans_removed} orphan runs removed" if self.orphans_removed else ""
        rebuilt = f"record rebuilt from the sweep folder ({self.rebuilt}): " if self.rebuilt else ""
        verdict = f"; verdict logged: {self.verdict}" if self.verdict else ""
        return (f"sync {self.sweep!r} (experiment {self.experiment!r}): {rebuilt}{self.trials} trials, "
                f"{self.runs_created} runs created, {self.metrics_backfilled} metrics backfilled, "
                f"{self.runs_ended} runs ended, {self.students_exported} students exported{orphans}; "
                f"parent run {self.parent}{verdict}")


# ---- Tune's files ----------------------------------------------------------------------------------
def _tune_statuses(folder: Path) -> Dict[str, str]:
    """``{trial_id: status}`` from the experiment state Tune would restore; {} if absent or unreadable."""
    from tuner.driver.generator import restored_trials  # Ray's search package

    try:
        return {t.trial_id: t.status for t in restored_trials(str(folder)) or []}
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return {}


def _search_left(folder: Path, started: int) -> Optional[str]:
    """Why the search would still start trials, or None: the sweep file's planned count (``trials``) is
    more than the ``started`` ones. None too for a sweep file written before that count was recorded:
    then Tune's trial statuses alone decide."""
    if not (folder / SWEEP_FILE).is_file():
        return None
    planned = planned_trials(str(folder), field="sync")
    if planned is None or started >= planned:
        return None
    return f"{started} of its {planned} trials started"


def sweep_not_over(folder: Path, statuses: Mapping[str, str]) -> Optional[str]:
    """Why the Tune experiment in ``folder`` is not over (still running, or interrupted with trials
    pending or not yet started), or None when it is: every trial of Tune's ``statuses`` TERMINATED or
    ERROR and its search algorithm has nothing left to start."""
    if not statuses:
        return "no Tune experiment state"
    still = sum(status not in _TUNE_ENDED for status in statuses.values())
    if still:
        return f"{still} of {len(statuses)} trials not ended"
    return _search_left(folder, len(statuses))


def _read_sweep_dir(folder: Path) -> Tuple[List[TuneTrial], Dict[str, str]]:
    """Every trial folder (one with a ``result.json``) of a Tune experiment folder, oldest first, and Tune's
    ``{trial_id: status}`` of every trial it knows (see ``_tune_statuses``).

    Trials without any result are left out (nothing to backfill, and no trial id to name them by), and
    so are trials that Tune's experiment state, when there is one, does not list: those of a driver
    killed before its next state snapshot, whose runs the resumed sweep deleted as orphans.

    Raises:
        ValueError: ``path`` is not a folder, or holds no trial folders.
    """
    if not folder.is_dir():
        raise ValueError(f"sync: no folder {str(folder)!r}")
    files = sorted(folder.glob("*/result.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ValueError(f"sync: {str(folder)!r} holds no Tune trial folders (*/result.json); "
                         "give the sweep's own folder, <storage_path>/<sweep name>")
    statuses = _tune_statuses(folder)
    trials = []
    for file in files:
        results = read_result_lines(file.read_text(errors="replace"))
        if not results or not results[-1].get("trial_id"):
            continue
        tid = str(results[-1]["trial_id"])
        if statuses and tid not in statuses:
            continue
        params = file.parent / "params.json"
        try:
            config = json.loads(params.read_text())
        except (OSError, ValueError):
            config = results[-1].get("config") or {}
        error_file = file.parent / "error.txt"
        error = error_summary(error_file.read_text(errors="replace")) if error_file.is_file() else None
        trials.append(TuneTrial(tid, file.parent, dict(config), results, statuses.get(tid), error))
    return trials, statuses


# ---- what a trial should have in MLflow ------------------------------------------------------------
def trial_metrics(trial: TuneTrial) -> Tuple[Dict[Tuple[str, int], Tuple[float, int]], Dict[str, int]]:
    """``({(key, step): (value, timestamp_ms)}, {key: first non-finite step})`` as ``MLflowTracking``
    logs them: a per-epoch metric at every step (a step reported twice, as after a restart, keeps its
    last value); a per-trial one (``tuner.core.metrics.PER_TRIAL``) once, at the first result it appears in."""
    values: Dict[Tuple[str, int], Tuple[float, int]] = {}
    nonfinite: Dict[str, int] = {}
    once: set = set()  # per-trial keys already taken
    for result in trial.results:
        step, ms, finite, bad = result_metrics(result, METRIC_KEYS)
        for key, value in finite.items():
            if key not in once:
                values[(key, step)] = (value, ms)
                once.update({key} & _PER_TRIAL)
        for key in bad:
            nonfinite.setdefault(key, step)
    return values, nonfinite


def trial_end(trial: TuneTrial, planned: Optional[int]) -> Optional[Tuple[str, Dict[str, str]]]:
    """``(srrl.status, tags)`` if the trial has ended (the callback's rules), else None."""
    last = trial.results[-1]
    epoch = result_step(last)
    status = M.trial_status(trial.tune_status == "ERROR", bool(last.get(M.DIVERGED_KEY)), epoch, planned,
                            ended=trial.tune_status == "TERMINATED" or last.get("done") is True,
                            stalled=M.is_stall(trial.error))
    return (status, end_tags(status, epoch, trial.error)) if status in M.ENDED_STATUSES else None


def _ms(result: Mapping[str, Any], minus_iter: bool = False) -> Optional[int]:
    stamp = number(result.get("timestamp"))
    if stamp is None:
        return None
    if minus_iter:
        stamp -= number(result.get("time_this_iter_s")) or 0.0
    return int(stamp * 1000)


# ---- the sweep's end ------------------------------------------------------------------------------
def _export_students(folder: Path, runs: SweepRuns, sweep: SweepConfig, base: TrialConfig, splits: Any) -> int:
    """The sweep's own best-``top_k`` export (``tuner.driver.results.log_best_students``) from the Tune folder's
    results and checkpoints, into the store being synced; returns how many students were logged now. ``splits``:
    the sweep's data (the export carries the data set's normalisation)."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    grid = ResultGrid(ExperimentAnalysis(str(folder)))
    try:
        return log_best_students(grid, leaderboard_rows(grid, base), dataclasses.replace(sweep, tracking_uri=runs.uri),
                                 splits, runs.parent_id)
    except FileNotFoundError as e:  # a checkpoint the Tune state names is gone (folder copied without them)
        raise ValueError(f"sync: cannot export the best students: {e}") from None


def _end_sweep(folder: Path, loaded: Optional[Tuple[Any, Any]], space: Any, runs: SweepRuns, trials: List[TuneTrial],
               statuses: Mapping[str, str], summary: SyncSummary, shown: str) -> None:
    """What the driver does when a sweep ends, if the Tune experiment is over; the parent as it is if not."""
    from tuner.core.trainer import load_splits
    from tuner.tracking import backfill as R

    status = runs.parent.info.status
    why = sweep_not_over(folder, statuses)
    if why is not None:
        summary.parent = (f"left {status}: the sweep is not over ({why}); sync again once it is "
                          f"(a sweep whose driver died: `python run_search.py --resume {shown}`)")
        return
    if loaded is None:
        summary.parent = f"left {status}: no {SWEEP_FILE} in {shown!r} says which students to export"
        return
    sweep, base = loaded
    splits = functools.lru_cache(maxsize=1)(lambda: load_splits(base))  # the data, as the sweep loaded it: once
    summary.orphans_removed = remove_orphan_runs(runs.uri, runs.parent_id, statuses)
    if sweep.top_k > 0:
        summary.students_exported = _export_students(folder, runs, sweep, base, splits())
    if TAG_VERDICT not in runs.parent.data.tags and (found := folder_verdict(folder, sweep, base, space, splits)) is not None:
        verdict, top = found  # the verdict the driver would have logged at the end (a lost store, a server down)
        log_verdict(runs.uri, runs.parent_id, verdict, top)
        summary.verdict = verdict.sentence
    if status != "RUNNING":
        summary.parent = f"already {status}"
        return
    # ended when its last trial reported (not now), as FINISHED as the driver's finish_sweep ends it
    ends = [ms for ms in (_ms(t.results[-1]) for t in trials) if ms is not None]
    end = max(ends + [runs.parent.info.start_time or 0]) if ends else None
    R.backfill_run(runs.uri, runs.parent_id, end=("FINISHED", end))
    summary.parent = "ended FINISHED"


# ---- the command -----------------------------------------------------------------------------------
def sync_sweep(experiment: Optional[str], sweep_dir: str, tracking_uri: Optional[str] = None) -> SyncSummary:
    """Backfill the MLflow records of the sweep in ``sweep_dir`` (its name is the folder's name), both stages,
    and, if its Tune experiment is over, end it as its driver would (best students exported, the verdict,
    parent ended). ``experiment`` and ``tracking_uri`` default to the sweep file's. A store with no record
    of the sweep (a lost ``mlflow.db``) gets a parent run rebuilt from the folder first (``tuner.driver.record``).

    Returns counts of what was added and what became of the parent run; a second call adds nothing.

    Raises:
        ValueError: no such folder or no trials in it, unknown experiment, no parent run of that sweep,
            a checkpoint of a student to export is missing.
        ConnectionError: the tracking server does not answer.
    """
    if is_uri(sweep_dir):  # s3://, gs://, ...: a local copy of what sync reads, then the same sync
        remote = SweepFolder.of(sweep_dir, field="sync")
        with tempfile.TemporaryDirectory(prefix="srrl-sync-") as tmp:
            local = Path(tmp) / PurePosixPath(remote.path).name  # the folder's name is the sweep's
            remote.download(_needed(remote.files()), local)
            return _sync_local(experiment, local, tracking_uri, shown=remote.shown)
    return _sync_local(experiment, Path(sweep_dir).expanduser().resolve(), tracking_uri)


def _needed(files: List[str]) -> List[str]:
    """What sync reads of a sweep folder: all but the trials' older checkpoints (only the last is exported)."""
    def checkpoint(name: str) -> Optional[Tuple[str, str]]:  # (trial folder, checkpoint folder), or None
        parts = name.split("/")
        return (parts[0], parts[1]) if len(parts) > 2 and parts[1].startswith("checkpoint_") else None

    last: Dict[str, str] = {}
    for name in files:
        if (c := checkpoint(name)) is not None:
            last[c[0]] = max(last.get(c[0], ""), c[1])  # checkpoint_000029 > checkpoint_000028
    return [n for n in files if (c := checkpoint(n)) is None or last[c[0]] == c[1]]


def _read_sweep_file(folder: Path) -> Optional[Tuple[Any, Any]]:
    """``(SweepConfig, base TrialConfig)`` of the sweep's ``srrl_sweep.yaml``, or None (a sweep recorded before
    the file: find_sweep_runs then reads the parent's base.* params, and no student is exported)."""
    return load_sweep_dir(str(folder), field="sync") if (folder / SWEEP_FILE).is_file() else None


def _sync_local(experiment: Optional[str], folder: Path, tracking_uri: Optional[str],
                shown: Optional[str] = None) -> SyncSummary:
    from tuner.tracking import backfill as R

    trials, statuses = _read_sweep_dir(folder)
    name = folder.name
    loaded = _read_sweep_file(folder)
    experiment = experiment or (loaded[0].experiment if loaded else None)
    tracking_uri = tracking_uri or (loaded[0].tracking_uri if loaded else None)
    if not experiment:
        raise ConfigError(f"experiment: {shown or folder} has no {SWEEP_FILE} naming it; pass --experiment")
    uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(uri)  # a server that does not answer fails in seconds
    missing = recorded(uri, experiment, name)
    # everything a record is made of is in the folder: rebuilt where the store has none of this sweep (a lost
    # mlflow.db, a fresh server); not for another experiment, nor a folder renamed from its sweep (a typo, a copy)
    own = loaded is not None and loaded[0].experiment == experiment and loaded[0].name == name
    space = check_space(*loaded) if loaded else None  # the sweep's space, built once for all that follows
    if missing and own:
        rebuild_parent(folder, *loaded, space, tracking_uri=uri, experiment=experiment)
    # the base the driver gave the tracking callback: the sweep file's, with the per-trial resources
    sweep = R.find_sweep_runs(experiment, name, uri, base=trial_base(*loaded).to_dict() if loaded else None)
    have = R.logged_steps(sweep, METRIC_KEYS)
    summary = SyncSummary(name, experiment, trials=len(trials), rebuilt=(missing or "") if own else "")
    stages = [("search", trials)]
    if (folder / CONFIRM_DIR).is_dir() and any((folder / CONFIRM_DIR).glob("*/result.json")):
        confirm_trials, confirm_statuses = _read_sweep_dir(folder / CONFIRM_DIR)
        stages.append(("confirm", confirm_trials))
        statuses = {**statuses, **confirm_statuses}  # both stages' runs are the sweep's, none an orphan
        summary.trials += len(confirm_trials)
    names = list(space.declaration or {}) if space else None  # what names a run, as the driver's callback names it
    for stage, trial in ((stage, t) for stage, ts in stages for t in ts):
        found = sweep.trials.get(trial.trial_id)
        if found is None:
            run_id = R.create_trial_run(sweep, trial.trial_id, start_time=_ms(trial.results[0], minus_iter=True),
                                        config=trial.config, stage=stage, name_keys=names)
            summary.runs_created += 1
            run_params, run_tags, status = {}, {}, "RUNNING"
        else:
            run_id, run_params, run_tags, status = found.run_id, found.params, found.tags, found.status
        wanted = flatten(trial_params(sweep.base, trial.config))
        params = {k: v for k, v in wanted.items() if k not in run_params}
        values, nonfinite = trial_metrics(trial)
        # what the run lacks: a per-epoch metric's step, a per-trial metric at all
        metrics = [(key, value, ms, step) for (key, step), (value, ms) in sorted(values.items())
                   if not have.get((run_id, key)) or (key not in _PER_TRIAL and step not in have[(run_id, key)])]
        tags = {TAG_NONFINITE + k: str(s) for k, s in nonfinite.items() if TAG_NONFINITE + k not in run_tags}
        end = None
        ended = trial_end(trial, planned_epochs(trial.config, sweep.base.get("epochs"))) if status == "RUNNING" else None
        if ended is not None:
            srrl_status, end_tags = ended
            tags.update(end_tags)
            tags[TAG_STATUS] = srrl_status
            end = (MLFLOW_END[srrl_status], _ms(trial.results[-1]))
        if params or metrics or tags or end:
            R.backfill_run(sweep.uri, run_id, params=params, metrics=metrics, tags=tags, end=end)
        summary.params_logged += len(params)
        summary.metrics_backfilled += len(metrics)
        summary.runs_ended += end is not None
    _end_sweep(folder, loaded, space, sweep, [t for _, ts in stages for t in ts], statuses, summary, shown or str(folder))
    return summary
