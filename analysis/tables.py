"""Tables over ``load_trials``'s frame: leaderboard, ASHA stops, ablation statistics, marginal effects,
Pareto front, and the confirmation verdict (``analysis.confirm_views``).

DataFrame in, DataFrame out; no I/O. Search views read search-stage trials only (``search_trials``),
ranked by one rule, ``rank_val_acc``; confirmation runs feed the verdict. scipy is imported lazily.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from analysis.frames import SEARCHED_PARAMS, hashable, confirm_trials, search_trials, searched_params
from tuner.core import metrics as M
from tuner.core.config import RACE
from tuner.core.ranking import by_config
from tuner.core.verdict import label_of

__all__ = ["SEARCHED_PARAMS", "searched_params", "search_trials", "confirm_trials", "leaderboard", "asha_table",
           "ablation_table", "marginal_effects", "pareto_front", "status_counts", "is_log_scale", "ranking_order",
           "configurations"]

_MODES = ("max", "min")


def _check_metric(trials: pd.DataFrame, metric: str) -> None:
    if metric not in trials.columns:
        numeric = [c for c in trials.columns if pd.api.types.is_float_dtype(trials[c])]
        raise ValueError(f"metric: {metric!r} is not a column of the trials; numeric columns: {', '.join(numeric)}")


def _check_mode(mode: str) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode: {mode!r} is not allowed; choose from: {', '.join(_MODES)}")


def status_counts(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials per sweep and status (rows: sweeps, columns: statuses, plus ``total``)."""
    if trials.empty:
        return pd.DataFrame(columns=["total"])
    table = pd.crosstab(trials["sweep"], trials["status"])
    order = [s for s in (M.FINISHED, M.STOPPED_EARLY, M.DIVERGED, M.ERRORED, M.STALLED, M.RUNNING) if s in table.columns]
    table = table[order + sorted(set(table.columns) - set(order))]
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table


def configurations(trials: pd.DataFrame) -> pd.DataFrame:
    """Search trials as the driver ranks them: a raced sweep's one row per configuration (``tuner.core.ranking.
    by_config``: its first seed's row, ``best_val_acc`` and ``test_acc`` the means over the seeds that ran every
    epoch, ``seeds`` their count), each sweep apart; a sweep that did not race, one row per trial, as given."""
    if trials.empty or "origin" not in trials.columns or not (trials["origin"] == RACE).any():
        return trials
    sweeps = trials.groupby("sweep", sort=False) if "sweep" in trials.columns else [(None, trials)]
    parts = []
    for _, sweep in sweeps:
        records = sweep.astype(object).where(sweep.notna(), None).to_dict("records")  # NaN: missing, as None
        grouped = pd.DataFrame(by_config(records, epochs="epochs_run"), columns=[*sweep.columns, "seeds"])
        parts.append(grouped.astype({c: t for c, t in sweep.dtypes.items() if t.kind == "f"}))
    return pd.concat(parts, ignore_index=True)


def ranking_order(trials: pd.DataFrame, metric: str = M.RANK_VAL_ACC, mode: str = "max") -> pd.DataFrame:
    """``trials`` sorted as they rank: the finished ones (all epochs run) first, by ``metric``; then the
    others by the epochs they ran (most first) and ``metric``, since a lower fidelity is not comparable
    with a higher one; at equal epochs a configuration with more ``seeds`` (``configurations``) first.
    Missing values of ``metric`` last within each group."""
    _check_metric(trials, metric)
    _check_mode(mode)
    def column(name: str, default: Any) -> pd.Series:
        return trials[name] if name in trials.columns else pd.Series(default, index=trials.index)

    keys = [M.rank_key(status, epochs, value, seeds, mode=mode) for status, epochs, value, seeds in
            zip(column("status", M.FINISHED), column("epochs_run", 0), pd.to_numeric(trials[metric], errors="coerce"),
                column("seeds", 1))]
    order = sorted(range(len(keys)), key=keys.__getitem__)  # stable: ties keep their order
    return trials.iloc[order]


def leaderboard(trials: pd.DataFrame, metric: str = M.RANK_VAL_ACC, top: Optional[int] = 10,
                mode: str = "max", run_id: bool = False) -> pd.DataFrame:
    """The ``top`` search trials in ``ranking_order`` by ``metric``, indexed by rank from 1; a raced sweep's
    configurations (``configurations``), as the driver's printed leaderboard has them.

    Confirmation runs are left out (they feed ``analysis.confirm_views.verdict_table``). Columns: ``sweep`` (when there are
    several), ``run_id`` (with ``run_id=True``), ``trial_id, status, epochs_run``, ``origin`` (when
    recorded), ``seeds`` (raced), the searched params that vary (with ``student_macs, student_params`` when the
    student does), then ``rank_val_acc, best_val_acc, val_acc, test_acc`` (those present) and ``metric``.
    """
    _check_metric(trials, metric)
    trials = configurations(search_trials(trials))
    cols = (["sweep"] if "sweep" in trials.columns and trials["sweep"].nunique() > 1 else [])
    cols += ["run_id"] if run_id and "run_id" in trials.columns else []
    cols += [c for c in ("trial_id", "status", "epochs_run") if c in trials.columns]
    cols += ["origin"] if "origin" in trials.columns and trials["origin"].notna().any() else []
    cols += ["seeds"] if "seeds" in trials.columns else []
    cols += searched_params(trials)
    if "student" in cols:  # students differ in cost: what each one costs beside what it scores
        cols += [c for c in (M.STUDENT_MACS, M.STUDENT_PARAMS) if c in trials.columns]
    cols += [c for c in (M.RANK_VAL_ACC, M.BEST_VAL_ACC, M.VAL_ACC, M.TEST_ACC, metric) if c in trials.columns]
    cols = list(dict.fromkeys(cols))  # once each (the rule's metric may be one of the others)
    out = ranking_order(trials, metric, mode)[cols]
    if top is not None:
        out = out.head(top)
    out = out.reset_index(drop=True)
    out.index = pd.RangeIndex(1, len(out) + 1, name="rank")
    return out


def _point(row: pd.Series, params: Sequence[str]) -> str:
    return label_of({p: row[p] for p in params if p in row.index and not _missing(row[p])})


def _missing(v: object) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def asha_table(trials: pd.DataFrame) -> pd.DataFrame:
    """Where the scheduler stopped the search trials: one row per rung (each ``stopped_at_epoch``) with
    the trials ``stopped`` there, and one per ``finished`` length (epochs run); ``reached`` = trials that
    ran at least that many epochs; ``authors`` = the authors' points (``origin == "authors"``) among them.

    Only stopped-early and finished trials count (diverged, errored and running ones are left out).
    Columns: ``sweep`` (when there are several), ``epoch, ended, trials, reached, authors``.
    """
    cols = ["sweep", "epoch", "ended", "trials", "reached", "authors"]
    df = search_trials(trials)
    if df.empty or "status" not in df.columns or "epochs_run" not in df.columns:
        return pd.DataFrame(columns=cols[1:])
    df = df[df["status"].isin([M.STOPPED_EARLY, M.FINISHED])]
    rows = []
    for sweep, g in df.groupby("sweep", sort=False) if "sweep" in df.columns else [(None, df)]:
        params = searched_params(g)
        ran = pd.to_numeric(g["epochs_run"], errors="coerce")
        at = pd.to_numeric(g["stopped_at_epoch"], errors="coerce").fillna(ran) if "stopped_at_epoch" in g else ran
        authors = g["origin"].eq("authors") if "origin" in g.columns else pd.Series(False, index=g.index)
        for ended, status in (("stopped", M.STOPPED_EARLY), ("finished", M.FINISHED)):
            part = g["status"] == status
            for epoch in sorted(set(at[part].dropna().astype(int))):
                here = part & (at == epoch)
                rows.append({"sweep": sweep, "epoch": epoch, "ended": ended, "trials": int(here.sum()),
                             "reached": int((ran >= epoch).sum()),
                             "authors": "; ".join(_point(r, params) for _, r in g[here & authors].iterrows())})
    out = pd.DataFrame(rows, columns=cols)
    for c in ("epoch", "trials", "reached"):
        out[c] = out[c].astype("int64")
    if "sweep" not in df.columns or df["sweep"].nunique() <= 1:
        out = out.drop(columns="sweep")
    return out


def _arm_order(arms: Sequence[str]) -> List[str]:
    try:
        from search_spaces.ablation import ARMS

        known = [a for a, _ in ARMS]
    except Exception:  # noqa: BLE001 - ordering only
        known = []
    return [a for a in known if a in arms] + sorted(a for a in arms if a not in known)


def ablation_table(trials: pd.DataFrame, metric: str = M.TEST_ACC, baseline: str = "CE", arm: str = "arm",
                   statuses: Optional[Sequence[str]] = (M.FINISHED,)) -> pd.DataFrame:
    """Per ablation arm: ``n, mean, std`` (ddof 1), ``ci95`` (half-width of the t-interval of the mean),
    ``ci_low, ci_high``, ``delta`` (mean - the baseline arm's mean) and ``p_value`` (Welch's t-test
    against the baseline arm; NaN for the baseline itself and where either arm has fewer than 2 values).

    Only search trials whose status is in ``statuses`` (None: all) and whose ``metric`` is finite count.
    Rows follow the arm order of ``search_spaces.ablation``, then other arms by name.
    """
    from scipy import stats

    for col in (arm, metric):
        if col not in trials.columns:
            raise ValueError(f"{col}: not a column of the trials (is this an ablation sweep?); columns: "
                             f"{', '.join(map(str, trials.columns))}")
    df = search_trials(trials)
    if statuses is not None and "status" in df.columns:
        df = df[df["status"].isin(list(statuses))]
    values = pd.to_numeric(df[metric], errors="coerce").astype("float64")
    df = df.assign(_v=values)[np.isfinite(values) & df[arm].notna()]
    groups = {str(k): g["_v"].to_numpy() for k, g in df.groupby(arm, sort=False)}
    base = groups.get(baseline)
    rows = []
    for name in _arm_order(list(groups)):
        v = groups[name]
        n = len(v)
        mean = float(v.mean())
        std = float(v.std(ddof=1)) if n > 1 else math.nan
        half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if n > 1 else math.nan
        delta = mean - float(base.mean()) if base is not None else math.nan
        p = math.nan
        if name != baseline and base is not None and n > 1 and len(base) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # zero variance in both arms: p is NaN
                p = float(stats.ttest_ind(v, base, equal_var=False).pvalue)
        rows.append({arm: name, "n": n, "mean": mean, "std": std, "ci95": half, "ci_low": mean - half,
                     "ci_high": mean + half, "delta": delta, "p_value": p})
    out = pd.DataFrame(rows, columns=[arm, "n", "mean", "std", "ci95", "ci_low", "ci_high", "delta", "p_value"])
    out["n"] = out["n"].astype("int64")
    return out.set_index(arm)


def is_log_scale(values: pd.Series) -> bool:
    """Positive and spanning more than one decade."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(v) and (v > 0).all() and v.max() / v.min() > 10.0)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def marginal_effects(trials: pd.DataFrame, metric: str = M.RANK_VAL_ACC, params: Optional[Sequence[str]] = None,
                     bins: int = 4, statuses: Optional[Sequence[str]] = (M.FINISHED,)) -> pd.DataFrame:
    """How ``metric`` moves with each searched parameter, among search trials of one fidelity at a time.

    Columns: ``epochs`` (the epochs run by the trials of the row: trials are only compared with trials
    that ran as long), ``parameter, kind`` (``categorical``, ``linear`` or ``log``), ``level_or_bin``,
    ``n, mean, std, spearman``. Categorical params: one row per level. Numeric params: the Spearman rank
    correlation with the metric (the same on each of the param's rows) and one row per quantile bin
    (``bins`` bins, on log10 of the values when they are positive and span more than a decade; one
    row per value when there are no more distinct values than bins). Longest fidelity first.

    Args:
        params: parameters to describe; default the searched params that vary (at that fidelity).
        statuses: trials that count (None: all); by default the finished ones, which ran every epoch.
    """
    _check_metric(trials, metric)
    df = search_trials(trials)
    if statuses is not None and "status" in df.columns:
        df = df[df["status"].isin(list(statuses))]
    y = pd.to_numeric(df[metric], errors="coerce").astype("float64")
    df = df.assign(_y=y)[np.isfinite(y)]
    ran = pd.to_numeric(df["epochs_run"], errors="coerce") if "epochs_run" in df.columns else pd.Series(np.nan, index=df.index)
    rows = []
    for epochs in sorted(set(ran.dropna().astype(int)), reverse=True) or [None]:
        same = df[ran == epochs] if epochs is not None else df
        rows += [{"epochs": epochs, **r} for r in _effects(same, params, bins)]
    out = pd.DataFrame(rows, columns=["epochs", "parameter", "kind", "level_or_bin", "n", "mean", "std", "spearman"])
    out["epochs"] = out["epochs"].astype("Int64")
    out["n"] = out["n"].astype("int64")
    for c in ("mean", "std", "spearman"):
        out[c] = out[c].astype("float64")
    return out


def _effects(df: pd.DataFrame, params: Optional[Sequence[str]], bins: int) -> List[dict]:
    """``marginal_effects``' rows for the trials of ``df`` (one fidelity), the metric in column ``_y``."""
    rows = []
    for p in (searched_params(df) if params is None else [c for c in params if c in df.columns]):
        col = df[p]
        sub = df[col.notna()]
        col = col[col.notna()]
        if sub.empty:
            continue
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if not numeric:
            for level, g in sub.groupby(hashable(col), sort=True):
                rows.append({"parameter": p, "kind": "categorical", "level_or_bin": str(level), "n": len(g),
                             "mean": g["_y"].mean(), "std": g["_y"].std(ddof=1), "spearman": np.nan})
            continue
        x = col.astype("float64")
        log = is_log_scale(x)
        rho = x.rank().corr(sub["_y"].rank()) if x.nunique() > 1 and sub["_y"].nunique() > 1 else np.nan
        kind = "log" if log else "linear"
        if x.nunique() <= bins:
            for level, g in sub.groupby(x, sort=True):
                rows.append({"parameter": p, "kind": kind, "level_or_bin": _fmt(level), "n": len(g),
                             "mean": g["_y"].mean(), "std": g["_y"].std(ddof=1), "spearman": rho})
            continue
        t = np.log10(x) if log else x
        codes, edges = pd.qcut(t, q=bins, labels=False, retbins=True, duplicates="drop")
        edges = 10.0 ** edges if log else edges
        for i, g in sub.groupby(codes, sort=True):
            i = int(i)
            label = f"[{_fmt(edges[i])}, {_fmt(edges[i + 1])}{']' if i == len(edges) - 2 else ')'}"
            rows.append({"parameter": p, "kind": kind, "level_or_bin": label, "n": len(g),
                         "mean": g["_y"].mean(), "std": g["_y"].std(ddof=1), "spearman": rho})
    return rows


def pareto_front(trials: pd.DataFrame,
                 objectives: Sequence[Tuple[str, str]] = ((M.RANK_VAL_ACC, "max"), (M.STUDENT_MACS, "min")),
                 statuses: Optional[Sequence[str]] = (M.FINISHED,)) -> pd.DataFrame:
    """The non-dominated search trials under ``objectives`` (``(column, "max"|"min")`` pairs).

    A row is dominated when another is at least as good in every objective and better in one; equal
    points are all kept. Only rows with every objective finite and (when there is a ``status``
    column) a status in ``statuses`` (None: all) take part. Sorted best first by the first objective,
    then by the others.
    """
    if not objectives:
        raise ValueError("objectives: give at least one (column, 'max'|'min') pair")
    for col, mode in objectives:
        _check_metric(trials, col)
        _check_mode(mode)
    df = search_trials(trials)
    if statuses is not None and "status" in df.columns:
        df = df[df["status"].isin(list(statuses))]
    cols = [c for c, _ in objectives]
    vals = df[cols].apply(pd.to_numeric, errors="coerce").astype("float64").to_numpy()
    ok = np.isfinite(vals).all(axis=1)
    df, vals = df[ok], vals[ok]
    signs = np.array([1.0 if m == "max" else -1.0 for _, m in objectives])
    score = vals * signs  # larger is better in every column
    keep = np.ones(len(score), dtype=bool)
    for i in range(len(score)):
        geq = (score >= score[i]).all(axis=1)
        gt = (score > score[i]).any(axis=1)
        keep[i] = not (geq & gt).any()
    front = df[keep]
    return front.sort_values(cols, ascending=[m == "min" for _, m in objectives], kind="stable")
