"""The confirmation's statistics and choices: intervals, Welch tests, the val-only recommendation, the points it runs."""
from __future__ import annotations

import math

import pytest
from scipy import stats

from tuner import metrics as M
from tuner.config import TrialConfig
from tuner.confirm import confirm_configs, confirm_points
from tuner.verdict import Verdict, mean_ci, summarize, welch

REF = {"alpha": 1.0, "beta": 1.0}


def _rows(config_id, role, params, val, test, rank=None):
    return [{"config_id": config_id, "role": role, "rank": rank, "params": params, M.VAL_ACC: v, M.TEST_ACC: t}
            for v, t in zip(val, test)]


def test_mean_ci_is_the_student_t_interval():
    xs = [81.1, 75.0, 77.2, 78.1, 72.8]
    iv = mean_ci(xs)
    low, high = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 5, scale=stats.sem(xs))
    assert iv.mean == pytest.approx(76.84) and iv.low == pytest.approx(low) and iv.high == pytest.approx(high)
    assert mean_ci([70.0]).low == mean_ci([70.0]).high == 70.0


def test_welch_matches_scipy_and_its_interval_holds_the_difference():
    a, b = [82.2, 81.1, 77.5, 78.3, 77.8], [81.1, 75.0, 77.2, 78.1, 72.8]
    d = welch(a, b)
    assert d.diff == pytest.approx(79.38 - 76.84)
    assert d.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert d.low < d.diff < d.high and d.low < 0 < d.high  # p > 0.05: the interval holds 0
    assert math.isnan(welch([1.0], [2.0, 3.0]).p)


def test_a_clearly_better_candidate_is_recommended_with_its_test_difference():
    rows = (_rows("c1", "candidate", {"alpha": 0.5, "beta": 3.8}, [84, 85, 84.5, 85.5, 84.2], [83, 84, 82, 85, 84], rank=1)
            + _rows("ref", "reference", REF, [80, 81, 80.5, 79.5, 80.2], [81, 80, 79, 82, 80])
            + _rows("ce", "ce", {"alpha": 0.0, "beta": 0.0}, [70, 71, 69, 70.5, 70.1], [69, 70, 70, 68, 71]))
    v = summarize(rows, "the authors' (1, 1)")
    assert v.recommended == "c1" and v.reference == "ref" and v.ce == "ce"
    assert v.sentence.startswith("alpha 0.5 beta 3.8 beats the authors' (1, 1) by +4.4 val points (95% CI +3.5 .. +5.3")
    assert "5 seeds" in v.sentence and "on test +3.2 points" in v.sentence
    c1 = v.config("c1")
    assert c1.vs_reference[M.TEST_ACC].diff == pytest.approx(83.6 - 80.4)
    assert c1.vs_ce[M.VAL_ACC].p < 1e-6 and c1.n == 5 and c1.rank == 1
    assert v.table()[0]["recommended"] and v.table()[0]["config"] == "alpha 0.5 beta 3.8"
    assert Verdict.from_dict(v.to_dict()).to_dict() == v.to_dict()  # what the parent run's verdict.json holds


def test_a_candidate_better_only_on_test_or_not_significant_is_not_recommended():
    # better on test by a lot, equal on val: test is never used to choose
    rows = (_rows("c1", "candidate", {"alpha": 8.12, "beta": 8.27}, [80, 81, 80.5, 79.5, 80.2], [90, 91, 92, 90, 91], rank=1)
            + _rows("ref", "reference", REF, [80, 81, 80.5, 79.5, 80.2], [80, 81, 79, 80, 81]))
    v = summarize(rows, "the authors' (1, 1)")
    assert v.recommended == "ref"
    assert v.sentence.startswith("no configuration beats the authors' (1, 1) with confidence (best: alpha 8.12 beta 8.27")
    assert v.sentence.endswith("use the authors' (1, 1)")
    # higher val mean but within the noise: p >= 0.05
    noisy = (_rows("c1", "candidate", {"alpha": 2.0, "beta": 2.0}, [84, 76, 82, 78, 81], [80] * 5, rank=1)
             + _rows("ref", "reference", REF, [80, 79, 81, 78, 80], [80] * 5))
    assert summarize(noisy, "the authors' (1, 1)").recommended == "ref"


def _row(trial, status, best, params, epochs=30):
    return {"trial_id": trial, "status": status, "epochs": epochs, M.RANK_VAL_ACC: best, "params": params}


def test_confirm_configs_take_the_best_distinct_finished_trials_then_reference_and_ce():
    rows = [_row("a", "finished", 88.0, {"alpha": 1.0, "beta": 1.0}),   # the reference itself: not a candidate
            _row("b", "stopped_early", 99.0, {"alpha": 3.0, "beta": 3.0}, epochs=12),  # lower fidelity: never
            _row("c", "finished", 86.0, {"alpha": 0.5, "beta": 2.0}),
            _row("d", "finished", 86.0, {"alpha": 0.5, "beta": 2.0}),   # same point again: one configuration
            _row("e", "finished", 90.0, {"alpha": 8.0, "beta": 8.0}),
            _row("f", "finished", 80.0, {"alpha": 0.1, "beta": 0.1})]
    configs = confirm_configs(rows, 2, REF, TrialConfig())
    assert [(c["config_id"], c["role"], c["rank"], c["params"]) for c in configs] == [
        ("c1", "candidate", 1, {"alpha": 8.0, "beta": 8.0}),
        ("c2", "candidate", 3, {"alpha": 0.5, "beta": 2.0}),
        ("ref", "reference", None, REF),
        ("ce", "ce", None, {"alpha": 0.0, "beta": 0.0})]


def test_confirm_points_give_every_configuration_every_seed_with_the_same_keys():
    configs = [{"config_id": "c1", "role": "candidate", "rank": 1, "params": {"alpha": 8.0, "beta": 8.0, "lr": 0.1}},
               {"config_id": "ref", "role": "reference", "rank": None, "params": REF}]
    points = confirm_points(configs, [1, 2, 3], TrialConfig(lr=0.05))
    assert len(points) == 6 and {frozenset(p) for p in points} == {frozenset(points[0])}
    assert [p["seed"] for p in points] == [1, 1, 2, 2, 3, 3]  # seed-major
    ref = [p for p in points if p["config_id"] == "ref"]
    assert all(p["lr"] == 0.05 and p["config_role"] == "reference" and p["config_rank"] == 0 for p in ref)
