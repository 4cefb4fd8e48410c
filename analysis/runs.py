"""Reading a sweep's MLflow records: sweeps, trials and histories as DataFrames (and the student check).

What it reads is what ``tuner.tracking`` writes: a parent run per sweep (tags ``srrl.role=sweep``,
``srrl.sweep=<name>``; params ``sweep.*``) and a child run per trial (tags ``mlflow.parentRunId``,
``srrl.role=trial``, ``srrl.trial_id``, ``srrl.status``, ``srrl.stage`` (``search`` or ``confirm``), the
search's ``srrl.origin`` / ``srrl.optuna_trial``, a confirmation run's ``srrl.config_id`` /
``srrl.config_role`` / ``srrl.config_rank`` / ``srrl.recommended`` ...; params = every field of the
trial's config; one metric per ``tuner.core.metrics`` name, logged with ``step = epoch``). Deleted runs are
ignored, and so are trials whose parent sweep run is deleted.

It reads through ``tuner.tracking.read`` (connection, bulk history) and writes nothing: the report's artifacts
are logged by ``tuner.tracking.runs.log_report_artifacts`` when asked (``--log``), the backfill by
``tuner.tracking.backfill``.
mlflow and sqlalchemy are imported inside the functions that need them.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from tuner.tracking.read import (
    Experiments, HISTORY_THREADS, mlflow_client, find_experiments, history_from_client,
    history_from_sql, is_sql, search_runs, sweeps_and_trials, tidy_history,
)
from analysis._params import field_types, parse_param, typed_column
from tuner.core import metrics as M
from tuner.tracking import (
    TAG_DIVERGED_EPOCH, TAG_ERROR, TAG_LAST_EPOCH, TAG_RECOMMENDED, TAG_ROLE, TAG_STAGE, TAG_STATUS, TAG_STOPPED_AT,
    TAG_SWEEP, TAG_TRIAL_ID,
)
from tuner.tracking.schema import PARENT

__all__ = [  # the store's own names (HISTORY_COLUMNS, UnknownExperimentError, list_experiments): tuner.tracking.read
    "load_trials", "load_history", "client_history", "load_sweeps", "add_best", "has_artifact", "STUDENT_ARTIFACT",
    "LABEL_COLUMNS",
]

_FIXED = ("sweep", "experiment", "run_id", "trial_id", "status", "epochs_run", "duration_s", "start_time",
          "end_time", "stopped_at_epoch", "diverged_epoch", "error")
#: columns from a child run's stage and label tags (the label's param where a run lacks its tag)
LABEL_COLUMNS = ("stage", "origin", "optuna_trial", "config_id", "config_role", "config_rank", "recommended")
_INT_LABELS = ("optuna_trial", "config_rank")
_NUMERIC_SWEEP_TAGS = (M.TEACHER_VAL_ACC, M.TEACHER_TEST_ACC, "resume_count")
#: where the sweep's export puts a trial's student + connector (``tuner.core.export``)
STUDENT_ARTIFACT = "model/student.pt"


# ---- sweeps ---------------------------------------------------------------------------------------
def _time(ms: Optional[int]) -> Any:
    return pd.Timestamp(ms, unit="ms", tz="UTC") if ms else pd.NaT


def load_sweeps(experiment: Experiments, tracking_uri: Optional[str] = None) -> pd.DataFrame:
    """One row per sweep (parent run): ``sweep, experiment, run_id, mlflow_status, start_time, end_time``
    plus every ``srrl.*`` tag with the prefix dropped (``space``, ``dataset``, ``teacher``, ...);
    ``teacher_val_acc``, ``teacher_test_acc`` and ``resume_count`` as numbers, the others as text."""
    client, uri = mlflow_client(tracking_uri)
    exps = find_experiments(client, uri, experiment)
    rows = []
    for run in search_runs(client, list(exps), "sweep"):
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


def _epochs_run(run: Any, client: Any) -> int:
    """``srrl.last_epoch`` (set when a trial ends); else an ``epoch`` metric (sweeps before it was only the
    step); else (a trial still running, or its driver killed) the last epoch its val_acc history reaches."""
    last = _int_tag(run.data.tags, TAG_LAST_EPOCH)
    if last is not None:
        return last
    epoch = run.data.metrics.get(M.EPOCH)
    if epoch is not None and math.isfinite(epoch):
        return int(epoch)
    return int(max((m.step for m in client.get_metric_history(run.info.run_id, M.VAL_ACC)), default=0))


def _metric_order(names: Iterable[str]) -> List[str]:
    known = [k for k in M.PER_EPOCH + M.PER_TRIAL if k != M.EPOCH]
    names = set(names) - {M.EPOCH}
    return [k for k in known if k in names] + sorted(names - set(known))



def _labels(tags: Mapping[str, str], params: Mapping[str, str]) -> Dict[str, Any]:
    """The stage and label columns of one child run: ``srrl.<label>`` tags, else the label's param.

    A run without ``srrl.stage`` is a search run (sweeps recorded before the confirmation stage).
    """
    def label(key: str) -> Optional[str]:
        value = tags.get(f"srrl.{key}", params.get(key))
        return None if value is None or value.strip() in ("", "None") else value

    out: Dict[str, Any] = {"stage": tags.get(TAG_STAGE) or "search"}
    for key in LABEL_COLUMNS[1:-1]:
        value = label(key)
        if key in _INT_LABELS:
            try:
                value = None if value is None else int(float(value))
            except ValueError:
                value = None
        out[key] = value
    out["recommended"] = tags.get(TAG_RECOMMENDED, "").strip().lower() == "true"
    return out


def _label_frame(labels: List[Dict[str, Any]], index: pd.Index) -> pd.DataFrame:
    cols: Dict[str, pd.Series] = {}
    for key in LABEL_COLUMNS:
        values = [row[key] for row in labels]
        if key in _INT_LABELS:
            cols[key] = pd.Series(values, dtype="Int64", index=index)
        elif key == "recommended":
            cols[key] = pd.Series(values, dtype="bool", index=index)
        else:  # text (pandas' str dtype), or object where no run has the label
            cols[key] = pd.Series(values, dtype=None if any(v is not None for v in values) else object, index=index)
    return pd.DataFrame(cols, index=index)


def load_trials(experiment: Experiments, tracking_uri: Optional[str] = None,
                history: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per trial (child run) of every sweep in ``experiment`` (one name or several).

    Columns: ``sweep, experiment, run_id, trial_id, status`` (``srrl.status``, ``"running"`` while
    absent), ``epochs_run`` (``srrl.last_epoch``, else the last epoch logged), ``duration_s``,
    ``start_time``, ``end_time`` (UTC timestamps), ``stopped_at_epoch``, ``diverged_epoch``, ``error``;
    ``stage`` (``search`` or ``confirm``; ``search`` where the run has no ``srrl.stage``), ``origin``
    (``authors``, ``warm-start``, ``search``), ``optuna_trial``, ``config_id``, ``config_role``
    (``candidate``, ``reference``, ``ce``), ``config_rank`` (Int64) and ``recommended`` (bool) from the
    run's tags; then every param with its real type (TrialConfig fields in their declared order, then
    the others); then every metric's latest value, named as in ``tuner.core.metrics`` (``val_acc``,
    ``best_val_acc`` (the ranking rule), ``test_acc``, ``student_macs`` ...). Rows are ordered by start time.

    Args:
        experiment: experiment name, or a list of names.
        tracking_uri: the MLflow store; default ``sqlite:///<abs cwd>/mlflow.db``.
        history: ``load_history``'s frame; when given, ``best_val_acc`` and ``best_epoch`` are computed
            from it (max over every logged epoch).

    Raises:
        UnknownExperimentError: an experiment does not exist (the message lists those that do).
        ValueError: a bad or missing tracking store.
    """
    client, uri = mlflow_client(tracking_uri)
    exps = find_experiments(client, uri, experiment)
    parents, runs = sweeps_and_trials(client, list(exps))
    fields = field_types()
    rows, labels, params, metrics = [], [], [], []
    for run in runs:
        tags, info = run.data.tags, run.info
        start, end = info.start_time, info.end_time
        rows.append({
            "sweep": parents[tags[PARENT]].data.tags.get(TAG_SWEEP),
            "experiment": exps[info.experiment_id], "run_id": info.run_id,
            "trial_id": tags.get(TAG_TRIAL_ID, info.run_name), "status": tags.get(TAG_STATUS, "running"),
            "epochs_run": _epochs_run(run, client),
            "duration_s": (end - start) / 1000.0 if start and end else np.nan,
            "start_time": _time(start), "end_time": _time(end),
            "stopped_at_epoch": _int_tag(tags, TAG_STOPPED_AT), "diverged_epoch": _int_tag(tags, TAG_DIVERGED_EPOCH),
            "error": tags.get(TAG_ERROR),
        })
        labels.append(_labels(tags, run.data.params))
        params.append(dict(run.data.params))
        metrics.append(dict(run.data.metrics))
    df = pd.DataFrame(rows, columns=list(_FIXED))
    df["epochs_run"] = df["epochs_run"].astype("int64")
    df["duration_s"] = df["duration_s"].astype("float64")
    for col in ("stopped_at_epoch", "diverged_epoch"):  # Int64: missing where the trial did not stop so
        df[col] = pd.Series([r[col] for r in rows], dtype="Int64", index=df.index)
    df["start_time"] = pd.to_datetime(df["start_time"], utc=True)
    df["end_time"] = pd.to_datetime(df["end_time"], utc=True)
    df = pd.concat([df, _label_frame(labels, df.index)], axis=1)

    names = {k for p in params for k in p}
    ordered = [k for k in fields if k in names] + sorted(names - set(fields))
    cols: Dict[str, pd.Series] = {}
    for name in ordered:
        if name in df.columns:  # the label params: their tag columns above
            continue
        cols[name] = typed_column([parse_param(name, p.get(name)) for p in params], name)
    for name in _metric_order({k for m in metrics for k in m}):
        if name in df.columns or name in cols:
            continue
        cols[name] = pd.Series([m.get(name, np.nan) for m in metrics], dtype="float64")
    if cols:
        df = pd.concat([df, pd.DataFrame(cols, index=df.index)], axis=1)
    if M.BEST_VAL_ACC not in df.columns:  # also the ranking rule's metric, M.RANK_VAL_ACC
        df[M.BEST_VAL_ACC] = np.nan
    if history is not None:
        df = add_best(df, history)
    return df


def add_best(trials: pd.DataFrame, history: pd.DataFrame, metric: str = M.VAL_ACC, mode: str = "max") -> pd.DataFrame:
    """``best_<metric>`` (max, or min with ``mode='min'``, over every logged epoch) and ``best_epoch``
    from ``history``; trials without that history keep their logged value. Shown, never ranked by."""
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
    client, uri = mlflow_client(tracking_uri)
    if not is_sql(uri):
        return client_history(experiment, tracking_uri, metrics)
    return tidy_history(history_from_sql(uri, list(find_experiments(client, uri, experiment)), metrics))


def client_history(experiment: Experiments, tracking_uri: Optional[str] = None,
                   metrics: Optional[Sequence[str]] = None, threads: int = HISTORY_THREADS) -> pd.DataFrame:
    """``load_history``'s result through MLflow's public client alone (its path for a server, on any store):
    one ``get_metric_history`` per run and metric, on ``threads`` threads (0: one after another, the
    benchmark's naive loop)."""
    client, uri = mlflow_client(tracking_uri)
    exps = find_experiments(client, uri, experiment)
    parents, runs = sweeps_and_trials(client, list(exps))
    return tidy_history(history_from_client(client, parents, runs, metrics, threads=threads))


# ---- artifacts ------------------------------------------------------------------------------------
def has_artifact(run_ids: Iterable[str], tracking_uri: Optional[str] = None,
                 path: str = STUDENT_ARTIFACT) -> List[bool]:
    """Whether each run carries the artifact ``path``: one ``list_artifacts`` call of its folder per run,
    so give only the rows that are shown."""
    client, _ = mlflow_client(tracking_uri)
    folder = path.rsplit("/", 1)[0] if "/" in path else None
    return [any(a.path == path for a in client.list_artifacts(run_id, folder)) for run_id in run_ids]
