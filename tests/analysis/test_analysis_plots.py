"""analysis.plots: a Figure on the store's data, None when what a plot needs is missing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from analysis import plots


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
    ("val_acc", lambda t, h: plots.alpha_beta(t)),
    ("run_id", lambda t, h: plots.learning_curves(t, h)),
    ("val_acc", lambda t, h: plots.best_so_far(t)),
    ("start_time", lambda t, h: plots.best_so_far(t)),
    ("student_macs", lambda t, h: plots.pareto(t)),
    ("val_acc", lambda t, h: plots.pareto(t)),
    ("val_acc", lambda t, h: plots.parallel_coordinates(t)),
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
    assert plots.best_so_far(trials.assign(val_acc=np.nan)) is None
    assert plots.parallel_coordinates(trials[["val_acc", "alpha", "status"]]) is None  # one param
    assert plots.pareto(trials.head(1)) is None
    assert plots.alpha_beta(pd.DataFrame()) is None
    # no epochs_run: only the trial-number panel
    fig = plots.best_so_far(trials.drop(columns="epochs_run"))
    assert len(fig.axes) == 1


def test_pareto_plot_is_omitted_when_every_trial_has_the_same_cost():
    import pandas as pd

    from analysis import plots

    same = pd.DataFrame({"val_acc": [80.0, 82.0, 75.0], "student_macs": [11560] * 3, "status": ["finished"] * 3})
    assert plots.pareto(same) is None
    varied = same.assign(student_macs=[11560, 40000, 9000])
    assert plots.pareto(varied) is not None
