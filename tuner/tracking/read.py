"""MLflow plumbing of ``analysis``: the store's connection, experiment lookup, and the bulk metric-history loaders.

``analysis.runs`` (reading) and ``tuner.tracking.backfill`` (writing, for ``tuner.driver.sync``) build on it; mlflow
and sqlalchemy are imported inside the functions that need them.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from tuner.core.uri import redact, sqlite_file
from tuner.tracking import TAG_ROLE, TAG_SWEEP, TAG_TRIAL_ID, check_tracking_uri, default_tracking_uri, search_all
from tuner.tracking.schema import PARENT
from tuner.tracking.uri import DB_SCHEMES

__all__ = ["UnknownExperimentError", "HISTORY_COLUMNS", "HISTORY_THREADS", "Experiments", "list_experiments", "resolve_uri",
           "mlflow_client", "find_experiments", "search_runs", "sweeps_and_trials", "is_sql", "history_from_sql",
           "history_from_client", "tidy_history"]

Experiments = Union[str, Sequence[str]]

HISTORY_COLUMNS = ("sweep", "run_id", "trial_id", "metric", "epoch", "value")
_SQL_SCHEMES = ("sqlite",) + DB_SCHEMES
_PAGE = 1000  # search_experiments page size
HISTORY_THREADS = 16


class UnknownExperimentError(ValueError):
    """No active experiment of that name; the one-line message lists the existing ones."""


# ---- connection -----------------------------------------------------------------------------------
def resolve_uri(tracking_uri: Optional[str]) -> str:
    uri = tracking_uri or default_tracking_uri()
    check_tracking_uri(uri, probe=False)
    path = sqlite_file(uri)
    if path is not None:
        if not path.is_file():  # MLflow would silently create an empty store there
            raise ValueError(f"tracking_uri: no MLflow database at {path.as_posix()!r}")
    return uri


def mlflow_client(tracking_uri: Optional[str]) -> Tuple[Any, str]:
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(tracking_uri)
    return MlflowClient(tracking_uri=uri), uri


def list_experiments(tracking_uri: Optional[str] = None) -> List[str]:
    """Names of the active experiments in the store (sorted)."""
    client, _ = mlflow_client(tracking_uri)
    return _experiment_names(client)


def _experiment_names(client: Any) -> List[str]:
    names, token = [], None
    while True:
        page = client.search_experiments(max_results=_PAGE, page_token=token)
        names.extend(e.name for e in page)
        token = page.token
        if not token:
            return sorted(names)


def find_experiments(client: Any, uri: str, experiment: Experiments) -> Dict[str, str]:
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


def search_runs(client: Any, experiment_ids: List[str], role: str) -> List[Any]:
    """Every active run with ``srrl.role = role``, oldest first."""
    return list(search_all(client, experiment_ids, f"tags.`{TAG_ROLE}` = '{role}'"))


def sweeps_and_trials(client: Any, experiment_ids: List[str]) -> Tuple[Dict[str, Any], List[Any]]:
    parents = {r.info.run_id: r for r in search_runs(client, experiment_ids, "sweep")}
    trials = [r for r in search_runs(client, experiment_ids, "trial") if r.data.tags.get(PARENT) in parents]
    return parents, trials



def is_sql(uri: str) -> bool:
    return uri.split(":", 1)[0].split("+", 1)[0].lower() in _SQL_SCHEMES


_RAW = ["sweep", "run_id", "trial_id", "metric", "epoch", "value", "timestamp", "is_nan", "start"]


def history_from_sql(uri: str, experiment_ids: List[str], metrics: Optional[Sequence[str]]) -> pd.DataFrame:
    """Every metric value of the trial runs in one query on MLflow's SQL schema (its ``dbmodels``): the one
    place that reads MLflow's tables, because its client fetches one history per run and metric (~100x
    slower on a sweep). ``test_history_metric_filter_and_bulk_paths_agree`` pins it against the client path."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlRun, SqlTag

    m, r, t = SqlMetric.__table__, SqlRun.__table__, SqlTag.__table__
    parent_run = r.alias("parent_run")
    role, tid, par, prole, psweep = (t.alias(n) for n in ("role", "tid", "par", "prole", "psweep"))
    joined = (
        m.join(r, r.c.run_uuid == m.c.run_uuid)
        .join(role, sa.and_(role.c.run_uuid == r.c.run_uuid, role.c.key == TAG_ROLE, role.c.value == "trial"))
        .join(par, sa.and_(par.c.run_uuid == r.c.run_uuid, par.c.key == PARENT))
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


def history_from_client(client: Any, parents: Mapping[str, Any], runs: List[Any], metrics: Optional[Sequence[str]],
                    threads: int) -> pd.DataFrame:
    wanted = None if metrics is None else set(metrics)
    jobs = [(run, key) for run in runs for key in sorted(run.data.metrics) if wanted is None or key in wanted]

    def fetch(job: Tuple[Any, str]) -> List[tuple]:
        run, key = job
        sweep = parents[run.data.tags[PARENT]].data.tags.get(TAG_SWEEP)
        trial_id = run.data.tags.get(TAG_TRIAL_ID, run.info.run_name)
        return [(sweep, run.info.run_id, trial_id, key, m.step, m.value, m.timestamp, False, run.info.start_time)
                for m in client.get_metric_history(run.info.run_id, key)]

    if threads > 0:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            chunks = list(pool.map(fetch, jobs))
    else:
        chunks = [fetch(job) for job in jobs]
    return pd.DataFrame.from_records([row for chunk in chunks for row in chunk], columns=_RAW)


def tidy_history(raw: pd.DataFrame) -> pd.DataFrame:
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

