"""analysis.tables on hand-made frames with known answers (no MLflow)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.tables import (
    ablation_table, asha_table, leaderboard, marginal_effects, pareto_front, search_trials, searched_params,
    status_counts,
)
from analysis.confirm_views import VERDICT_COLUMNS, verdict_table
from tuner.core import metrics as M

RANK = M.RANK_VAL_ACC

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
        RANK: [80.0, 85.0, 84.0, 90.0, 90.0, 70.0, 95.0, np.nan],
        "student_macs": [1000, 2000, 4000, 8000, 9000, 1000, 1e6, 10],
        "status": ["finished"] * 6 + ["errored", "finished"],
    })
    front = pareto_front(df)
    # c is dominated by b, e by d, f by a; g is not finished; h has no accuracy
    assert list(front["trial_id"]) == ["d", "b", "a"]
    assert list(pareto_front(df, statuses=None)["trial_id"]) == ["g", "d", "b", "a"]
    assert list(pareto_front(df.assign(stage=["search"] * 3 + ["confirm"] + ["search"] * 4))["trial_id"]) == \
        ["e", "b", "a"]  # d is a confirmation run: the search's front is of search trials
    both_max = pareto_front(df, objectives=((RANK, "max"), ("student_macs", "max")))
    assert list(both_max["trial_id"]) == ["e"]  # e: >= d on accuracy, more MACs
    ties = pd.DataFrame({RANK: [1.0, 1.0, 0.5], "student_macs": [2.0, 2.0, 1.0]})
    assert len(pareto_front(ties)) == 3
    single = pareto_front(df, objectives=(("student_macs", "min"),))
    assert list(single["trial_id"]) == ["h"]  # single objective: the minimum (h has no accuracy, which is not asked)
    with pytest.raises(ValueError, match="mode"):
        pareto_front(df, objectives=((RANK, "up"),))
    with pytest.raises(ValueError, match="nope"):
        pareto_front(df, objectives=(("nope", "max"),))


def _grid() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    alpha = 10.0 ** rng.uniform(-2, 2, n)  # spans 4 decades: log bins
    lr = rng.uniform(0.01, 0.05, n)  # within a decade: linear bins
    connector = np.array(["a", "b"])[np.arange(n) % 2]
    val = 50 + 10 * np.log10(alpha) + (connector == "b") * 5.0  # monotone in alpha
    return pd.DataFrame({"alpha": alpha, "lr": lr, "connector": connector, RANK: val,
                         "beta": 1.0, "status": "finished", "trial_id": [f"t{i}" for i in range(n)]})


def test_marginal_effects():
    df = _grid()
    out = marginal_effects(df)
    assert list(out.columns) == ["epochs", "parameter", "kind", "level_or_bin", "n", "mean", "std", "spearman"]
    assert out["epochs"].isna().all()  # no epochs_run column: one group
    assert set(out["parameter"]) == {"alpha", "lr", "connector"}  # beta does not vary
    a = out[out["parameter"] == "alpha"]
    assert (a["kind"] == "log").all() and len(a) == 4 and a["n"].sum() == len(df)
    assert a["mean"].is_monotonic_increasing
    rho = pd.Series(df["alpha"]).rank().corr(df[RANK].rank())
    assert a["spearman"].iloc[0] == pytest.approx(rho) and rho > 0.8
    assert a["level_or_bin"].iloc[0].startswith("[") and a["level_or_bin"].iloc[-1].endswith("]")
    assert (out.loc[out["parameter"] == "lr", "kind"] == "linear").all()
    c = out[out["parameter"] == "connector"].set_index("level_or_bin")
    assert (c["kind"] == "categorical").all() and c["spearman"].isna().all()
    assert c.loc["b", "mean"] - c.loc["a", "mean"] == pytest.approx(
        df.loc[df.connector == "b", RANK].mean() - df.loc[df.connector == "a", RANK].mean())
    assert c.loc["a", "n"] == 20


def test_marginal_effects_few_values_and_statuses():
    df = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2, 3], RANK: [1.0, 3.0, 5.0, 7.0, 9.0, np.nan, 99.0],
                       "status": ["finished"] * 4 + ["diverged", "finished", "stopped_early"]})
    out = marginal_effects(df)
    assert list(out["level_or_bin"]) == ["0", "1"]  # seed 2: diverged or NaN; seed 3: stopped early
    assert list(out["mean"]) == [2.0, 6.0] and out["spearman"].iloc[0] == pytest.approx(np.corrcoef(
        pd.Series([0, 0, 1, 1]).rank(), pd.Series([1.0, 3.0, 5.0, 7.0]).rank())[0, 1])
    assert marginal_effects(df.drop(columns="seed")).empty


def test_marginal_effects_compare_trials_of_one_fidelity_only():
    """Trials that ran 4 epochs are never pooled with trials that ran 2: one block of rows per fidelity."""
    df = pd.DataFrame({"alpha": [1.0, 1.0, 2.0, 2.0, 1.0, 2.0], RANK: [90.0, 92.0, 80.0, 82.0, 50.0, 70.0],
                       "epochs_run": [4, 4, 4, 4, 2, 2], "status": ["finished"] * 4 + ["stopped_early"] * 2})
    full = marginal_effects(df)
    assert set(full["epochs"]) == {4} and list(full["mean"]) == [91.0, 81.0] and list(full["n"]) == [2, 2]
    both = marginal_effects(df, statuses=None)
    assert list(both["epochs"]) == [4, 4, 2, 2] and list(both["mean"]) == [91.0, 81.0, 50.0, 70.0]
    assert (both.loc[both["epochs"] == 4, "spearman"] < 0).all() and (both.loc[both["epochs"] == 2, "spearman"] > 0).all()
    confirm = df.assign(stage="confirm", alpha=[1.0, 3.0] * 3)
    assert marginal_effects(pd.concat([df, confirm])).equals(full)  # confirmation runs are not the search's


def _board_frame() -> pd.DataFrame:
    """Trials whose rank_val_acc, final val_acc and fidelity disagree, with a confirmation run on top."""
    rows = [  # trial, status, epochs run, rank_val_acc, val_acc, stage
        ("f1", "finished", 10, 80.0, 95.0, "search"),  # a lucky last epoch: best by final val_acc, not by rank
        ("f2", "finished", 10, 85.0, 86.0, "search"),
        ("f3", "finished", 10, np.nan, np.nan, "search"),
        ("s5", "stopped_early", 5, 88.0, 88.0, "search"),  # better numbers than every finished trial, at half fidelity
        ("s2", "stopped_early", 2, 99.0, 99.0, "search"),
        ("s5b", "stopped_early", 5, 70.0, 71.0, "search"),
        ("d3", "diverged", 3, 60.0, 10.0, "search"),
        ("c1", "finished", 10, 99.9, 99.9, "confirm"),
    ]
    df = pd.DataFrame(rows, columns=["trial_id", "status", "epochs_run", RANK, M.VAL_ACC, "stage"])
    return df.assign(alpha=np.arange(len(df)) + 1.0, sweep="s", test_acc=lambda d: d[M.VAL_ACC] - 1)


def test_leaderboard_ranks_full_fidelity_first_by_the_ranking_rule():
    board = leaderboard(_board_frame(), top=None)
    assert list(board["trial_id"]) == ["f2", "f1", "f3", "s5", "s5b", "d3", "s2"]
    assert list(board.index) == list(range(1, 8)) and board.index.name == "rank"
    assert "c1" not in set(board["trial_id"])  # the confirmation run feeds the verdict, not the leaderboard
    cols = ["trial_id", "status", "epochs_run", "alpha"] + list(dict.fromkeys([RANK, M.VAL_ACC, "test_acc"]))
    assert list(board.columns) == cols  # sweep does not vary
    assert list(leaderboard(_board_frame(), top=3)["trial_id"]) == ["f2", "f1", "f3"]
    by_val = leaderboard(_board_frame(), metric=M.VAL_ACC, top=None)
    assert list(by_val["trial_id"]) == ["f1", "f2", "f3", "s5", "s5b", "d3", "s2"]  # same fidelity groups
    worst = leaderboard(_board_frame(), metric="test_acc", top=2, mode="min")
    assert list(worst["trial_id"]) == ["f2", "f1"]
    with_ids = leaderboard(_board_frame().assign(run_id=lambda d: "r" + d["trial_id"]), top=2, run_id=True)
    assert list(with_ids.columns[:2]) == ["run_id", "trial_id"] and list(with_ids["run_id"]) == ["rf2", "rf1"]
    with pytest.raises(ValueError, match="numeric columns"):
        leaderboard(_board_frame(), metric="nope")
    two = pd.concat([_board_frame(), _board_frame().assign(sweep="t")])
    assert leaderboard(two).columns[0] == "sweep"


def test_leaderboard_on_the_store(trials_a):
    """The lw sweep's search trials: finished ones by the logged ranking value, then by fidelity."""
    from _analysis_store import LW

    trials, _ = trials_a
    lw = trials[trials["sweep"] == "lw"]
    board = leaderboard(lw, top=None)
    assert set(board["trial_id"]) == set(LW) and "origin" in board.columns
    t = lw.set_index("trial_id")
    expected = sorted(LW, key=lambda tid: (t.loc[tid, "status"] != "finished",
                                           0 if t.loc[tid, "status"] == "finished" else -t.loc[tid, "epochs_run"],
                                           -t.loc[tid, RANK]))
    assert list(board["trial_id"]) == expected
    assert list(board["trial_id"][:3]) == sorted(["lw_00001", "lw_00002", "lw_00003"], key=lambda x: -t.loc[x, RANK])


def test_asha_table_on_the_store(trials_a):
    trials, _ = trials_a
    table = asha_table(trials)
    assert list(table.columns) == ["sweep", "epoch", "ended", "trials", "reached", "authors"]
    rows = [tuple(r) for r in table.itertuples(index=False)]
    assert rows == [("lw", 1, "stopped", 1, 5, "alpha 1 beta 5"), ("lw", 2, "stopped", 1, 4, "alpha 10 beta 1"),
                    ("lw", 4, "finished", 3, 3, "alpha 1 beta 1"), ("par", 3, "finished", 4, 4, "")]
    one = asha_table(trials[trials["sweep"] == "lw"])
    assert "sweep" not in one.columns and list(one["trials"]) == [1, 1, 3]
    assert table["epoch"].dtype == np.int64
    assert asha_table(trials.iloc[0:0]).empty


def _paired(a, b):
    """The paired t-test written out on the per-seed differences: (mean, CI low, CI high, p)."""
    from scipy.stats import t as student_t

    d = np.asarray(a, float) - np.asarray(b, float)
    se = d.std(ddof=1) / math.sqrt(len(d))
    half = T975[len(d) - 1] * se
    return d.mean(), d.mean() - half, d.mean() + half, 2 * student_t.sf(abs(d.mean()) / se, len(d) - 1)


def test_verdict_table_on_the_store(trials_a):
    """The lw sweep's confirmation runs: c1 beats the authors' (1, 1) on val with confidence, paired on seeds
    and Holm-corrected over the 2 candidates."""
    from _analysis_store import CONFIRM, RECOMMENDED

    trials, _ = trials_a
    verdict, table = verdict_table(trials)
    assert verdict.recommended == RECOMMENDED and table["recommended"].tolist() == [True, False, False, False]
    assert list(table["config_id"]) == ["c1", "c2", "ref", "ce"]  # recommended first, then role and search rank
    assert list(table["config"]) == ["alpha 2 beta 3", "alpha 0.5 beta 2", "alpha 1 beta 1", "CE only"]
    assert list(table["seeds"]) == [3, 3, 3, 3]  # the errored CE seed is not part of it
    assert list(table["rank"].astype(object).where(table["rank"].notna(), None)) == [1, 2, None, None]
    t = table.set_index("config_id")
    for cid, (_, _, _, _, vals, tests) in CONFIRM.items():
        for m, v in ((RANK, vals), ("test_acc", tests)):  # the fixture's val rises every epoch: max = final
            half = T975[2] * np.std(v, ddof=1) / math.sqrt(3)
            assert t.loc[cid, f"{m}_mean"] == pytest.approx(np.mean(v))
            assert t.loc[cid, f"{m}_ci_low"] == pytest.approx(np.mean(v) - half)
            assert t.loc[cid, f"{m}_ci_high"] == pytest.approx(np.mean(v) + half)
    ref, ce = CONFIRM["ref"], CONFIRM["ce"]
    diff, low, high, p = _paired(CONFIRM["c1"][4], ref[4])
    assert t.loc["c1", f"{RANK}_vs_reference"] == pytest.approx(diff)
    assert t.loc["c1", f"{RANK}_vs_reference_p"] == pytest.approx(p)
    assert t.loc["c2", "test_acc_vs_ce_p"] == pytest.approx(_paired(CONFIRM["c2"][5], ce[5])[3])
    assert np.isnan(t.loc["ref", f"{RANK}_vs_reference"]) and np.isnan(t.loc["ce", "test_acc_vs_ce_p"])
    holm = min(1.0, 2 * p) if p < _paired(CONFIRM["c2"][4], ref[4])[3] else p  # c1 has the smaller p here
    assert holm < 0.05
    assert verdict.sentence.startswith("alpha 2 beta 3 beats the authors' (1, 1) by +2.1 val points")
    assert f"95% CI {low:+.1f} .. {high:+.1f}, p = {p:.2g}, Holm p = {holm:.2g} over 2 candidates" in verdict.sentence
    shown = pd.DataFrame(verdict.table())  # what the report shows
    assert list(shown.columns) == ["config", "role", "seeds", "recommended", RANK, "test_acc", "val vs reference",
                                   "test vs reference", "val vs CE", "test vs CE"]
    assert shown.loc[0, RANK] == f"{np.mean(CONFIRM['c1'][4]):.2f} [{t.loc['c1', f'{RANK}_ci_low']:.2f}, " \
                                 f"{t.loc['c1', f'{RANK}_ci_high']:.2f}]"
    assert shown.loc[0, "val vs reference"] == f"{diff:+.2f} [{low:+.2f}, {high:+.2f}] p={p:.2g} p_holm={holm:.2g}"
    assert shown.loc[2, "val vs reference"] == "" and shown.loc[3, "val vs CE"] == ""


def test_verdict_table_is_tuner_verdicts_summary():
    """One home for the statistics: the table is ``tuner.core.verdict.summarize`` of the confirm rows."""
    from tuner.core.verdict import summarize

    rows = [("a", "candidate", 1, 1.0, [80.0, 81.0]), ("r", "reference", None, 2.0, [79.0, 79.5]),
            ("z", "ce", None, 0.0, [70.0, 71.0])]
    df = pd.DataFrame([{"trial_id": f"{cid}{i}", "stage": "confirm", "status": "finished", "config_id": cid,
                        "config_role": role, "config_rank": rank, "alpha": alpha, "seed": i, RANK: v,
                        M.TEST_ACC: v - 1, "sweep": "s"}
                       for cid, role, rank, alpha, vals in rows for i, v in enumerate(vals)])
    verdict, _ = verdict_table(df)
    expected = summarize([{"config_id": cid, "role": role, "rank": rank, "params": {"alpha": alpha}, "seed": i,
                           RANK: v, M.TEST_ACC: v - 1} for cid, role, rank, alpha, vals in rows
                          for i, v in enumerate(vals)],
                         "the reference point (alpha 2)")
    assert verdict.to_dict() == expected.to_dict()
    assert "the reference point (alpha 2)" in verdict.sentence
    none, empty = verdict_table(df.assign(stage="search"))  # no confirmation runs: no verdict
    assert none is None and empty.empty and list(empty.columns) == list(VERDICT_COLUMNS)
    # every run failed: each configuration says so, and nothing is recommended (not even the failed reference)
    failed, table = verdict_table(df.assign(status="errored"))
    assert (failed.recommended, failed.sentence) == (None, "no searched configuration finished its confirmation runs")
    assert list(table["seeds"]) == [0, 0, 0] and list(table["failed_seeds"]) == [2, 2, 2]
    with pytest.raises(ValueError, match="several sweeps"):
        verdict_table(pd.concat([df, df.assign(sweep="t")]))
    assert verdict_table(pd.concat([df, df.assign(sweep="t")]), sweep="t")[0].to_dict() == expected.to_dict()


def test_searched_params_and_status_counts(trials_a):
    trials, _ = trials_a
    search = search_trials(trials)
    # any field a space may search counts: the lw sweep's base recipe has nesterov on, the par sweep's off
    assert searched_params(search) == ["alpha", "beta", "connector", "student", "nesterov"]
    assert searched_params(search[search["sweep"] == "lw"]) == ["alpha", "beta"]
    assert "seed" in searched_params(trials)  # the confirmation runs' fresh seeds
    counts = status_counts(search)
    assert counts.loc["lw"].to_dict() == {"finished": 3, "stopped_early": 2, "diverged": 1, "errored": 1,
                                          "running": 1, "total": 8}
    assert counts.loc["par", "finished"] == 4 and counts.loc["par", "total"] == 4


def test_a_raced_sweeps_leaderboard_ranks_configurations_by_their_seeds_as_the_driver_does():
    """``python -m analysis leaderboard`` and the report on a ``--race`` sweep: one row per configuration, its mean
    over the seeds that ran every epoch and their count, in the driver's order (``tuner.core.ranking.by_config``),
    not the luckiest single seed first."""
    from analysis.tables import configurations, leaderboard

    trials = pd.DataFrame({
        "sweep": ["r"] * 5, "stage": ["search"] * 5, "trial_id": ["t0", "t1", "t2", "t3", "t4"],
        "config_id": ["s0", "s1", "s1", "s1", "s2"], "origin": ["search", "search", "race", "race", "search"],
        "status": ["finished"] * 4 + ["stopped_early"], "epochs_run": [3, 3, 3, 3, 1], "alpha": [1.0, 2.0, 2.0, 2.0, 3.0],
        M.RANK_VAL_ACC: [90.0, 85.0, 87.0, 86.0, 40.0], M.TEST_ACC: [89.0, 84.0, 86.0, 85.0, np.nan]})
    board = leaderboard(trials)
    assert list(zip(board["trial_id"], board["seeds"], board[M.RANK_VAL_ACC])) == [
        ("t1", 3, pytest.approx(86.0)), ("t0", 1, 90.0), ("t4", 0, 40.0)]
    assert board.loc[1, M.TEST_ACC] == pytest.approx(85.0) and np.isnan(board.loc[3, M.TEST_ACC])
    plain = trials.assign(origin="search")
    assert configurations(plain) is plain and "seeds" not in leaderboard(plain).columns  # no race: a row per trial
