"""Backfill MLflow from Tune's own files: what a sweep logged while its tracking server was down.

``MLflowTracking`` retries and buffers in memory, but a driver that ends while the server is still
down takes its buffer with it. Tune's experiment folder keeps everything: one ``train_srrl_*``
folder per trial with ``result.json`` (one reported result per line) and ``params.json`` (the
sampled config), and ``experiment_state-*.json`` with each trial's final status. ``sync_sweep``
reads them and adds to MLflow only what is missing, so running it twice logs nothing the second time:

- a child run for every trial that has none (tags as ``MLflowTracking`` sets them; params = the
  parent's ``base.*`` params overridden by the trial's config; missing param keys of existing runs),
- every (metric, epoch) of ``tuner.metrics.PER_EPOCH + PER_TRIAL`` with a finite value that the run
  lacks (NaN/inf are not logged; ``srrl.nonfinite.<key>`` is tagged instead, as the callback does),
- for a run still RUNNING whose trial has ended: ``srrl.status``, ``srrl.last_epoch`` (and
  ``srrl.stopped_at_epoch`` / ``srrl.diverged_epoch`` / ``srrl.error``), then FINISHED or FAILED.

A trial has ended when Tune's state says TERMINATED or ERROR, its last result says ``done``, or it
reached its planned epochs. This module reads files and decides; ``analysis.runs`` does the MLflow calls.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from tuner import metrics as M
from tuner.tracking import (
    DIVERGED_KEY, TAG_DIVERGED_EPOCH, TAG_ERROR, TAG_LAST_EPOCH, TAG_STATUS, TAG_STOPPED_AT,
)
from tuner.tracking import _error_summary, _flatten, _number  # the callback's own rules, shared on purpose

__all__ = ["TuneTrial", "SyncSummary", "METRIC_KEYS", "read_sweep_dir", "trial_metrics", "trial_end", "sync_sweep"]

_NONFINITE = "srrl.nonfinite."
_MLFLOW_END = {"finished": "FINISHED", "stopped_early": "FINISHED", "diverged": "FAILED", "errored": "FAILED"}
METRIC_KEYS = tuple(M.PER_EPOCH + M.PER_TRIAL)


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

    def line(self) -> str:
        return (f"sync {self.sweep!r} (experiment {self.experiment!r}): {self.trials} trials, "
                f"{self.runs_created} runs created, {self.metrics_backfilled} metrics backfilled, "
                f"{self.runs_ended} runs ended")


# ---- Tune's files ----------------------------------------------------------------------------------
def _read_json_lines(path: Path) -> List[Dict[str, Any]]:
    """Tune's result.json; a torn last line (the driver died mid-write) is skipped."""
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _tune_statuses(folder: Path) -> Dict[str, str]:
    """``{trial_id: status}`` from the newest ``experiment_state-*.json``; {} if absent or unreadable."""
    states = sorted(folder.glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        out = {}
        for entry in data.get("trial_data", []):
            trial = json.loads(entry[0]) if isinstance(entry, (list, tuple)) else entry
            if isinstance(trial, Mapping) and trial.get("trial_id"):
                out[str(trial["trial_id"])] = str(trial.get("status"))
        return out
    except (OSError, ValueError, TypeError, KeyError, IndexError):
        return {}


def read_sweep_dir(path: str) -> List[TuneTrial]:
    """Every trial folder (one with a ``result.json``) of a Tune experiment folder, oldest first.

    Trials without any result are left out (nothing to backfill, and no trial id to name them by), and
    so are trials that Tune's experiment state, when there is one, does not list: those of a driver
    killed before its next state snapshot, whose runs the resumed sweep deleted as orphans.

    Raises:
        ValueError: ``path`` is not a folder, or holds no trial folders.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--sweep-dir: no folder {str(folder)!r}")
    files = sorted(folder.glob("*/result.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ValueError(f"--sweep-dir: {str(folder)!r} holds no Tune trial folders (*/result.json); "
                         "give the sweep's own folder, <storage_path>/<sweep name>")
    statuses = _tune_statuses(folder)
    trials = []
    for file in files:
        results = _read_json_lines(file)
        if not results or not results[-1].get("trial_id"):
            continue
        params = file.parent / "params.json"
        try:
            config = json.loads(params.read_text())
        except (OSError, ValueError):
            config = results[-1].get("config") or {}
        error_file = file.parent / "error.txt"
        error = _error_summary(error_file.read_text(errors="replace")) if error_file.is_file() else None
        tid = str(results[-1]["trial_id"])
        if statuses and tid not in statuses:
            continue
        trials.append(TuneTrial(tid, file.parent, dict(config), results, statuses.get(tid), error))
    return trials


# ---- what a trial should have in MLflow ------------------------------------------------------------
def _step(result: Mapping[str, Any]) -> int:
    step = _number(result.get(M.EPOCH))
    if step is None or not math.isfinite(step):
        step = _number(result.get("training_iteration")) or 0.0
    return int(step)


def trial_metrics(trial: TuneTrial) -> Tuple[Dict[Tuple[str, int], Tuple[float, int]], Dict[str, int]]:
    """``({(key, step): (value, timestamp_ms)}, {key: first non-finite step})`` as ``MLflowTracking``
    logs them (a step reported twice, as after a restart, keeps its last value)."""
    values: Dict[Tuple[str, int], Tuple[float, int]] = {}
    nonfinite: Dict[str, int] = {}
    for result in trial.results:
        step = _step(result)
        stamp = _number(result.get("timestamp"))
        ms = int(stamp * 1000) if stamp is not None else int(time.time() * 1000)
        for key in METRIC_KEYS:
            value = _number(result.get(key))
            if value is None:
                continue
            if math.isfinite(value):
                values[(key, step)] = (value, ms)
            else:
                nonfinite.setdefault(key, step)
    return values, nonfinite


def trial_end(trial: TuneTrial, planned: Optional[int]) -> Optional[Tuple[str, Dict[str, str]]]:
    """``(srrl.status, tags)`` if the trial has ended (the callback's rules), else None."""
    last = trial.results[-1]
    epoch = _step(last)
    tags = {TAG_LAST_EPOCH: str(epoch)}
    if trial.tune_status == "ERROR":
        tags[TAG_ERROR] = (trial.error or "unknown error (no error file)")[:1000]
        return "errored", tags
    if bool(last.get(DIVERGED_KEY)):
        tags[TAG_DIVERGED_EPOCH] = str(epoch)
        return "diverged", tags
    if planned is not None and epoch >= planned:
        return "finished", tags
    if trial.tune_status == "TERMINATED" or last.get("done") is True:
        tags[TAG_STOPPED_AT] = str(epoch)
        return "stopped_early", tags
    return None


def _planned(config: Mapping[str, Any], base: Mapping[str, str]) -> Optional[int]:
    value = config.get("epochs", base.get("epochs"))
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _ms(result: Mapping[str, Any], minus_iter: bool = False) -> Optional[int]:
    stamp = _number(result.get("timestamp"))
    if stamp is None:
        return None
    if minus_iter:
        stamp -= _number(result.get("time_this_iter_s")) or 0.0
    return int(stamp * 1000)


# ---- the command -----------------------------------------------------------------------------------
def sync_sweep(experiment: str, sweep_dir: str, tracking_uri: Optional[str] = None) -> SyncSummary:
    """Backfill the MLflow records of the sweep in ``sweep_dir`` (its name is the folder's name).

    Returns counts of what was added; a second call returns zeros.

    Raises:
        ValueError: no such folder or no trials in it, unknown experiment, no parent run of that sweep.
        ConnectionError: the tracking server does not answer.
    """
    from analysis import runs as R

    trials = read_sweep_dir(sweep_dir)
    name = Path(sweep_dir).expanduser().resolve().name
    sweep = R.find_sweep_runs(experiment, name, tracking_uri)
    have = R.logged_steps(sweep, METRIC_KEYS)
    summary = SyncSummary(name, experiment, trials=len(trials))
    for trial in trials:
        found = sweep.trials.get(trial.trial_id)
        if found is None:
            run_id = R.create_trial_run(sweep, trial.trial_id, start_time=_ms(trial.results[0], minus_iter=True))
            summary.runs_created += 1
            run_params, run_tags, status = {}, {}, "RUNNING"
        else:
            run_id, run_params, run_tags, status = found.run_id, found.params, found.tags, found.status
        wanted = _flatten({**sweep.base, **trial.config})
        params = {k: v for k, v in wanted.items() if k not in run_params}
        values, nonfinite = trial_metrics(trial)
        metrics = [(key, value, ms, step) for (key, step), (value, ms) in sorted(values.items())
                   if step not in have.get((run_id, key), ())]
        tags = {_NONFINITE + k: str(s) for k, s in nonfinite.items() if _NONFINITE + k not in run_tags}
        end = None
        ended = trial_end(trial, _planned(trial.config, sweep.base)) if status == "RUNNING" else None
        if ended is not None:
            srrl_status, end_tags = ended
            tags.update(end_tags)
            tags[TAG_STATUS] = srrl_status
            end = (_MLFLOW_END[srrl_status], _ms(trial.results[-1]))
        if params or metrics or tags or end:
            R.backfill_run(sweep.uri, run_id, params=params, metrics=metrics, tags=tags, end=end)
        summary.params_logged += len(params)
        summary.metrics_backfilled += len(metrics)
        summary.runs_ended += end is not None
    return summary
