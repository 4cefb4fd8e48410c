"""Tables over ``load_trials``'s frame: leaderboard, ablation statistics, marginal effects, Pareto front.

DataFrame in, DataFrame out; no I/O. scipy (a dependency of scikit-learn) is imported lazily.
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from tuner import metrics as M

__all__ = ["SEARCHED_PARAMS", "searched_params", "leaderboard", "ablation_table", "marginal_effects",
           "pareto_front", "status_counts", "is_log_scale"]

#: params that a search space may vary (search_spaces/: loss weights, connector, student, recipe, ablation)
SEARCHED_PARAMS = ("alpha", "beta", "gamma", "connector", "student", "lr", "weight_decay", "arm", "seed")
_MODES = ("max", "min")


def _hashable(s: pd.Series) -> pd.Series:
    return s.map(lambda v: str(v) if isinstance(v, (list, dict, tuple)) else v)


def searched_params(trials: pd.DataFrame, candidates: Sequence[str] = SEARCHED_PARAMS) -> List[str]:
    """The ``candidates`` that are columns of ``trials`` and take more than one value there."""
    return [c for c in candidates if c in trials.columns and _hashable(trials[c]).nunique(dropna=True) > 1]


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
    order = [s for s in ("finished", "stopped_early", "diverged", "errored", "running") if s in table.columns]
    table = table[order + sorted(set(table.columns) - set(order))]
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table


def leaderboard(trials: pd.DataFrame, metric: str = M.VAL_ACC, top: Optional[int] = 10,
                mode: str = "max") -> pd.DataFrame:
    """The ``top`` trials by ``metric`` (best first; missing values last), indexed by rank from 1.

    Columns: ``sweep`` (when there are several), ``trial_id, status, epochs_run``, the searched params
    that vary, then ``best_val_acc, val_acc, test_acc`` (those present) and ``metric``.
    """
    _check_metric(trials, metric)
    _check_mode(mode)
    cols = (["sweep"] if "sweep" in trials.columns and trials["sweep"].nunique() > 1 else [])
    cols += [c for c in ("trial_id", "status", "epochs_run") if c in trials.columns]
    cols += searched_params(trials)
    cols += [c for c in (M.BEST_VAL_ACC, M.VAL_ACC, M.TEST_ACC) if c in trials.columns and c not in cols]
    if metric not in cols:
        cols.append(metric)
    out = trials.sort_values(metric, ascending=(mode == "min"), na_position="last", kind="stable")[cols]
    if top is not None:
        out = out.head(top)
    out = out.reset_index(drop=True)
    out.index = pd.RangeIndex(1, len(out) + 1, name="rank")
    return out


def _arm_order(arms: Sequence[str]) -> List[str]:
    try:
        from search_spaces.ablation import ARMS

        known = [a for a, _ in ARMS]
    except Exception:  # noqa: BLE001 - ordering only
        known = []
    return [a for a in known if a in arms] + sorted(a for a in arms if a not in known)


def ablation_table(trials: pd.DataFrame, metric: str = M.TEST_ACC, baseline: str = "CE", arm: str = "arm",
                   statuses: Optional[Sequence[str]] = ("finished",)) -> pd.DataFrame:
    """Per ablation arm: ``n, mean, std`` (ddof 1), ``ci95`` (half-width of the t-interval of the mean),
    ``ci_low, ci_high``, ``delta`` (mean - the baseline arm's mean) and ``p_value`` (Welch's t-test
    against the baseline arm; NaN for the baseline itself and where either arm has fewer than 2 values).

    Only trials whose status is in ``statuses`` (None: all) and whose ``metric`` is finite count.
    Rows follow the arm order of ``search_spaces.ablation``, then other arms by name.
    """
    from scipy import stats

    for col in (arm, metric):
        if col not in trials.columns:
            raise ValueError(f"{col}: not a column of the trials (is this an ablation sweep?); columns: "
                             f"{', '.join(map(str, trials.columns))}")
    df = trials
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


def marginal_effects(trials: pd.DataFrame, metric: str = M.VAL_ACC, params: Optional[Sequence[str]] = None,
                     bins: int = 4, statuses: Optional[Sequence[str]] = ("finished", "stopped_early")) -> pd.DataFrame:
    """How ``metric`` moves with each searched parameter, as one tidy frame.

    Columns: ``parameter, kind`` (``categorical``, ``linear`` or ``log``), ``level_or_bin``, ``n, mean,
    std, spearman``. Categorical params: one row per level. Numeric params: the Spearman rank
    correlation with the metric (the same on each of the param's rows) and one row per quantile bin
    (``bins`` bins, on log10 of the values when they are positive and span more than a decade; one
    row per value when there are no more distinct values than bins).

    Args:
        params: parameters to describe; default the searched params that vary.
        statuses: trials that count (None: all); diverged and errored trials are left out by default.
    """
    _check_metric(trials, metric)
    df = trials
    if statuses is not None and "status" in df.columns:
        df = df[df["status"].isin(list(statuses))]
    y = pd.to_numeric(df[metric], errors="coerce").astype("float64")
    df = df.assign(_y=y)[np.isfinite(y)]
    rows = []
    for p in (searched_params(df) if params is None else [c for c in params if c in df.columns]):
        col = df[p]
        sub = df[col.notna()]
        col = col[col.notna()]
        if sub.empty:
            continue
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if not numeric:
            for level, g in sub.groupby(_hashable(col), sort=True):
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
    out = pd.DataFrame(rows, columns=["parameter", "kind", "level_or_bin", "n", "mean", "std", "spearman"])
    out["n"] = out["n"].astype("int64")
    for c in ("mean", "std", "spearman"):
        out[c] = out[c].astype("float64")
    return out


def pareto_front(trials: pd.DataFrame,
                 objectives: Sequence[Tuple[str, str]] = ((M.VAL_ACC, "max"), (M.STUDENT_MACS, "min")),
                 statuses: Optional[Sequence[str]] = ("finished",)) -> pd.DataFrame:
    """The non-dominated rows of ``trials`` under ``objectives`` (``(column, "max"|"min")`` pairs).

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
    df = trials
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
