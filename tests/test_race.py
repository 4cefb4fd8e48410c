"""Racing over seeds inside the search: the race's decisions (pure), its searcher's state, and a raced sweep."""
from __future__ import annotations

import pickle

import pytest

from tuner.core import metrics as M
from tuner.driver.race import RACE, Race, RaceSearch, config_id_of
from tuner.driver.record import search_top
from tuner.core.ranking import by_config


def _run(race: Race, values):
    """Hand out jobs and record ``values[(cid, index)]`` until the race asks for nothing more; the jobs in order."""
    jobs = []
    while (job := race.next_job()) is not None:
        jobs.append(job)
        race.record(*job, values[job])
    return jobs


def test_the_first_configuration_is_the_incumbent_and_gets_more_seeds():
    race = Race(3)
    race.record("a", 0, 80.0)
    assert race.incumbent == "a" and _run(race, {("a", 1): 82.0, ("a", 2): 81.0}) == [("a", 1)]
    assert race.seeds("a") == 2  # one more seed each time a challenge is decided, not all at once
    race.record("b", 0, 70.0)  # below a on the seed both ran: dropped at once, and a gets its next seed
    assert "b" in race.dropped and _run(race, {("a", 2): 81.0}) == [("a", 2)]
    assert race.seeds("a") == 3 and race.next_job() is None  # never past max_seeds


def test_a_challenger_runs_the_incumbents_seeds_paired_and_takes_over_with_as_many():
    race = Race(4)
    race.record("a", 0, 80.0)
    _run(race, {("a", 1): 80.0})
    race.record("b", 0, 85.0)  # ahead on seed 0: it races on a's seeds, one at a time
    jobs = _run(race, {("b", 1): 84.0, ("a", 2): 79.0, ("b", 2): 83.0, ("a", 3): 80.0, ("b", 3): 82.0})
    assert jobs[0] == ("b", 1)
    assert race.incumbent == "b" and race.seeds("b") >= 2
    assert [c for c, _, _ in race.standing()][0] == "b"


def test_a_challenger_that_falls_behind_on_shared_seeds_is_dropped_paired():
    """b is better than a on seed 0 but worse on the mean of seeds 0 and 1, which both ran."""
    race = Race(3)
    race.record("a", 0, 80.0)
    _run(race, {("a", 1): 90.0})
    race.record("b", 0, 81.0)
    assert race.next_job() == ("b", 1)
    race.record("b", 1, 84.0)  # mean 82.5 against a's 85.0 on seeds {0, 1}
    assert "b" in race.dropped and race.incumbent == "a"


def test_a_seed_that_does_not_run_every_epoch_drops_its_configuration_and_the_next_best_leads():
    race = Race(3)
    race.record("a", 0, 80.0)
    race.record("b", 0, 70.0)  # dropped: below a on seed 0
    race.record("c", 0, 85.0)
    job = race.next_job()
    race.record(*job, None)  # diverged / stopped / failed
    assert race.incumbent in ("a", "c") and job[0] in race.dropped
    assert all(c not in race.dropped for c, _, _ in race.standing())


class _Search(RaceSearch):
    """RaceSearch with the study left out: its first seeds come from a list, as the study would ask them."""

    def __init__(self, race: int, max_epochs: int = 3):
        self._race, self._base_seed, self._jobs, self._params, self._told = Race(race), 100, {}, {}, set()
        self._max_epochs, self._metric = max_epochs, M.RANK_VAL_ACC
        self._asked = 0

    def _ask(self, trial_id):  # what StudySearch.suggest returns
        self._asked += 1
        return {"alpha": float(self._asked), "origin": "search", "optuna_trial": self._asked - 1}


def test_the_searcher_hands_out_race_seeds_first_and_keeps_its_state(monkeypatch, tmp_path):
    monkeypatch.setattr("tuner.driver.search.StudySearch.suggest", lambda self, tid: self._ask(tid))
    monkeypatch.setattr("tuner.driver.search.StudySearch.on_trial_complete", lambda self, *a, **k: None)
    s = _Search(race=3)
    first = s.suggest("t0")
    assert first == {"alpha": 1.0, "origin": "search", "optuna_trial": 0, "config_id": config_id_of(0)}
    s.on_trial_complete("t0", {M.EPOCH: 3, M.RANK_VAL_ACC: 80.0})
    repeat = s.suggest("t1")  # the incumbent's next seed comes before a new configuration
    assert repeat == {"alpha": 1.0, "seed": 101, "config_id": "s0", "origin": RACE}
    new = s.suggest("t2")  # the race has nothing else to run while t1 runs: Optuna is asked
    assert new["config_id"] == "s1" and new["optuna_trial"] == 1
    s.on_trial_complete("t2", {M.EPOCH: 2, M.RANK_VAL_ACC: 99.0})  # stopped early: not a full value, dropped
    s.on_trial_complete("t2", {M.EPOCH: 3, M.RANK_VAL_ACC: 99.0})  # told twice: recorded once
    assert "s1" in s._race.dropped
    monkeypatch.setattr("tuner.driver.search.StudySearch.restore", lambda self, path: None)
    s._numbers, s._completed = {}, set()
    s.save(str(tmp_path / "state"))
    state = pickle.loads((tmp_path / "state").read_bytes())
    again = _Search(race=3)
    again.restore(str(tmp_path / "state"))
    assert state["race"].incumbent == "s0" and again._race.running == {("s0", 1)} and again._jobs == s._jobs
    again.on_trial_complete("t1", {M.EPOCH: 3, M.RANK_VAL_ACC: 82.0})  # the seed in flight ends after the restore
    assert again._race.seeds("s0") == 2


def _listed(trial_id, status, config, value=None, at=0.0):
    """A trial of the list Tune restores (``generator.restored_trials``)."""
    from tuner.driver.generator import RestoredTrial

    result = {M.EPOCH: 3, M.RANK_VAL_ACC: value} if value is not None else {}
    return RestoredTrial(trial_id, status, dict(config), result, at)


@pytest.mark.parametrize("snapshot", ["older", "newer"])
def test_a_restored_race_is_the_one_the_trial_list_holds_whatever_its_snapshot(monkeypatch, tmp_path, snapshot):
    """The searcher's snapshot and Tune's trial list are separate uploads: a kill leaves either one ahead.
    Older: the seed that ended after it (t1) was never recorded, the configuration asked after it (t3) was ignored
    when it ended, and the full disk's error on t2 had dropped s1 though --resume re-runs it. Newer: a seed handed out
    after the list (t1) held the incumbent's next seed for ever, as running, though no trial would run it."""
    monkeypatch.setattr("tuner.driver.search.StudySearch.suggest", lambda self, tid: self._ask(tid))
    monkeypatch.setattr("tuner.driver.search.StudySearch.on_trial_complete", lambda self, *a, **k: None)
    monkeypatch.setattr("tuner.driver.search.StudySearch.restore", lambda self, path: None)
    s = _Search(race=3)
    configs = {"t0": s.suggest("t0")}
    s.on_trial_complete("t0", {M.EPOCH: 3, M.RANK_VAL_ACC: 80.0})
    if snapshot == "newer":
        configs["t1"] = s.suggest("t1")  # (s0, 1), handed out after the list below was saved
        s._numbers, s._completed = {}, set()
        s.save(str(tmp_path / "state"))
        listed = [_listed("t0", "TERMINATED", configs["t0"], 80.0, 1.0)]
    else:
        configs.update(t1=s.suggest("t1"), t2=s.suggest("t2"))
        s._numbers, s._completed = {}, set()
        s.save(str(tmp_path / "state"))
        s.on_trial_complete("t1", {M.EPOCH: 3, M.RANK_VAL_ACC: 82.0})
        configs["t3"] = s.suggest("t3")  # s2's first seed
        s.on_trial_complete("t2", {M.EPOCH: 1}, error=True)  # ENOSPC: Tune re-runs it on --resume
        assert "s1" in s._race.dropped
        listed = [_listed("t0", "TERMINATED", configs["t0"], 80.0, 1.0),
                  _listed("t1", "TERMINATED", configs["t1"], 82.0, 3.0),
                  _listed("t2", "ERROR", configs["t2"], at=2.0), _listed("t3", "RUNNING", configs["t3"], at=4.0)]
    again = _Search(race=3)
    again.restore(str(tmp_path / "state"))
    again.restored(listed)

    if snapshot == "newer":
        assert again._race.values == {"s0": {0: 80.0}} and not again._race.running
        assert again.suggest("t4") == {"alpha": 1.0, "seed": 101, "config_id": "s0", "origin": RACE}  # not lost
        return
    assert again._race.values == {"s0": {0: 80.0, 1: 82.0}} and not again._race.dropped and again._told == {"t0", "t1"}
    again.on_trial_complete("t2", {M.EPOCH: 3, M.RANK_VAL_ACC: 90.0})  # the re-run: s1 challenges s0, paired
    again.on_trial_complete("t3", {M.EPOCH: 3, M.RANK_VAL_ACC: 70.0})  # below s0 on seed 0: dropped
    assert again._race.values == {"s0": {0: 80.0, 1: 82.0}, "s1": {0: 90.0}, "s2": {0: 70.0}}
    assert again._race.dropped == {"s2"}
    assert [again.suggest(t) for t in ("t5", "t6")] == [  # the incumbent's next seed first, then s1's paired one
        {"alpha": 1.0, "seed": 102, "config_id": "s0", "origin": RACE},
        {"alpha": 2.0, "seed": 101, "config_id": "s1", "origin": RACE}]


def test_a_raced_leaderboard_has_a_row_per_configuration_with_its_seeds():
    def row(tid, cid, origin, value, status="finished", epochs=3):
        return {"trial_id": tid, "config_id": cid, "origin": origin, "status": status, "epochs": epochs, "seeds": 1,
                M.RANK_VAL_ACC: value, M.TEST_ACC: value - 1, "params": {"alpha": 1.0}}

    rows = [row("t0", "s0", "search", 90.0), row("t1", "s1", "search", 85.0), row("t2", "s1", RACE, 87.0),
            row("t3", "s1", RACE, 86.0), row("t4", "s2", "search", 40.0, "stopped_early", 1)]
    board = by_config(rows)
    assert [(r["config_id"], r["seeds"], r[M.RANK_VAL_ACC]) for r in board] == [
        ("s1", 3, pytest.approx(86.0)), ("s0", 1, 90.0), ("s2", 0, 40.0)]
    assert board[0]["trial_id"] == "t1" and board[0][M.TEST_ACC] == pytest.approx(85.0)
    plain = [dict(r, origin="search") for r in rows]
    assert by_config(plain) == plain  # a search that did not race: one row per trial, as before
    # the parent run's search_top_* is the printed leaderboard's first row, not the trial of the luckiest seed
    per_trial = sorted(rows, key=lambda r: -r[M.RANK_VAL_ACC])
    assert search_top(per_trial) == {"trial_id": "t1", M.RANK_VAL_ACC: pytest.approx(86.0), M.TEST_ACC: pytest.approx(85.0),
                                     "seeds": 3}
    assert search_top(plain)["trial_id"] == "t0"


@pytest.mark.slow
def test_a_raced_sweep_runs_more_seeds_of_what_holds_up_and_confirms_on_fresh_ones(tmp_path, env):
    """Real Ray, Optuna and MLflow: race seeds are trials of their own (one MLflow run each, grouped by config id,
    never stopped by ASHA, unseen by the study); the confirmation's seeds lie past every seed the race ran."""
    from tests._helpers import cli_study, run_search, trial_runs

    proc = run_search(tmp_path, env, "--name", "rc", "--race", "3", "--num-samples", "9", "--epochs", "3",
                      "--teacher-epochs", "2", "--grace-period", "1", "--reduction-factor", "2", "--confirm", "1",
                      "--confirm-seeds", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "configurations raced over up to 3 seeds" in proc.stdout and " seeds " in proc.stdout
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "rc")
    search = [r for r in runs if r.data.tags["srrl.stage"] == "search"]
    raced = [r for r in search if r.data.tags["srrl.origin"] == RACE]
    first = {r.data.tags["srrl.config_id"]: r for r in search if r.data.tags["srrl.origin"] != RACE}
    assert len(search) == 9 and raced, [r.data.tags["srrl.origin"] for r in search]
    for r in raced:  # a race seed repeats its configuration at another seed, and runs every epoch
        cid = r.data.tags["srrl.config_id"]
        assert cid in first and r.data.params["seed"] in ("1", "2")
        assert all(r.data.params[k] == first[cid].data.params[k] for k in ("alpha", "beta", "lr"))
        assert r.data.tags["srrl.status"] in ("finished", "diverged")
    study = cli_study(tmp_path, "rc")
    assert len(study.trials) == len(first)  # Optuna sees each configuration once
    confirm = [r for r in runs if r.data.tags["srrl.stage"] == "confirm"]
    assert sorted({r.data.params["seed"] for r in confirm}) == ["3", "4"]  # fresh: past the race's seeds 0..2
