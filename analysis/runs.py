"""The one module of ``analysis`` that talks to MLflow: sweeps, trials and histories as DataFrames.

What it reads is what ``tuner.tracking`` writes: a parent run per sweep (tags ``srrl.role=sweep``,
``srrl.sweep=<name>``, params ``sweep.*`` / ``base.*``) and a child run per trial (tags
``mlflow.parentRunId``, ``srrl.role=trial``, ``srrl.trial_id``, ``srrl.status`` ...; params = the
trial's config; one metric per ``tuner.metrics`` name, logged with ``step = epoch``). Deleted runs
are ignored, and so are trials whose parent sweep run is deleted.

It also writes, for ``analysis.sync`` only: ``find_sweep_runs`` / ``logged_steps`` read what a sweep
already has, ``create_trial_run`` and ``backfill_run`` add what Tune's own files show is missing.

mlflow and sqlalchemy are imported inside the functions that need them.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from analysis._params import field_types, parse_param, typed_column
from tuner import metrics as M
from tuner.tracking import (
    TAG_DIVERGED_EPOCH, TAG_ERROR, TAG_LAST_EPOCH, TAG_ROLE, TAG_STATUS, TAG_STOPPED_AT, TAG_SWEEP,
    TAG_TRIAL_ID, MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, check_tracking_uri, child_runs, default_tracking_uri,
    find_parent, redact, search_all, trial_tags,
)
from tuner.tracking import _DB_SCHEMES, _PARENT, _check_name, _log_params  # the callback's own rules, shared on purpose

__all__ = [
    "UnknownExperimentError", "load_trials", "load_history", "naive_history", "load_sweeps",
    "add_best", "log_report_artifacts", "list_experiments", "HISTORY_COLUMNS",
    "SweepRuns", "TrialRun", "find_sweep_runs", "logged_steps", "create_trial_run", "backfill_run",
]

Experiments = Union[str, Sequence[str]]

HISTORY_COLUMNS = ("sweep", "run_id", "trial_id", "metric", "epoch", "value")
_SQL_SCHEMES = ("sqlite",) + _DB_SCHEMES
_PAGE = 1000  # search_experiments page size
_BASE = "base."  # parent param prefix of the sweep's base TrialConfig
_FIXED = ("sweep", "experiment", "run_id", "trial_id", "status", "epochs_run", "duration_s", "start_time",
          "end_time", "stopped_at_epoch", "diverged_epoch", "error")
_HISTORY_THREADS = 16
_NUMERIC_SWEEP_TAGS = (M.TEACHER_VAL_ACC, M.TEACHER_TEST_ACC, "resume_count")


class UnknownExperimentError(ValueError):
    """No active experiment of that name; the one-line message lists the existing ones."""


# ---- connection -----------------------------------------------------------------------------------
def _resolve_uri(tracking_uri: Optional[str]) -> str:
    uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(uri, probe=False)
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser()
        if not path.is_file():  # MLflow would silently create an empty store there
            raise ValueError(f"tracking_uri: no MLflow database at {path.as_posix()!r}")
    return uri


def _client(tracking_uri: Optional[str]) -> Tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    uri = _resolve_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri), uri


def list_experiments(tracking_uri: Optional[str] = None) -> List[str]:
    """Names of the active experiments in the store (sorted)."""
    client, _ = _client(tracking_uri)
    return _experiment_names(client)


def _experiment_names(client: Any) -> List[str]:
    names, token = [], None
    while True:
        page = client.search_experiments(max_results=_PAGE, page_token=token)
        names.extend(e.name for e in page)
        token = page.token
        if not token:
            return sorted(names)


def _experiments(client: Any, uri: str, experiment: Experiments) -> Dict[str, str]:
    """``{experiment_id: name}``; UnknownExperimentError (one line, lists the existing names) if one is missing."""
    names = [experiment] if isinstance(experiment, str) else list(experiment)
    if not names:
        raise ValueError("experiment: give at least one experiment name")
    out: Dict[str, str] = {}
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage != "active":
            existing = _experiment_names(client)
            shown = ", ".join(existing[:30]) + (f", ... ({len(existing)} in all)" if len(existing) > 30 else "")
            raise UnknownExperimentError(
                f"experiment: no experiment named {name!r} in {redact(uri)}; existing: {shown or '(none)'}")
        out[exp.experiment_id] = name
    return out


def _search(client: Any, experiment_ids: List[str], role: str) -> List[Any]:
    """Every active run with ``srrl.role = role``, oldest first."""
    return list(search_all(client, experiment_ids, f"tags.`{TAG_ROLE}` = '{role}'"))


def _sweeps_and_trials(client: Any, experiment_ids: List[str]) -> Tuple[Dict[str, Any], List[Any]]:
    parents = {r.info.run_id: r for r in _search(client, experiment_ids, "sweep")}
    trials = [r for r in _search(client, experiment_ids, "trial") if r.data.tags.get(_PARENT) in parents]
    return parents, trials


# ---- sweeps ---------------------------------------------------------------------------------------
def _time(ms: Optional[int]) -> Any:
    return pd.Timestamp(ms, unit="ms", tz="UTC") if ms else pd.NaT


def load_sweeps(experiment: Experiments, tracking_uri: Optional[str] = None) -> pd.DataFrame:
    """One row per sweep (parent run): ``sweep, experiment, run_id, mlflow_status, start_time, end_time``
    plus every ``srrl.*`` tag with the prefix dropped (``space``, ``dataset``, ``teacher``, ...);
    ``teacher_val_acc``, ``teacher_test_acc`` and ``resume_count`` as numbers, the others as text."""
    client, uri = _client(tracking_uri)
    exps = _experiments(client, uri, experiment)
    rows = []
    for run in _search(client, list(exps), "sweep"):
        tags = run.data.tags
        row = {"sweep": tags.get(TAG_SWEEP, run.info.run_name), "experiment": exps[run.info.experiment_id],
               "run_id": run.info.run_id, "mlflow_status": run.info.status,
               "start_time": _time(run.info.start_time), "end_time": _time(run.info.end_time)}
        for k, v in sorted(tags.items()):
            if k.startswith("srrl.") and k not in (TAG_SWEEP, TAG_ROLE):
                row.setdefault(k[len("srrl."):], v)
        rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else ["sweep", "experiment", "run_id", "mlflow_status",
                                                       "start_time", "end_time"])
    for col in _NUMERIC_SWEEP_TAGS:  # the rest stay text: versions such as "6.0" are not numbers
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


# ---- trials ---------------------------------------------------------------------------------------
def _int_tag(tags: Mapping[str, str], key: str) -> Optional[int]:
    try:
        return int(float(tags[key]))
    except (KeyError, ValueError):
        return None


def _epochs_run(run: Any) -> int:
    last = _int_tag(run.data.tags, TAG_LAST_EPOCH)
    if last is not None:
        return last
    epoch = run.data.metrics.get(M.EPOCH)
    if epoch is not None and math.isfinite(epoch):
        return int(epoch)
    steps = [m.step for m in getattr(run.data, "_metric_objs", [])]  # the latest value's step per metric
    return int(max(steps)) if steps else 0


def _metric_order(names: Iterable[str]) -> List[str]:
    known = [k for k in M.PER_EPOCH + M.PER_TRIAL if k != M.EPOCH]
    names = set(names) - {M.EPOCH}
    return [k for k in known if k in names] + sorted(names - set(known))


def load_trials(experiment: Experiments, tracking_uri: Optional[str] = None, history: Optional[pd.DataFrame] = None,
                base_params: bool = True) -> pd.DataFrame:
    """One row per trial of every sweep in ``experiment`` (one name or several).

    Columns: ``sweep, experiment, run_id, trial_id, status`` (``srrl.status``, ``"running"`` while
    absent), ``epochs_run`` (``srrl.last_epoch``, else the last epoch logged), ``duration_s``,
    ``start_time``, ``end_time`` (UTC timestamps), ``stopped_at_epoch``, ``diverged_epoch``, ``error``;
    then every param with its real type (TrialConfig fields in their declared order, then the others
    such as ``arm``); then every metric's latest value, named as in ``tuner.metrics``
    (``val_acc``, ``best_val_acc``, ``test_acc``, ``student_macs`` ...). Rows are ordered by start time.

    Args:
        experiment: experiment name, or a list of names.
        tracking_uri: the MLflow store; default ``sqlite:///<abs cwd>/mlflow.db``.
        history: ``load_history``'s frame; when given, ``best_val_acc`` and ``best_epoch`` are
            computed from it (max over every logged epoch) instead of the logged running best.
        base_params: fill TrialConfig fields a trial's params lack from its sweep's ``base.*`` params,
            so every row has the full effective config.

    Raises:
        UnknownExperimentError: an experiment does not exist (the message lists those that do).
        ValueError: a bad or missing tracking store.
    """
    client, uri = _client(tracking_uri)
    exps = _experiments(client, uri, experiment)
    parents, runs = _sweeps_and_trials(client, list(exps))
    fields = field_types()
    base_of = {pid: {k[len(_BASE):]: v for k, v in p.data.params.items() if k.startswith(_BASE)}
               for pid, p in parents.items()}
    rows, params, metrics = [], [], []
    for run in runs:
        tags, info = run.data.tags, run.info
        start, end = info.start_time, info.end_time
        rows.append({
            "sweep": parents[tags[_PARENT]].data.tags.get(TAG_SWEEP),
            "experiment": exps[info.experiment_id], "run_id": info.run_id,
            "trial_id": tags.get(TAG_TRIAL_ID, info.run_name), "status": tags.get(TAG_STATUS, "running"),
            "epochs_run": _epochs_run(run),
            "duration_s": (end - start) / 1000.0 if start and end else np.nan,
            "start_time": _time(start), "end_time": _time(end),
            "stopped_at_epoch": _int_tag(tags, TAG_STOPPED_AT), "diverged_epoch": _int_tag(tags, TAG_DIVERGED_EPOCH),
            "error": tags.get(TAG_ERROR),
        })
        raw = dict(run.data.params)
        if base_params:
            for k, v in base_of[tags[_PARENT]].items():
                if k in fields:
                    raw.setdefault(k, v)
        params.append(raw)
        metrics.append(dict(run.data.metrics))
    df = pd.DataFrame(rows, columns=list(_FIXED))
    df["epochs_run"] = df["epochs_run"].astype("int64")
    df["duration_s"] = df["duration_s"].astype("float64")
    for col in ("stopped_at_epoch", "diverged_epoch"):  # Int64: missing where the trial did not stop so
        df[col] = pd.Series([r[col] for r in rows], dtype="Int64", index=df.index)
    df["start_time"] = pd.to_datetime(df["start_time"], utc=True)
    df["end_time"] = pd.to_datetime(df["end_time"], utc=True)

    names = {k for p in params for k in p}
    ordered = [k for k in fields if k in names] + sorted(names - set(fields))
    cols: Dict[str, pd.Series] = {}
    for name in ordered:
        if name in df.columns:
            continue
        cols[name] = typed_column([parse_param(name, p.get(name)) for p in params], name)
    for name in _metric_order({k for m in metrics for k in m}):
        if name in df.columns or name in cols:
            continue
        cols[name] = pd.Series([m.get(name, np.nan) for m in metrics], dtype="float64")
    if cols:
        df = pd.concat([df, pd.DataFrame(cols, index=df.index)], axis=1)
    if M.BEST_VAL_ACC not in df.columns:
        df[M.BEST_VAL_ACC] = np.nan
    if history is not None:
        df = add_best(df, history)
    return df


def add_best(trials: pd.DataFrame, history: pd.DataFrame, metric: str = M.VAL_ACC, mode: str = "max") -> pd.DataFrame:
    """``best_<metric>`` (max, or min with ``mode='min'``, over every logged epoch) and ``best_epoch``
    from ``history``; trials without that history keep their logged value."""
    h = history[history["metric"] == metric].dropna(subset=["value"])
    out = trials.copy()
    col = f"best_{metric}"
    if h.empty:
        if col not in out.columns:
            out[col] = np.nan
        return out
    idx = h.groupby("run_id")["value"].idxmax() if mode == "max" else h.groupby("run_id")["value"].idxmin()
    best = h.loc[idx].set_index("run_id")
    computed = out["run_id"].map(best["value"])
    out[col] = computed.fillna(out[col]) if col in out.columns else computed
    if metric == M.VAL_ACC:
        out["best_epoch"] = typed_column([None if pd.isna(e) else int(e) for e in out["run_id"].map(best["epoch"])])
    return out


# ---- history --------------------------------------------------------------------------------------
def _is_sql(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() in _SQL_SCHEMES


def load_history(experiment: Experiments, tracking_uri: Optional[str] = None,
                 metrics: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """Every logged value of every trial, long format: ``sweep, run_id, trial_id, metric, epoch, value``.

    Fetched in bulk: for SQL stores (``sqlite:///``, ``postgresql://``, ``mysql://``, ``mssql://``) one
    SQLAlchemy query on MLflow's ``metrics`` table joined to ``runs`` and ``tags``; for servers
    (``http(s)://``, ``databricks``) MLflow's public ``get_metric_history`` for every (run, metric),
    run on a pool of threads. A step logged twice (a resumed trial) keeps its last value by timestamp.
    Sorted by sweep, trial start, metric, epoch.

    Args:
        metrics: metric names to fetch; None for all.
    """
    client, uri = _client(tracking_uri)
    exps = _experiments(client, uri, experiment)
    if _is_sql(uri):
        raw = _history_sql(uri, list(exps), metrics)
    else:
        parents, runs = _sweeps_and_trials(client, list(exps))
        raw = _history_client(client, parents, runs, metrics, threads=_HISTORY_THREADS)
    return _tidy_history(raw)


def naive_history(experiment: Experiments, tracking_uri: Optional[str] = None,
                  metrics: Optional[Sequence[str]] = None) -> pd.DataFrame:
    """``load_history``'s result by the naive loop: one ``get_metric_history`` call per run and metric,
    one after another. Only for the benchmark (``bench/analysis_load.py``)."""
    client, uri = _client(tracking_uri)
    exps = _experiments(client, uri, experiment)
    parents, runs = _sweeps_and_trials(client, list(exps))
    return _tidy_history(_history_client(client, parents, runs, metrics, threads=0))


_RAW = ["sweep", "run_id", "trial_id", "metric", "epoch", "value", "timestamp", "is_nan", "start"]


def _history_sql(uri: str, experiment_ids: List[str], metrics: Optional[Sequence[str]]) -> pd.DataFrame:
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlRun, SqlTag

    m, r, t = SqlMetric.__table__, SqlRun.__table__, SqlTag.__table__
    parent_run = r.alias("parent_run")
    role, tid, par, prole, psweep = (t.alias(n) for n in ("role", "tid", "par", "prole", "psweep"))
    joined = (
        m.join(r, r.c.run_uuid == m.c.run_uuid)
        .join(role, sa.and_(role.c.run_uuid == r.c.run_uuid, role.c.key == TAG_ROLE, role.c.value == "trial"))
        .join(par, sa.and_(par.c.run_uuid == r.c.run_uuid, par.c.key == _PARENT))
        .join(parent_run, sa.and_(parent_run.c.run_uuid == par.c.value, parent_run.c.lifecycle_stage == "active"))
        .join(prole, sa.and_(prole.c.run_uuid == parent_run.c.run_uuid, prole.c.key == TAG_ROLE,
                             prole.c.value == "sweep"))
        .outerjoin(psweep, sa.and_(psweep.c.run_uuid == parent_run.c.run_uuid, psweep.c.key == TAG_SWEEP))
        .outerjoin(tid, sa.and_(tid.c.run_uuid == r.c.run_uuid, tid.c.key == TAG_TRIAL_ID))
    )
    query = (
        sa.select(psweep.c.value, m.c.run_uuid, sa.func.coalesce(tid.c.value, r.c.name), m.c.key, m.c.step,
                  m.c.value, m.c.timestamp, m.c.is_nan, r.c.start_time)
        .select_from(joined)
        .where(r.c.experiment_id.in_([int(e) for e in experiment_ids]), r.c.lifecycle_stage == "active")
    )
    if metrics is not None:
        query = query.where(m.c.key.in_(list(metrics)))
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).fetchall()
    finally:
        engine.dispose()
    if not rows:
        return pd.DataFrame(columns=_RAW)
    return pd.DataFrame(dict(zip(_RAW, map(list, zip(*rows)))))  # column-wise: far faster than Row objects


def _history_client(client: Any, parents: Mapping[str, Any], runs: List[Any], metrics: Optional[Sequence[str]],
                    threads: int) -> pd.DataFrame:
    wanted = None if metrics is None else set(metrics)
    jobs = [(run, key) for run in runs for key in sorted(run.data.metrics) if wanted is None or key in wanted]

    def fetch(job: Tuple[Any, str]) -> List[tuple]:
        run, key = job
        sweep = parents[run.data.tags[_PARENT]].data.tags.get(TAG_SWEEP)
        trial_id = run.data.tags.get(TAG_TRIAL_ID, run.info.run_name)
        return [(sweep, run.info.run_id, trial_id, key, m.step, m.value, m.timestamp, False, run.info.start_time)
                for m in client.get_metric_history(run.info.run_id, key)]

    if threads > 0:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            chunks = list(pool.map(fetch, jobs))
    else:
        chunks = [fetch(job) for job in jobs]
    return pd.DataFrame.from_records([row for chunk in chunks for row in chunk], columns=_RAW)


def _tidy_history(raw: pd.DataFrame) -> pd.DataFrame:
    if raw.empty:
        return pd.DataFrame({"sweep": pd.Series(dtype=object), "run_id": pd.Series(dtype=object),
                             "trial_id": pd.Series(dtype=object), "metric": pd.Series(dtype=object),
                             "epoch": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64")})
    df = raw.copy()
    df["value"] = df["value"].astype("float64")
    df.loc[df["is_nan"].astype(bool), "value"] = np.nan
    df["epoch"] = df["epoch"].astype("int64")
    # a resumed trial may log a step twice: the later write wins
    df = df.sort_values(["run_id", "metric", "epoch", "timestamp"], kind="stable")
    df = df.drop_duplicates(["run_id", "metric", "epoch"], keep="last")
    df = df.sort_values(["sweep", "start", "run_id", "metric", "epoch"], kind="stable")
    return df[list(HISTORY_COLUMNS)].reset_index(drop=True)


# ---- artifacts ------------------------------------------------------------------------------------
def log_report_artifacts(tracking_uri: Optional[str], run_ids: Iterable[str], paths: Iterable[Union[str, Path]],
                         artifact_path: str = "report") -> List[str]:
    """Log local files to each run under ``artifact_path`` (overwriting earlier copies); returns the run ids."""
    client, _ = _client(tracking_uri)
    paths = [str(p) for p in paths]
    done = []
    for run_id in run_ids:
        for path in paths:
            client.log_artifact(run_id, path, artifact_path)
        done.append(run_id)
    return done


# ---- writing: backfill from Tune's own files (analysis.sync decides what) ---------------------------
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
    base: Dict[str, str]  # the parent's ``base.*`` params, prefix dropped (strings, as stored)
    trials: Dict[str, TrialRun]
    parent: Any = field(default=None, repr=False)


def find_sweep_runs(experiment: str, sweep: str, tracking_uri: Optional[str] = None) -> SweepRuns:
    """The parent run of ``sweep`` in ``experiment`` and its active child runs (the oldest per trial id,
    as ``MLflowTracking`` picks). A server URI is probed first, so a dead server fails in seconds.

    Raises:
        UnknownExperimentError: no such experiment.
        ValueError: no sweep of that name in it, or a bad tracking URI / sweep name.
        ConnectionError: the tracking server does not answer.
    """
    _check_name("sweep", sweep)
    client, uri = _client(tracking_uri)
    if uri.startswith(("http://", "https://")):
        check_tracking_uri(uri, probe=True)
    exp_id = next(iter(_experiments(client, uri, experiment)))
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
    base = {k[len(_BASE):]: v for k, v in parent.data.params.items() if k.startswith(_BASE)}
    return SweepRuns(uri, exp_id, parent.info.run_id, base, trials, parent)


def logged_steps(sweep: SweepRuns, metrics: Sequence[str]) -> Dict[Tuple[str, str], set]:
    """``{(run_id, metric): {steps}}`` already logged to the sweep's child runs, fetched in bulk like
    ``load_history`` (one SQL query on a database store, a thread pool of history calls on a server)."""
    ids = {t.run_id for t in sweep.trials.values()}
    if not ids:
        return {}
    if _is_sql(sweep.uri):
        raw = _history_sql(sweep.uri, [sweep.experiment_id], metrics)
        raw = raw[raw["run_id"].isin(ids)]
    else:
        client, _ = _client(sweep.uri)
        runs = [t.run for t in sweep.trials.values()]
        raw = _history_client(client, {sweep.parent_id: sweep.parent}, runs, metrics, threads=_HISTORY_THREADS)
    out: Dict[Tuple[str, str], set] = {}
    for run_id, key, step in zip(raw["run_id"], raw["metric"], raw["epoch"]):
        out.setdefault((run_id, key), set()).add(int(step))
    return out


def create_trial_run(sweep: SweepRuns, trial_id: str, start_time: Optional[int] = None) -> str:
    """A child run for ``trial_id`` under the sweep's parent, tagged as ``MLflowTracking`` tags it; returns its id."""
    client, _ = _client(sweep.uri)
    tags = trial_tags(sweep.parent_id, trial_id)
    run = client.create_run(sweep.experiment_id, start_time=start_time, tags=tags, run_name=trial_id)
    sweep.trials[trial_id] = TrialRun(run.info.run_id, run.info.status, tags, {}, run)
    return run.info.run_id


def backfill_run(tracking_uri: str, run_id: str, params: Optional[Mapping[str, str]] = None,
                 metrics: Sequence[Tuple[str, float, int, int]] = (), tags: Optional[Mapping[str, str]] = None,
                 end: Optional[Tuple[str, Optional[int]]] = None) -> None:
    """Add to a run: ``params`` (new keys only: MLflow params never change), ``metrics`` as
    ``(key, value, timestamp_ms, step)`` in ``log_batch`` calls of at most 1000, then ``tags``, then
    ``end = (status, end_time_ms)`` terminates it (status FINISHED, FAILED or KILLED)."""
    from mlflow.entities import Metric, RunTag

    client, _ = _client(tracking_uri)
    _log_params(client, run_id, params or {})
    rows = [Metric(*m) for m in metrics]
    for i in range(0, len(rows), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=rows[i:i + MAX_METRICS_PER_BATCH], synchronous=True)
    items = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, tags=items[i:i + MAX_PARAMS_PER_BATCH], synchronous=True)
    if end is not None:
        client.set_terminated(run_id, status=end[0], end_time=end[1])
