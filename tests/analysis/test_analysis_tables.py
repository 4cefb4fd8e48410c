"""analysis.tables on hand-made frames with known answers (no MLflow)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.tables import ablation_table, leaderboard, marginal_effects, pareto_front, searched_params, status_counts

T975 = {2: 4.302652729911275, 3: 3.182446305284263}  # Student t quantiles (0.975; df 2 and 3), from tables


def _welch_p(a, b) -> float:
    """Welch's t-test p-value, written out: t, Welch-Satterthwaite df, two-sided t tail."""
    from scipy.stats import t as student_t

    a, b = np.asarray(a, float), np.asarray(b, float)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return 2 * student_t.sf(abs(t), df)


@pytest.fixture
def ablation_frame() -> pd.DataFrame:
    rows = [("CE", v) for v in (70.0, 71.0, 72.0)]  # mean 71, std 1
    rows += [("CE+SR", v) for v in (73.0, 75.0, 74.0, 76.0)]  # mean 74.5, std sqrt(5/3)
    rows += [("CE+FM", v) for v in (72.0, 72.5)]
    rows += [("CE+KD", 80.0)]  # one value: no std, CI or p
    df = pd.DataFrame(rows, columns=["arm", "test_acc"]).assign(status="finished")
    extra = pd.DataFrame({"arm": ["CE", "CE+SR", "CE"], "test_acc": [10.0, 10.0, np.nan],
                          "status": ["stopped_early", "errored", "finished"]})
    return pd.concat([df, extra], ignore_index=True)


def test_ablation_statistics(ablation_frame):
    table = ablation_table(ablation_frame)
    assert list(table.index) == ["CE", "CE+FM", "CE+SR", "CE+KD"]  # search_spaces.ablation's arm order
    ce, sr, kd = table.loc["CE"], table.loc["CE+SR"], table.loc["CE+KD"]
    assert ce["n"] == 3 and ce["mean"] == pytest.approx(71.0) and ce["std"] == pytest.approx(1.0)
    assert ce["ci95"] == pytest.approx(T975[2] * 1.0 / math.sqrt(3))
    assert ce["ci_low"] == pytest.approx(71.0 - ce["ci95"]) and ce["ci_high"] == pytest.approx(71.0 + ce["ci95"])
    assert ce["delta"] == 0.0 and math.isnan(ce["p_value"])
    assert sr["n"] == 4 and sr["mean"] == pytest.approx(74.5) and sr["std"] == pytest.approx(math.sqrt(5 / 3))
    assert sr["ci95"] == pytest.approx(T975[3] * math.sqrt(5 / 3) / 2)
    assert sr["delta"] == pytest.approx(3.5)
    assert sr["p_value"] == pytest.approx(_welch_p([73, 75, 74, 76], [70, 71, 72]))
    assert table.loc["CE+FM", "p_value"] == pytest.approx(_welch_p([72, 72.5], [70, 71, 72]))
    assert kd["n"] == 1 and kd["delta"] == pytest.approx(9.0)
    assert math.isnan(kd["std"]) and math.isnan(kd["ci95"]) and math.isnan(kd["p_value"])
    assert table["n"].dtype == np.int64


def test_ablation_other_metric_baseline_and_statuses(ablation_frame):
    all_statuses = ablation_table(ablation_frame, statuses=None)
    assert all_statuses.loc["CE", "n"] == 4  # the stopped-early 10.0 counts now; NaN never does
    vs_sr = ablation_table(ablation_frame, baseline="CE+SR")
    assert math.isnan(vs_sr.loc["CE+SR", "p_value"]) and vs_sr.loc["CE", "delta"] == pytest.approx(-3.5)
    no_base = ablation_table(ablation_frame, baseline="nope")
    assert no_base["delta"].isna().all() and no_base["p_value"].isna().all()
    with pytest.raises(ValueError, match="arm"):
        ablation_table(ablation_frame.drop(columns="arm"))


def test_ablation_on_the_store(trials_b):
    from _analysis_store import ARM_MEANS, abl_acc

    trials, _ = trials_b
    table = ablation_table(trials)
    assert list(table.index) == list(ARM_MEANS)
    for arm in ARM_MEANS:
        assert table.loc[arm, "mean"] == pytest.approx(np.mean([abl_acc(arm, s) for s in (0, 1)]))
        assert table.loc[arm, "n"] == 2


def test_pareto_front_known_set():
    df = pd.DataFrame({
        "trial_id": list("abcdefgh"),
        "val_acc": [80.0, 85.0, 84.0, 90.0, 90.0, 70.0, 95.0, np.nan],
        "student_macs": [1000, 2000, 4000, 8000, 9000, 1000, 1e6, 10],
        "status": ["finished"] * 6 + ["errored", "finished"],
    })
    front = pareto_front(df)
    # c is dominated by b, e by d, f by a; g is not finished; h has no accuracy
    assert list(front["trial_id"]) == ["d", "b", "a"]
    assert list(pareto_front(df, statuses=None)["trial_id"]) == ["g", "d", "b", "a"]
    both_max = pareto_front(df, objectives=(("val_acc", "max"), ("student_macs", "max")))
    assert list(both_max["trial_id"]) == ["e"]  # e: >= d on accuracy, more MACs
    ties = pd.DataFrame({"val_acc": [1.0, 1.0, 0.5], "student_macs": [2.0, 2.0, 1.0]})
    assert len(pareto_front(ties)) == 3
    single = pareto_front(df, objectives=(("student_macs", "min"),))
    assert list(single["trial_id"]) == ["h"]  # single objective: the minimum (h has no accuracy, which is not asked)
    with pytest.raises(ValueError, match="mode"):
        pareto_front(df, objectives=(("val_acc", "up"),))
    with pytest.raises(ValueError, match="nope"):
        pareto_front(df, objectives=(("nope", "max"),))


def _grid() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    alpha = 10.0 ** rng.uniform(-2, 2, n)  # spans 4 decades: log bins
    lr = rng.uniform(0.01, 0.05, n)  # within a decade: linear bins
    connector = np.array(["a", "b"])[np.arange(n) % 2]
    val = 50 + 10 * np.log10(alpha) + (connector == "b") * 5.0  # monotone in alpha
    return pd.DataFrame({"alpha": alpha, "lr": lr, "connector": connector, "val_acc": val,
                         "beta": 1.0, "status": "finished", "trial_id": [f"t{i}" for i in range(n)]})


def test_marginal_effects():
    df = _grid()
    out = marginal_effects(df)
    assert list(out.columns) == ["parameter", "kind", "level_or_bin", "n", "mean", "std", "spearman"]
    assert set(out["parameter"]) == {"alpha", "lr", "connector"}  # beta does not vary
    a = out[out["parameter"] == "alpha"]
    assert (a["kind"] == "log").all() and len(a) == 4 and a["n"].sum() == len(df)
    assert a["mean"].is_monotonic_increasing
    rho = pd.Series(df["alpha"]).rank().corr(df["val_acc"].rank())
    assert a["spearman"].iloc[0] == pytest.approx(rho) and rho > 0.8
    assert a["level_or_bin"].iloc[0].startswith("[") and a["level_or_bin"].iloc[-1].endswith("]")
    assert (out.loc[out["parameter"] == "lr", "kind"] == "linear").all()
    c = out[out["parameter"] == "connector"].set_index("level_or_bin")
    assert (c["kind"] == "categorical").all() and c["spearman"].isna().all()
    assert c.loc["b", "mean"] - c.loc["a", "mean"] == pytest.approx(
        df.loc[df.connector == "b", "val_acc"].mean() - df.loc[df.connector == "a", "val_acc"].mean())
    assert c.loc["a", "n"] == 20


def test_marginal_effects_few_values_and_statuses():
    df = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "val_acc": [1.0, 3.0, 5.0, 7.0, 9.0, np.nan],
                       "status": ["finished"] * 4 + ["diverged", "finished"]})
    out = marginal_effects(df)
    assert list(out["level_or_bin"]) == ["0", "1"]  # seed 2: diverged or NaN
    assert list(out["mean"]) == [2.0, 6.0] and out["spearman"].iloc[0] == pytest.approx(np.corrcoef(
        pd.Series([0, 0, 1, 1]).rank(), pd.Series([1.0, 3.0, 5.0, 7.0]).rank())[0, 1])
    assert marginal_effects(df.drop(columns="seed")).empty


def test_leaderboard_order_and_columns():
    df = _grid().assign(status=["finished"] * 39 + ["errored"], epochs_run=3, sweep="s",
                        test_acc=lambda d: d["val_acc"] - 1)
    df.loc[5, "val_acc"] = np.nan
    board = leaderboard(df, top=5)
    assert list(board.index) == [1, 2, 3, 4, 5] and board.index.name == "rank"
    assert list(board["val_acc"]) == sorted(df["val_acc"].dropna(), reverse=True)[:5]
    assert list(board.columns) == ["trial_id", "status", "epochs_run", "alpha", "connector", "lr", "val_acc",
                                   "test_acc"]  # sweep and beta do not vary
    full = leaderboard(df, top=None)
    assert len(full) == len(df) and np.isnan(full["val_acc"].iloc[-1])
    worst = leaderboard(df, metric="test_acc", top=3, mode="min")
    assert list(worst["test_acc"]) == sorted(df["test_acc"].dropna())[:3]
    with pytest.raises(ValueError, match="numeric columns"):
        leaderboard(df, metric="nope")
    two = pd.concat([df, df.assign(sweep="t")])
    assert leaderboard(two).columns[0] == "sweep"


def test_searched_params_and_status_counts(trials_a):
    trials, _ = trials_a
    assert searched_params(trials) == ["alpha", "beta", "connector", "student"]
    counts = status_counts(trials)
    assert counts.loc["lw"].to_dict() == {"finished": 3, "stopped_early": 1, "diverged": 1, "errored": 1,
                                          "running": 1, "total": 7}
    assert counts.loc["par", "finished"] == 4 and counts.loc["par", "total"] == 4
