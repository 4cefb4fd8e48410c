"""Figures over ``load_trials`` / ``load_history`` frames; each returns a matplotlib ``Figure`` or None.

Every plot shows search-stage trials only, ranks them by ``rank_val_acc`` (``tables.ranking_order``),
marks how each ended (finished or stopped early: marker or line style, with a legend) and shows
accuracies in percent. None means the frame lacks what the plot needs (a column, finite values,
enough points); callers skip it. Figures are built with ``matplotlib.figure.Figure`` on the Agg
canvas: no pyplot state, no display needed. matplotlib is imported inside the functions.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from analysis._format import fmt_value
from analysis.tables import configurations, is_log_scale, pareto_front, ranking_order, search_trials, searched_params
from tuner.core import metrics as M

__all__ = ["alpha_beta", "learning_curves", "best_so_far", "pareto", "parallel_coordinates", "save", "STYLES"]

_CMAP = "viridis"
#: status -> (marker, line style, legend label); diverged, errored and stalled trials (``_BAD``) are drawn grey
STYLES = {M.FINISHED: ("o", "-", M.FINISHED), M.STOPPED_EARLY: ("v", "--", "stopped early"), M.RUNNING: ("s", ":", M.RUNNING),
          M.DIVERGED: ("X", "-.", M.DIVERGED), M.ERRORED: ("P", "-.", M.ERRORED), M.STALLED: ("D", "-.", M.STALLED)}
_BAD = (M.DIVERGED, M.ERRORED, M.STALLED)


def _figure(width: float = 7.0, height: float = 5.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Union[str, Path], dpi: int = 110) -> Path:
    """Write ``fig`` as PNG (or whatever the suffix says) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _has(df: Optional[pd.DataFrame], *cols: str) -> bool:
    return df is not None and not df.empty and all(c in df.columns for c in cols)


def _num(s: pd.Series) -> pd.Series:
    return pd.to_numeric(s, errors="coerce").astype("float64")


def _status(df: pd.DataFrame) -> pd.Series:
    return df["status"].astype(str) if "status" in df.columns else pd.Series(M.FINISHED, index=df.index)


def _is_acc(metric: str) -> bool:
    return metric.endswith("_acc")  # val_acc, rank_val_acc, best_val_acc, test_acc: percent


def _percent(axis: Any, metric: str) -> None:
    """Tick labels in percent on an accuracy axis (the values already are percentages)."""
    if _is_acc(metric):
        from matplotlib.ticker import PercentFormatter

        axis.set_major_formatter(PercentFormatter(xmax=100))


def _style_legend(ax: Any, statuses: Sequence[str], lines: bool, **kwargs: Any) -> Any:
    """A legend of how trials ended: one entry per status present, as its marker or line style."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.3", ls=STYLES[s][1] if lines else "none", marker=None if lines else STYLES[s][0],
                      label=STYLES[s][2]) for s in STYLES if s in set(statuses)]
    return ax.legend(handles=handles, **kwargs)


def alpha_beta(trials: pd.DataFrame, metric: str = M.RANK_VAL_ACC, verdict: Any = None) -> Optional[Any]:
    """``metric`` over the (alpha, beta) plane, log axes; colour = metric, marker = how the trial ended.

    Only finished trials are on the colour scale (one fidelity: trials stopped early ran fewer epochs and
    are drawn hollow, grey, diverged and errored ones grey crosses); the search's rank 1 is ringed, the
    verdict's recommendation (a ``tuner.core.verdict.Verdict``) starred, the authors' points labelled.
    None without ``alpha``, ``beta`` and ``metric`` columns, or with fewer than two distinct positive
    (alpha, beta) points.
    """
    trials = search_trials(trials)
    if not _has(trials, "alpha", "beta", metric):
        return None
    df = trials.assign(_a=_num(trials["alpha"]), _b=_num(trials["beta"]), _y=_num(trials[metric]), _s=_status(trials))
    df = df[(df["_a"] > 0) & (df["_b"] > 0)]
    if len(df[["_a", "_b"]].drop_duplicates()) < 2:
        return None
    good = df[~df["_s"].isin(_BAD) & np.isfinite(df["_y"])]
    if good.empty:
        return None
    from matplotlib.colors import Normalize

    coloured = good[good["_s"] == M.FINISHED]
    scale = coloured if not coloured.empty else good  # nothing finished yet: the one fidelity there is
    norm = Normalize(vmin=scale["_y"].min(), vmax=scale["_y"].max())
    fig = _figure()
    ax = fig.add_subplot()
    sc = None
    for status, (marker, _, label) in STYLES.items():
        part = df[df["_s"] == status]
        if part.empty:
            continue
        if status in _BAD:
            ax.scatter(part["_a"], part["_b"], marker=marker, c="0.6", s=45, label=label)
            continue
        part = part[np.isfinite(part["_y"])]
        if part.index.isin(scale.index).all():
            sc = ax.scatter(part["_a"], part["_b"], c=part["_y"], cmap=_CMAP, norm=norm, marker=marker, s=55,
                            edgecolors="k", linewidths=0.4, label=label)
        else:  # another fidelity (fewer epochs): its values would mislead on the finished trials' scale
            ax.scatter(part["_a"], part["_b"], marker=marker, s=55, facecolors="none", edgecolors="0.45",
                       linewidths=0.8, label=f"{label} (fewer epochs: not coloured)")
    ranked = configurations(good)  # a raced sweep: its configurations, each at its mean over seeds
    best = ranking_order(ranked if ranked is good else ranked.assign(_y=_num(ranked[metric])), "_y").iloc[0]
    ax.scatter([best["_a"]], [best["_b"]], s=240, facecolors="none", edgecolors="red", linewidths=1.5,
               label=f"search rank 1, {_seeds(best)} ({fmt_value(best['_y'])}{'%' if _is_acc(metric) else ''})")
    rec = _recommended(verdict)
    if rec is not None and all(_positive(rec.params.get(k)) for k in ("alpha", "beta")):
        ax.scatter([rec.params["alpha"]], [rec.params["beta"]], marker="*", s=320, c="gold", edgecolors="k",
                   linewidths=0.8, zorder=4, label=_rec_label(rec))
    if "origin" in df.columns:
        for _, row in df[df["origin"] == "authors"].iterrows():
            ax.annotate("authors", (row["_a"], row["_b"]), fontsize=7, xytext=(5, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("alpha (feature matching weight)")
    ax.set_ylabel("beta (softmax regression weight)")
    ax.set_title(f"{metric} over alpha x beta")
    ax.grid(True, which="major", alpha=0.3)
    if sc is not None:
        bar = fig.colorbar(sc, ax=ax, label=metric)
        _percent(bar.ax.yaxis, metric)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    return fig


def _recommended(verdict: Any) -> Any:
    return verdict.config(verdict.recommended) if verdict is not None else None


def _rec_label(rec: Any) -> str:
    """The legend entry of the recommendation: its label, seeds and confirmed mean (one wording in every figure)."""
    iv = rec.metrics.get(M.RANK_VAL_ACC)
    return f"recommended: {rec.label}, confirmed over {rec.n} seeds" + (f" ({fmt_value(iv.mean)}%)" if iv else "")


def _at_recommended(df: pd.DataFrame, rec: Any) -> np.ndarray:
    """Mask of the rows of ``df`` (search trials) at the recommendation's searched values; none without one."""
    if rec is None or not rec.params or any(p not in df.columns for p in rec.params):
        return np.zeros(len(df), bool)
    return np.logical_and.reduce([(df[p] == v).to_numpy() for p, v in rec.params.items()])


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _seeds(row: pd.Series) -> str:
    n = int(row["seeds"]) if isinstance(row.get("seeds"), (int, float, np.number)) and np.isfinite(row["seeds"]) else 1
    return "1 seed" if n == 1 else f"mean of {n} seeds"


def _label(row: pd.Series, params: Sequence[str]) -> str:
    parts = []
    for p in params:
        v = row.get(p)
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        parts.append(f"{p}={v:.3g}" if isinstance(v, (float, np.floating)) else f"{p}={v}")
    text = ", ".join(parts)
    return f"{row['trial_id']} ({text})" if text else str(row["trial_id"])


def learning_curves(trials: pd.DataFrame, history: Optional[pd.DataFrame], metric: str = M.VAL_ACC,
                    top: int = 8, rank_by: str = M.RANK_VAL_ACC, verdict: Any = None) -> Optional[Any]:
    """``metric`` against epoch: the ``top`` search trials in leaderboard order (by ``rank_by``, falling
    back to ``metric`` where it was not logged) in colour, the other trials thin and grey, the trials at the
    verdict's recommendation thick and gold; line style = how the trial ended. None without history of
    ``metric`` for those trials."""
    trials = search_trials(trials)
    if not _has(trials, "run_id", "trial_id") or not _has(history, "run_id", "metric", "epoch", "value"):
        return None
    if rank_by not in trials.columns or not trials[rank_by].notna().any():
        rank_by = metric
    if rank_by not in trials.columns:
        return None
    h = history[history["metric"] == metric]
    ranked = trials.assign(_r=_num(trials[rank_by]))
    ranked = ranked[ranked["run_id"].isin(set(h["run_id"]))]
    shown = ranking_order(ranked[np.isfinite(ranked["_r"])], "_r").head(top)
    if shown.empty:
        return None
    params = searched_params(trials)
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    curves = {rid: g.sort_values("epoch") for rid, g in h.groupby("run_id", sort=False)}
    for _, row in ranked[~ranked["run_id"].isin(set(shown["run_id"]))].iterrows():
        c = curves[row["run_id"]]
        ax.plot(c["epoch"], c["value"], c="0.75", lw=0.8, ls=STYLES.get(row.get("status"), STYLES[M.RUNNING])[1])
    for _, row in shown.iterrows():
        c = curves[row["run_id"]]
        ax.plot(c["epoch"], c["value"], marker=".", lw=1.4, ls=STYLES.get(row.get("status"), STYLES[M.RUNNING])[1],
                label=_label(row, params))
    rec = _recommended(verdict)
    for n, (_, row) in enumerate(ranked[_at_recommended(ranked, rec)].iterrows()):
        c = curves[row["run_id"]]
        ax.plot(c["epoch"], c["value"], c="goldenrod", lw=3.5, alpha=0.6, zorder=1, label=None if n else _rec_label(rec))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    _percent(ax.yaxis, metric)
    ax.set_title(f"learning curves, the top {len(shown)} trials by {rank_by} in colour")
    ax.grid(True, alpha=0.3)
    ax.add_artist(ax.legend(fontsize=7, loc="lower right"))
    _style_legend(ax, list(_status(ranked)), lines=True, fontsize=7, loc="upper left")
    return fig


def best_so_far(trials: pd.DataFrame, metric: str = M.RANK_VAL_ACC, verdict: Any = None) -> Optional[Any]:
    """Running best of ``metric`` over the finished search trials (stopped ones ran fewer epochs: they are
    shown, not compared) against trial number (start order) and, when ``epochs_run`` is there, against
    the cumulative epochs spent by every trial; the trials at the verdict's recommendation starred, its
    confirmed mean a gold line. None without finite values."""
    trials = search_trials(trials)
    if not _has(trials, metric, "start_time"):
        return None
    df = trials.sort_values("start_time", kind="stable")
    y = _num(df[metric]).to_numpy()
    if not np.isfinite(y).any():
        return None
    status = _status(df).to_numpy()
    full = np.isfinite(y) & (status == M.FINISHED)
    best = pd.Series(np.where(full, y, -np.inf)).cummax().replace(-np.inf, np.nan).to_numpy()
    n = np.arange(1, len(y) + 1)
    rec = _recommended(verdict)
    at_rec, confirmed = _at_recommended(df, rec), rec.metrics.get(M.RANK_VAL_ACC) if rec is not None else None
    panels: List[Tuple[np.ndarray, str]] = [(n, "trial number (by start time)")]
    if "epochs_run" in df.columns:
        panels.append((np.cumsum(_num(df["epochs_run"]).fillna(0).to_numpy()), "cumulative epochs trained"))
    fig = _figure(5.0 * len(panels) + 1.0, 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (x, label) in zip(axes, panels):
        for s, (marker, _, name) in STYLES.items():
            part = status == s
            if part.any():
                ax.scatter(x[part], y[part], s=16, marker=marker, c="0.55" if s != M.FINISHED else "C1",
                           label=f"{name}")
        ax.step(x, best, where="post", c="C0", lw=2, label="best finished so far")
        if at_rec.any():
            ax.scatter(x[at_rec], y[at_rec], marker="*", s=200, c="gold", edgecolors="k", linewidths=0.8, zorder=4,
                       label=_rec_label(rec))
        if confirmed is not None and metric == M.RANK_VAL_ACC:
            ax.axhline(confirmed.mean, c="goldenrod", ls=":", lw=1.5, label=f"its confirmed mean, {rec.n} seeds")
        ax.set_xlabel(label)
        ax.set_ylabel(metric)
        _percent(ax.yaxis, metric)
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"running best of {metric} over the finished trials")
    return fig


def pareto(trials: pd.DataFrame,
           objectives: Sequence[Tuple[str, str]] = ((M.RANK_VAL_ACC, "max"), (M.STUDENT_MACS, "min")),
           verdict: Any = None) -> Optional[Any]:
    """Every search trial in the plane of two objectives (x: the second, y: the first; marker = how it
    ended), the Pareto front of the finished ones as a step line and the verdict's recommendation starred.
    None without both columns, with fewer than two points, or when every trial has the same cost (one
    student: no trade-off to show)."""
    trials = search_trials(trials)
    if len(objectives) != 2:
        return None
    (ycol, ymode), (xcol, xmode) = objectives
    if not _has(trials, xcol, ycol):
        return None
    df = trials.assign(_x=_num(trials[xcol]), _y=_num(trials[ycol]), _s=_status(trials))
    df = df[np.isfinite(df["_x"]) & np.isfinite(df["_y"]) & ~df["_s"].isin(_BAD)]
    if len(df) < 2 or df["_x"].nunique() < 2:
        return None
    front = pareto_front(trials, objectives)
    fig = _figure()
    ax = fig.add_subplot()
    for s, (marker, _, name) in STYLES.items():
        part = df[df["_s"] == s]
        if not part.empty:
            ax.scatter(part["_x"], part["_y"], s=22, marker=marker, c="0.6", label=name)
    if not front.empty:
        f = front.assign(_x=_num(front[xcol]), _y=_num(front[ycol])).sort_values("_x")
        ax.step(f["_x"], f["_y"], where="post" if xmode == "min" else "pre", c="C3", lw=1.5)
        ax.scatter(f["_x"], f["_y"], s=45, c="C3", zorder=3, label=f"Pareto front of the finished ({len(f)})")
        if "student" in f.columns:
            for _, row in f.iterrows():
                ax.annotate(str(row["student"]), (row["_x"], row["_y"]), fontsize=7, xytext=(4, -10),
                            textcoords="offset points")
    rec = _recommended(verdict)
    at_rec = df[_at_recommended(df, rec)]
    if not at_rec.empty:
        ax.scatter(at_rec["_x"], at_rec["_y"], marker="*", s=260, c="gold", edgecolors="k", linewidths=0.8, zorder=4,
                   label=_rec_label(rec))
    if is_log_scale(df["_x"]):
        ax.set_xscale("log")
    ax.set_xlabel(f"{xcol} ({xmode})")
    ax.set_ylabel(f"{ycol} ({ymode})")
    _percent(ax.yaxis, ycol)
    _percent(ax.xaxis, xcol)
    ax.set_title(f"{ycol} vs {xcol}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def _encode(col: pd.Series) -> Tuple[np.ndarray, List[Tuple[float, str]]]:
    """Values scaled to [0, 1] and (position, label) ticks: categoricals by sorted level, numbers
    linearly or on log10 when positive over more than a decade."""
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if not numeric:
        text = col.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        levels = sorted(set(text.dropna()))
        pos = {lv: (i / (len(levels) - 1) if len(levels) > 1 else 0.5) for i, lv in enumerate(levels)}
        return text.map(pos).astype("float64").to_numpy(), [(pos[lv], lv) for lv in levels]
    x = _num(col)
    log = is_log_scale(x)
    t = np.log10(x.where(x > 0)) if log else x
    lo, hi = t.min(), t.max()
    span = hi - lo if hi > lo else 1.0
    scaled = ((t - lo) / span).to_numpy() if hi > lo else np.where(t.notna(), 0.5, np.nan)
    raw = (lambda v: 10.0 ** v) if log else (lambda v: v)
    ticks = [(0.0, f"{raw(lo):.3g}"), (1.0, f"{raw(hi):.3g}")] if hi > lo else [(0.5, f"{raw(lo):.3g}")]
    return scaled, ticks


def parallel_coordinates(trials: pd.DataFrame, metric: str = M.RANK_VAL_ACC,
                         params: Optional[Sequence[str]] = None, verdict: Any = None) -> Optional[Any]:
    """One polyline per search trial across the searched params (each axis scaled to [0, 1], categoricals
    as evenly spaced levels) and ``metric`` last; colour = metric for the finished trials only (one
    fidelity; trials stopped early are grey), line style = how the trial ended; the search trials at the
    verdict's recommended configuration are drawn thick and gold. None with fewer than two varying params
    or no finite metric."""
    trials = search_trials(trials)
    if not _has(trials, metric):
        return None
    params = list(params) if params is not None else searched_params(trials)
    params = [p for p in params if p in trials.columns]
    df = trials.assign(_y=_num(trials[metric]))
    df = df[np.isfinite(df["_y"]) & ~_status(df).isin(_BAD)]
    if len(params) < 2 or len(df) < 2:
        return None
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    axes_cols = params + [metric]
    encoded, ticks = [], []
    for c in axes_cols:
        v, t = _encode(df[c] if c != metric else df["_y"])
        encoded.append(v)
        ticks.append([(pos, f"{label}%") for pos, label in t] if c == metric and _is_acc(metric) else t)
    data = np.column_stack(encoded)  # (trials, axes)
    xs = np.arange(len(axes_cols), dtype=float)
    status = _status(df).to_numpy()
    finished = status == M.FINISHED if (status == M.FINISHED).any() else np.ones(len(df), bool)
    y = df["_y"].to_numpy()
    norm = Normalize(vmin=y[finished].min(), vmax=y[finished].max())
    fig = _figure(max(6.0, 1.6 * len(axes_cols)), 4.8)
    ax = fig.add_subplot()
    other = [i for i in np.argsort(y) if not finished[i]]
    if other:  # another fidelity (fewer epochs): grey, off the colour scale
        ax.add_collection(LineCollection([np.column_stack([xs, data[i]]) for i in other], colors="0.7", linewidths=1.0,
                                         linestyles=[STYLES.get(status[i], STYLES[M.RUNNING])[1] for i in other]))
    order = [i for i in np.argsort(y) if finished[i]]  # best drawn last, on top
    lines = LineCollection([np.column_stack([xs, data[i]]) for i in order], cmap=_CMAP, norm=norm, linewidths=1.2,
                           alpha=0.8, linestyles=[STYLES.get(status[i], STYLES[M.RUNNING])[1] for i in order])
    lines.set_array(y[order])
    ax.add_collection(lines)
    rec = _recommended(verdict)
    at_rec = np.flatnonzero(_at_recommended(df, rec))
    for n, i in enumerate(at_rec):
        ax.plot(xs, data[i], c="goldenrod", lw=3.5, alpha=0.9, zorder=3, label=None if n else _rec_label(rec))
    for x, t in zip(xs, ticks):
        ax.axvline(x, c="0.3", lw=0.8)
        for pos, label in t:
            ax.text(x + 0.03, pos, label, fontsize=7, va="center", ha="left",
                    bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 0.5})
    ax.set_xlim(-0.2, xs[-1] + 0.5)
    ax.set_ylim(-0.06, 1.06)
    ax.set_xticks(xs, axes_cols)
    ax.set_yticks([])
    ax.set_title(f"searched params, coloured by {metric}" + (" (finished trials; stopped ones grey)" if other else ""))
    bar = fig.colorbar(lines, ax=ax, label=metric)
    _percent(bar.ax.yaxis, metric)
    if len(at_rec):
        ax.add_artist(ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0.0, 1.06)))
    _style_legend(ax, list(status), lines=True, fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.08), ncols=4)
    return fig
