"""The confirmation's statistics and choices: intervals, paired and Welch tests, Holm's correction, the val-only
recommendation and its false-recommendation rate under the null, the points it runs."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tuner.core import metrics as M
from tuner.core.config import TrialConfig
from tuner.driver.confirm import confirm_configs, confirm_points
from tuner.core.verdict import DECISION, Verdict, holm, mean_ci, paired, summarize, welch

REF = {"alpha": 1.0, "beta": 1.0}


def _rows(config_id, role, params, val, test, rank=None):
    return [{"config_id": config_id, "role": role, "rank": rank, "params": params, "seed": s, DECISION: v, M.TEST_ACC: t}
            for s, (v, t) in enumerate(zip(val, test), 1)]


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


def test_paired_matches_scipy_and_a_constant_difference_has_no_p():
    a, b = [82.2, 81.1, 77.5, 78.3, 77.8], [81.1, 75.0, 77.2, 78.1, 72.8]
    d = paired(a, b)
    assert d.test == "paired" and d.n == 5 and d.diff == pytest.approx(79.38 - 76.84)
    assert d.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    low, high = stats.t.interval(0.95, 4, loc=d.diff, scale=stats.sem(np.subtract(a, b)))
    assert (d.low, d.high) == (pytest.approx(low), pytest.approx(high))
    # the same +1 on every seed: no spread to test against, so no p and no CI (and never "with confidence")
    same = paired([81.0, 80.0, 79.0], [80.0, 79.0, 78.0])
    assert same.diff == pytest.approx(1.0) and math.isnan(same.p) and math.isnan(same.low)
    assert paired([80.0, 79.0], [80.0, 79.0]).p == 1.0
    flat = welch([80.0] * 3, [79.0] * 3)
    assert math.isnan(flat.p) and flat.diff == 1.0  # was p = 0: a certain-looking win from no evidence
    rows = (_rows("c1", "candidate", {"alpha": 2.0}, [81, 80, 79], [80] * 3, rank=1)
            + _rows("ref", "reference", REF, [80, 79, 78], [80] * 3))
    v = summarize(rows, "the authors' (1, 1)")
    assert v.recommended == "ref" and "the same difference on all 3 seeds: no spread, no test" in v.sentence


def test_holm_steps_down_and_keeps_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    out = holm([0.02, math.nan])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1])  # a nan still counts as a comparison


def test_a_paired_gain_hidden_by_seed_luck_is_found():
    """Seeds that are good or bad for every configuration: Welch sees the seed spread, the pairs cancel it."""
    luck = [6.0, -4.0, 2.0, -5.0, 1.0]
    ref = [80 + x for x in luck]
    cand = [81.5 + x + e for x, e in zip(luck, [0.2, -0.1, 0.1, 0.0, -0.2])]
    rows = _rows("c1", "candidate", {"alpha": 3.0}, cand, cand, rank=1) + _rows("ref", "reference", REF, ref, ref)
    v = summarize(rows, "the authors' (1, 1)")
    assert welch(cand, ref).p > 0.3 and v.config("c1").vs_reference[DECISION].p < 1e-4
    assert v.recommended == "c1" and v.config("c1").vs_reference[DECISION].test == "paired"


def _null_rates(k: int, sims: int, rng: np.random.Generator):
    """Share of ``sims`` null confirmations (K candidates, the reference and CE-only all equal; 5 seeds with a
    shared seed effect) in which the verdict recommends a candidate, and in which the best candidate's raw p < 0.05."""
    false, raw = 0, 0
    for _ in range(sims):
        seed_effect = rng.normal(0, 2.0, 5)
        rows = []
        for cid, role in [(f"c{i}", "candidate") for i in range(1, k + 1)] + [("ref", "reference"), ("ce", "ce")]:
            val = 80 + seed_effect + rng.normal(0, 2.5, 5)
            rows += _rows(cid, role, {"alpha": float(len(rows))}, val, val, rank=1 if role == "candidate" else None)
        v = summarize(rows)
        false += v.recommended not in ("ref", None)
        best = max((c for c in v.configs if c.role == "candidate"), key=lambda c: c.metrics[DECISION].mean)
        d = best.vs_reference[DECISION]
        raw += d.diff > 0 and d.p < 0.05
    return false / sims, raw / sims


def test_under_the_null_at_most_5_percent_of_verdicts_recommend_a_candidate():
    """K candidates as good as the reference: the Holm-corrected rule recommends one in at most 5% of
    confirmations for K = 1..5, where the uncorrected rule (the best candidate's own p) exceeds 5% at K = 5."""
    rng = np.random.default_rng(2024)
    rates = {k: _null_rates(k, 600, rng) for k in range(1, 6)}
    assert all(false <= 0.05 for false, _ in rates.values()), rates
    assert rates[5][1] > 0.05, rates  # the test can tell a rule that does not correct for K


def test_a_gain_that_swaps_the_student_says_so():
    rows = (_rows("c1", "candidate", {"student": "digits_cnn2x8", "alpha": 1.0}, [90, 91, 92, 90, 91], [90] * 5, rank=1)
            + _rows("ref", "reference", {"student": "digits_cnn2x4", "alpha": 1.0}, [80, 81, 80, 79, 80], [80] * 5))
    v = summarize(rows, "the authors' (1, 1)")
    assert v.recommended == "c1"
    assert v.sentence.endswith("the gain includes a change of model (student digits_cnn2x4 -> digits_cnn2x8), "
                               "not distillation alone")


def test_a_clearly_better_candidate_is_recommended_with_its_test_difference():
    rows = (_rows("c1", "candidate", {"alpha": 0.5, "beta": 3.8}, [84, 85, 84.5, 85.5, 84.2], [83, 84, 82, 85, 84], rank=1)
            + _rows("ref", "reference", REF, [80, 81, 80.5, 79.5, 80.2], [81, 80, 79, 82, 80])
            + _rows("ce", "ce", {"alpha": 0.0, "beta": 0.0}, [70, 71, 69, 70.5, 70.1], [69, 70, 70, 68, 71]))
    v = summarize(rows, "the authors' (1, 1)")
    assert v.recommended == "c1" and v.reference == "ref" and v.ce == "ce"
    # paired on seeds: the interval of the 5 per-seed differences
    assert v.sentence.startswith("alpha 0.5 beta 3.8 beats the authors' (1, 1) by +4.4 val points (95% CI +3.3 .. +5.5")
    assert "5 seeds" in v.sentence and "on test +3.2 points" in v.sentence
    c1 = v.config("c1")
    assert c1.vs_reference[M.TEST_ACC].diff == pytest.approx(83.6 - 80.4)
    assert c1.vs_ce[DECISION].p < 1e-5 and c1.n == 5 and c1.rank == 1
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
    assert all(p["val_split_seed"] == p["seed"] for p in points)  # a fresh validation split per seed
    ref = [p for p in points if p["config_id"] == "ref"]
    assert all(p["lr"] == 0.05 and p["config_role"] == "reference" and p["config_rank"] == 0 for p in ref)


def test_two_seeds_print_no_interval_three_do():
    """With 2 seeds the 95% t-interval spans hundreds of points (t = 12.7): the tables say so instead (issue 27.8)."""
    for seeds, shown in ((2, False), (3, True)):
        rows = (_rows("c1", "candidate", {"alpha": 2.0}, [80.0, 96.0, 73.0][:seeds], [79.0, 90.0, 75.0][:seeds], rank=1)
                + _rows("ref", "reference", {"alpha": 1.0}, [60.0, 75.0, 70.0][:seeds], [61.0, 70.0, 66.0][:seeds]))
        verdict = summarize(rows)
        table = verdict.table()
        cells = [r[DECISION] for r in table] + [r["val vs reference"] for r in table if r["role"] == "candidate"]
        if shown:
            assert all("[" in c and "no usable" not in c for c in cells), cells
            assert "95% CI" in verdict.sentence and "no usable" not in verdict.sentence, verdict.sentence
        else:
            assert all("[" not in c and "(2 seeds: no usable 95% CI)" in c for c in cells), cells
            # the sentence says it as the table does
            assert "(no usable 95% CI, p = " in verdict.sentence and ", 2 seeds)" in verdict.sentence and " .. " not in verdict.sentence, verdict.sentence


def test_a_candidate_that_failed_a_seed_is_not_recommended_and_every_count_says_so():
    """Diverged or errored confirmation runs are counted, never averaged away: the candidate that clearly beats the
    reference on the 3 seeds it survived failed 2 of 5, so the reference stands; the seeds a sentence names are the
    pairs its test used."""
    cand = _rows("c1", "candidate", {"alpha": 2.0, "lr": 1.6}, [90, 91, 92, 0, 0], [89, 90, 91, 0, 0], rank=1)
    cand = cand[:3] + [{**r, "failed": True, DECISION: None, M.TEST_ACC: None} for r in cand[3:]]
    ref = _rows("ref", "reference", REF, [80, 82, 81, 80, 79], [80] * 5)
    v = summarize(cand + ref, "the authors' (1, 1)")
    c1 = v.config("c1")
    assert (c1.n, c1.failed, c1.metrics[DECISION].mean) == (3, 2, 91.0)
    assert c1.vs_reference[DECISION].n == 3 and c1.vs_reference[DECISION].p < 0.05  # would win on its survivors
    assert v.recommended == "ref"
    assert v.sentence.startswith("no configuration beats the authors' (1, 1) with confidence (best: alpha 2 lr 1.6, "
                                 "+10.0 val points") and v.sentence.endswith(
        "3 seeds; it failed on 2 of 5 seeds); use the authors' (1, 1)"), v.sentence
    assert next(r for r in v.table() if r["role"] == "candidate")["seeds"] == "3 (+2 failed)"
    assert Verdict.from_dict(v.to_dict()).config("c1").failed == 2  # what MLflow's verdict.json carries back
    # without the failures it wins, and its sentence counts the 3 pairs its test used, not the reference's 5 seeds
    won = summarize(cand[:3] + ref, "the authors' (1, 1)")
    assert won.recommended == "c1" and "p = " in won.sentence and ", 3 seeds)" in won.sentence, won.sentence


def test_the_driver_counts_diverged_and_errored_confirmation_runs_as_failed():
    """``confirm.verdict_of`` on Tune's results: a finished run is a row, a diverged or errored one is a failed
    seed, and one that has not reached its last epoch (a stopped stage) is no row yet."""
    from types import SimpleNamespace

    from tuner.driver.confirm import verdict_of

    def result(cid, role, seed, metrics, error=None):
        config = {"alpha": 1.0 if role == "reference" else 2.0, "beta": 1.0, "seed": seed, "val_split_seed": seed,
                  "config_id": cid, "config_role": role, "config_rank": 1 if role == "candidate" else 0}
        return SimpleNamespace(config=config, metrics=metrics, error=error)

    done = {DECISION: 90.0, M.TEST_ACC: 89.0}
    results = [result("c1", "candidate", 1, done), result("c1", "candidate", 2, {M.DIVERGED_KEY: 1.0, M.EPOCH: 1}),
               result("c1", "candidate", 3, {DECISION: 50.0}, error=RuntimeError("lost node")),
               result("c1", "candidate", 4, {DECISION: 70.0, M.EPOCH: 2}),  # half-done: not counted yet
               result("ref", "reference", 1, {DECISION: 80.0, M.TEST_ACC: 79.0})]
    v = verdict_of(results, "the authors' (1, 1)")
    assert [(c.config_id, c.n, c.failed) for c in v.configs] == [("c1", 1, 2), ("ref", 1, 0)]
    assert v.recommended == "ref"


def test_a_verdict_without_candidates_says_none_was_confirmed_not_that_they_failed():
    """confirm_configs gives no candidate when only the reference ran every epoch of the search: the sentence says
    so, and keeps "did not finish" for candidates whose confirmation runs all failed."""
    ref = _rows("ref", "reference", REF, [80, 82, 81], [80] * 3)
    v = summarize(ref, "the authors' (1, 1)")
    assert (v.recommended, v.sentence) == ("ref", "no searched configuration other than the reference ran every epoch "
                                                  "of the search: none to confirm; use the authors' (1, 1)")
    failed = [{**r, "failed": True} for r in _rows("c1", "candidate", {"alpha": 2.0}, [0] * 3, [0] * 3, rank=1)]
    assert summarize(failed + ref, "the authors' (1, 1)").sentence == \
        "no searched configuration finished its confirmation runs; use the authors' (1, 1)"
