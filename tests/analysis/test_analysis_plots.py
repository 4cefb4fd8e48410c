"""analysis.plots: a Figure on the store's data, None when what a plot needs is missing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import plots
from tuner.core import metrics as M

RANK = M.RANK_VAL_ACC


@pytest.fixture(scope="module")
def a(trials_a):
    return trials_a


def test_every_plot_on_full_data(a, trials_b):
    trials, history = a
    for fig in (plots.alpha_beta(trials), plots.learning_curves(trials, history), plots.best_so_far(trials),
                plots.pareto(trials), plots.parallel_coordinates(trials)):
        assert isinstance(fig, Figure)
    abl, abl_history = trials_b
    assert isinstance(plots.parallel_coordinates(abl), Figure)  # arm (categorical) + 0/1 weights + seed
    assert isinstance(plots.learning_curves(abl, abl_history, top=3), Figure)


def test_save_writes_a_png(a, tmp_path):
    path = plots.save(plots.best_so_far(a[0]), tmp_path / "sub" / "best.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


@pytest.mark.parametrize("drop, fn", [
    ("alpha", lambda t, h: plots.alpha_beta(t)),
    ("beta", lambda t, h: plots.alpha_beta(t)),
    (RANK, lambda t, h: plots.alpha_beta(t)),
    ("run_id", lambda t, h: plots.learning_curves(t, h)),
    (RANK, lambda t, h: plots.best_so_far(t)),
    ("start_time", lambda t, h: plots.best_so_far(t)),
    ("student_macs", lambda t, h: plots.pareto(t)),
    (RANK, lambda t, h: plots.pareto(t)),
    (RANK, lambda t, h: plots.parallel_coordinates(t)),
])
def test_missing_columns_give_none(a, drop, fn):
    trials, history = a
    assert fn(trials.drop(columns=drop), history) is None


def test_not_enough_data_gives_none(a):
    trials, history = a
    assert plots.learning_curves(trials, None) is None
    assert plots.learning_curves(trials, history[history["metric"] != "val_acc"]) is None
    assert plots.learning_curves(trials, history.iloc[0:0]) is None
    one_point = trials.assign(alpha=1.0, beta=1.0)
    assert plots.alpha_beta(one_point) is None
    assert plots.alpha_beta(trials.assign(alpha=0.0)) is None  # no positive weights for log axes
    assert plots.best_so_far(trials.assign(**{RANK: np.nan})) is None
    assert plots.parallel_coordinates(trials[[RANK, "alpha", "status"]]) is None  # one param
    assert plots.pareto(trials.head(1)) is None
    assert plots.alpha_beta(pd.DataFrame()) is None
    # no epochs_run: only the trial-number panel
    fig = plots.best_so_far(trials.drop(columns="epochs_run"))
    assert len(fig.axes) == 1


def test_pareto_plot_is_omitted_when_every_trial_has_the_same_cost():
    same = pd.DataFrame({RANK: [80.0, 82.0, 75.0], "student_macs": [11560] * 3, "status": ["finished"] * 3})
    assert plots.pareto(same) is None
    varied = same.assign(student_macs=[11560, 40000, 9000])
    assert plots.pareto(varied) is not None


def _legend_texts(fig) -> set:
    """Every legend entry of a figure: the axes' legends (also those kept as artists) and the figure's."""
    legends = list(fig.legends)
    for ax in fig.axes:
        legends += [ax.get_legend()] + [a for a in ax.artists if hasattr(a, "get_texts")]
    return {t.get_text() for legend in legends if legend is not None for t in legend.get_texts()}


def test_stopped_and_finished_are_marked_and_accuracy_is_in_percent(a):
    from matplotlib.ticker import PercentFormatter

    trials, history = a
    ab = plots.alpha_beta(trials)
    assert {"finished", "stopped early (fewer epochs: not coloured)"} <= _legend_texts(ab)
    assert any(isinstance(ax.yaxis.get_major_formatter(), PercentFormatter) for ax in ab.axes)  # the colour bar

    curves = plots.learning_curves(trials, history, top=3)
    styles = {line.get_linestyle() for line in curves.axes[0].get_lines()}
    assert {"-", "--"} <= styles  # finished trials solid, stopped ones dashed
    assert {"finished", "stopped early"} <= _legend_texts(curves)
    assert isinstance(curves.axes[0].yaxis.get_major_formatter(), PercentFormatter)

    best = plots.best_so_far(trials)
    assert {"finished", "stopped early", "best finished so far"} <= _legend_texts(best)
    assert all(isinstance(ax.yaxis.get_major_formatter(), PercentFormatter) for ax in best.axes)

    front = plots.pareto(trials)
    assert {"finished", "stopped early"} <= _legend_texts(front)
    assert isinstance(front.axes[0].yaxis.get_major_formatter(), PercentFormatter)
    assert not isinstance(front.axes[0].xaxis.get_major_formatter(), PercentFormatter)  # MACs are not accuracy

    par = plots.parallel_coordinates(trials)
    assert {"finished", "stopped early"} <= _legend_texts(par)
    assert any(t.get_text().endswith("%") for t in par.axes[0].texts)  # the metric axis' ticks


def test_plots_show_search_trials_only(a):
    """The confirmation runs (alpha 2 beta 3, 0.5 2, 1 1, 0 0, several seeds each) are not points of the search."""
    trials, history = a
    search = trials[trials["stage"] == "search"]
    fig = plots.alpha_beta(trials)
    points = sum(len(c.get_offsets()) for c in fig.axes[0].collections)
    assert points == len(search) + 1  # every search trial, and the ring around the first
    curves = plots.learning_curves(trials, history, top=100)
    assert len(curves.axes[0].get_lines()) == len(search)


def test_one_fidelity_is_coloured_and_the_recommendation_is_marked_where_configurations_are_shown(a):
    """Stopped trials ran fewer epochs: they stay off the colour scale; the verdict's pick is starred (alpha-beta),
    drawn gold (parallel coordinates) and its seeds shown with their interval (the confirmation figure)."""
    from analysis.confirm_plot import confirmation
    from analysis.confirm_views import verdict_table
    from analysis.tables import search_trials

    trials, _ = a
    search = search_trials(trials)
    finished = search[search["status"] == "finished"][RANK]
    verdict, table = verdict_table(trials)
    rec = verdict.config(verdict.recommended)

    ab = plots.alpha_beta(trials, verdict=verdict)
    coloured = [c for c in ab.axes[0].collections if c.get_array() is not None]
    assert coloured and all((c.norm.vmin, c.norm.vmax) == (finished.min(), finished.max()) for c in coloured)
    star = [t for t in _legend_texts(ab) if t.startswith("recommended: ")]
    assert star == [f"recommended: {rec.label}, confirmed over {rec.n} seeds ({rec.metrics[RANK].mean:.4g}%)"], star
    assert any(t.startswith("search rank 1, 1 seed (") for t in _legend_texts(ab))

    par = plots.parallel_coordinates(trials, verdict=verdict)
    bar = par.axes[-1]  # the colour bar: the finished trials' range only
    assert bar.get_ylim() == pytest.approx((finished.min(), finished.max()))

    fig = confirmation(verdict)
    dots = [c for c in fig.axes[0].collections if len(c.get_offsets())]
    assert sum(len(c.get_offsets()) for c in dots) >= sum(c.n for c in verdict.configs)  # every seed, and the means
    top = max(fig.axes[0].get_yticklabels(), key=lambda t: t.get_position()[1]).get_text()
    assert top.startswith(f"{rec.label} (") and "recommended" in top, top
    assert confirmation(None) is None


def test_every_figure_of_configurations_marks_the_recommendation(a):
    """With the verdict recommending the reference (1, 1), the search trial lw_00001 at (1, 1) is gold in the learning
    curves and the parallel coordinates and starred in the running best and the Pareto plane; without a verdict none is."""
    import dataclasses

    from analysis.confirm_views import verdict_table

    trials, history = a
    verdict = dataclasses.replace(verdict_table(trials)[0], recommended="ref")
    rec = verdict.config("ref")
    label = f"recommended: {rec.label}, confirmed over {rec.n} seeds ({rec.metrics[RANK].mean:.4g}%)"
    at_rec = trials[(trials["stage"] == "search") & (trials["alpha"] == 1.0) & (trials["beta"] == 1.0)]
    assert list(at_rec["trial_id"]) == ["lw_00001"]
    curve = history[(history["run_id"] == at_rec["run_id"].iloc[0]) & (history["metric"] == M.VAL_ACC)]

    figs = {"curves": plots.learning_curves(trials, history, verdict=verdict),
            "best": plots.best_so_far(trials, verdict=verdict), "pareto": plots.pareto(trials, verdict=verdict),
            "parallel": plots.parallel_coordinates(trials, verdict=verdict)}
    for name, fig in figs.items():
        assert label in _legend_texts(fig), (name, _legend_texts(fig))
    gold = [ln for ln in figs["curves"].axes[0].get_lines() if ln.get_color() == "goldenrod"]
    assert len(gold) == 1 and list(gold[0].get_ydata()) == list(curve.sort_values("epoch")["value"])
    stars = [c for c in figs["best"].axes[0].collections if c.get_label() == label]
    assert len(stars) == 1 and stars[0].get_offsets()[0][1] == pytest.approx(at_rec[RANK].iloc[0])
    mean_line = [ln for ln in figs["best"].axes[0].get_lines() if ln.get_label().startswith("its confirmed mean")]
    assert len(mean_line) == 1 and mean_line[0].get_ydata()[0] == pytest.approx(rec.metrics[RANK].mean)
    for fn in (lambda: plots.learning_curves(trials, history), lambda: plots.best_so_far(trials),
               lambda: plots.pareto(trials), lambda: plots.parallel_coordinates(trials)):
        assert not any(t.startswith("recommended") for t in _legend_texts(fn()))
