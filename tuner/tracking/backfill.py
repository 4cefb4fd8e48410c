"""Writing to a sweep's MLflow records, for ``tuner.driver.sync`` only: what a sweep already has, and the runs,
params, metrics and tags that Tune's own files show are missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from tuner.tracking.read import HISTORY_THREADS, mlflow_client, find_experiments, history_from_client, history_from_sql, is_sql
from tuner.core.uri import redact
from tuner.tracking import TAG_TRIAL_ID, check_tracking_uri, child_runs, find_parent, trial_tags
from tuner.tracking.runs import check_name, log_params
from tuner.tracking.schema import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH

__all__ = ["SweepRuns", "TrialRun", "find_sweep_runs", "logged_steps", "create_trial_run", "backfill_run"]

_BASE = "base."  # parent param prefix of the base TrialConfig, in sweeps recorded before it moved to the artifact


@dataclass
class TrialRun:
    """A trial's child run as found in MLflow."""

    run_id: str
    status: str  # MLflow's: RUNNING, FINISHED, FAILED, KILLED
    tags: Dict[str, str]
    params: Dict[str, str]
    run: Any = field(default=None, repr=False)  # the mlflow Run (for the server-side history loader)


@dataclass
class SweepRuns:
    """A sweep's parent run (found by tag ``srrl.sweep``) and its child runs (by ``srrl.trial_id``)."""

    uri: str
    experiment_id: str
    parent_id: str
    base: Dict[str, Any]  # the sweep's base TrialConfig fields (from srrl_sweep.yaml; see find_sweep_runs)
    trials: Dict[str, TrialRun]
    parent: Any = field(default=None, repr=False)


def find_sweep_runs(experiment: str, sweep: str, tracking_uri: Optional[str] = None,
                    base: Optional[Mapping[str, Any]] = None) -> SweepRuns:
    """The parent run of ``sweep`` in ``experiment`` and its active child runs (the oldest per trial id,
    as ``MLflowTracking`` picks). A server URI is probed first, so a dead server fails in seconds.

    ``base`` is the sweep's base trial config as a dict (``tuner.driver.sync`` reads it from the sweep
    folder's ``srrl_sweep.yaml``); without it, the parent's ``base.*`` params of a sweep recorded
    before they moved to that file (``{}`` for newer sweeps, whose parent has only ``sweep.*`` params).

    Raises:
        UnknownExperimentError: no such experiment.
        ValueError: no sweep of that name in it, or a bad tracking URI / sweep name.
        ConnectionError: the tracking server does not answer.
    """
    check_name("sweep", sweep)
    client, uri = mlflow_client(tracking_uri)
    if uri.startswith(("http://", "https://")):
        check_tracking_uri(uri, probe=True)
    exp_id = next(iter(find_experiments(client, uri, experiment)))
    parents = find_parent(client, exp_id, sweep)
    if not parents:
        raise ValueError(f"sweep: no sweep run named {sweep!r} in experiment {experiment!r} of {redact(uri)} "
                         f"(its parent run is created when the sweep starts)")
    parent = parents[0]
    trials: Dict[str, TrialRun] = {}
    for run in child_runs(client, exp_id, parent.info.run_id):
        tid = run.data.tags.get(TAG_TRIAL_ID)
        if tid and tid not in trials:  # oldest first: a trial's first run, as the callback picks
            trials[tid] = TrialRun(run.info.run_id, run.info.status, dict(run.data.tags), dict(run.data.params), run)
    if base is None:
        base = {k[len(_BASE):]: v for k, v in parent.data.params.items() if k.startswith(_BASE)}
    return SweepRuns(uri, exp_id, parent.info.run_id, dict(base), trials, parent)


def logged_steps(sweep: SweepRuns, metrics: Sequence[str]) -> Dict[Tuple[str, str], set]:
    """``{(run_id, metric): {steps}}`` already logged to the sweep's child runs, fetched in bulk like
    ``load_history`` (one SQL query on a database store, a thread pool of history calls on a server)."""
    ids = {t.run_id for t in sweep.trials.values()}
    if not ids:
        return {}
    if is_sql(sweep.uri):
        raw = history_from_sql(sweep.uri, [sweep.experiment_id], metrics)
        raw = raw[raw["run_id"].isin(ids)]
    else:
        client, _ = mlflow_client(sweep.uri)
        runs = [t.run for t in sweep.trials.values()]
        raw = history_from_client(client, {sweep.parent_id: sweep.parent}, runs, metrics, threads=HISTORY_THREADS)
    out: Dict[Tuple[str, str], set] = {}
    for run_id, key, step in zip(raw["run_id"], raw["metric"], raw["epoch"]):
        out.setdefault((run_id, key), set()).add(int(step))
    return out


def create_trial_run(sweep: SweepRuns, trial_id: str, start_time: Optional[int] = None,
                     config: Optional[Mapping[str, Any]] = None, stage: str = "search",
                     name_keys: Optional[Sequence[str]] = None) -> str:
    """A child run for ``trial_id`` of ``stage`` under the sweep's parent, tagged and named as ``MLflowTracking``
    does from the trial's Tune ``config`` (named by ``name_keys``, the searched params; None: every key);
    returns its id."""
    client, _ = mlflow_client(sweep.uri)
    keys = list(config or ()) if name_keys is None else list(name_keys)
    tags = trial_tags(sweep.parent_id, trial_id, config, name_keys=keys, stage=stage)
    run = client.create_run(sweep.experiment_id, start_time=start_time, tags=tags, run_name=tags["mlflow.runName"])
    sweep.trials[trial_id] = TrialRun(run.info.run_id, run.info.status, tags, {}, run)
    return run.info.run_id


def backfill_run(tracking_uri: str, run_id: str, params: Optional[Mapping[str, str]] = None,
                 metrics: Sequence[Tuple[str, float, int, int]] = (), tags: Optional[Mapping[str, str]] = None,
                 end: Optional[Tuple[str, Optional[int]]] = None) -> None:
    """Add to a run: ``params`` (new keys only: MLflow params never change), ``metrics`` as
    ``(key, value, timestamp_ms, step)`` in ``log_batch`` calls of at most 1000, then ``tags``, then
    ``end = (status, end_time_ms)`` terminates it (status FINISHED, FAILED or KILLED)."""
    from mlflow.entities import Metric, RunTag

    client, _ = mlflow_client(tracking_uri)
    log_params(client, run_id, params or {})
    rows = [Metric(*m) for m in metrics]
    for i in range(0, len(rows), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=rows[i:i + MAX_METRICS_PER_BATCH], synchronous=True)
    items = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, tags=items[i:i + MAX_PARAMS_PER_BATCH], synchronous=True)
    if end is not None:
        client.set_terminated(run_id, status=end[0], end_time=end[1])
