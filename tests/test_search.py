"""StudySearch on a real Optuna RDB study, driven as Tune drives it (no Ray runtime needed)."""
from __future__ import annotations

import functools

import optuna
import pytest

from tuner.driver.search import StudySearch

State = optuna.trial.TrialState


def _define(trial: optuna.Trial) -> None:
    trial.suggest_float("alpha", 0.01, 100.0, log=True)


def _searcher(storage, max_epochs: int = 3) -> StudySearch:
    return StudySearch(space=_define, metric="val_acc", mode="max", study_name="s", storage=storage,
                       max_epochs=max_epochs, sampler=functools.partial(optuna.samplers.RandomSampler, seed=0))


class _CountingStorage(optuna.storages.RDBStorage):
    """The study's storage, counting the trial reads (one per trial, not one per epoch)."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.reads = 0

    def get_trial(self, trial_id: int):
        self.reads += 1
        return super().get_trial(trial_id)


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _study(storage: str) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=storage)


def test_states_and_intermediate_values(storage):
    counting = _CountingStorage(storage)
    s = _searcher(counting)
    for tid in ("full", "cut", "nan", "div"):
        assert "alpha" in s.suggest(tid)
    before = counting.reads
    for epoch, acc in ((1, 40.0), (2, 50.0)):
        s.on_trial_result("full", {"val_acc": acc, "epoch": epoch})
    s.on_trial_result("full", {"val_acc": 50.0, "epoch": 2})  # the same epoch twice is reported once
    assert counting.reads - before == 1  # one study read per trial, not one per result
    s.on_trial_complete("full", {"val_acc": 60.0, "epoch": 3})  # the last result reaches only this hook
    s.on_trial_result("cut", {"val_acc": 30.0, "epoch": 1})
    s.on_trial_complete("cut", {"val_acc": 30.0, "epoch": 1})  # ASHA stopped it after epoch 1 of 3
    s.on_trial_result("nan", {"val_acc": float("nan"), "epoch": 1})
    s.on_trial_complete("nan", {"val_acc": float("nan"), "epoch": 3})
    s.on_trial_complete("div", {"val_acc": 10.0, "epoch": 1, "diverged": True})
    trials = {t.number: t for t in _study(storage).trials}
    assert [trials[i].state for i in range(4)] == [State.COMPLETE, State.PRUNED, State.FAIL, State.FAIL]
    assert trials[0].value == 60.0 and trials[0].intermediate_values == {1: 40.0, 2: 50.0, 3: 60.0}
    assert trials[1].intermediate_values == {1: 30.0} and trials[1].user_attrs["stopped_at_epoch"] == 1
    assert trials[2].intermediate_values == {} and trials[3].user_attrs["diverged_epoch"] == 1


def test_restored_searcher_neither_repeats_steps_nor_retells_finished_trials(storage, tmp_path):
    s = _searcher(storage)
    s.suggest("a"), s.suggest("b")
    s.on_trial_result("a", {"val_acc": 40.0, "epoch": 1})
    s.save(str(tmp_path / "searcher.pkl"))  # Tune's snapshot, taken here ...
    s.on_trial_result("a", {"val_acc": 45.0, "epoch": 2})  # ... while these reached the study after it
    s.on_trial_complete("b", {"val_acc": 70.0, "epoch": 3})

    restored = _searcher(storage)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_result("a", {"val_acc": 45.5, "epoch": 2})  # the resumed trial re-reports epoch 2
    restored.on_trial_complete("a", {"val_acc": 50.0, "epoch": 3})
    restored.on_trial_complete("b", {"val_acc": 70.0, "epoch": 3})  # already COMPLETE in the study
    trials = sorted(_study(storage).trials, key=lambda t: t.number)
    assert [t.state for t in trials] == [State.COMPLETE, State.COMPLETE]
    assert trials[0].intermediate_values == {1: 40.0, 2: 45.0, 3: 50.0} and trials[0].value == 50.0
    assert trials[1].value == 70.0


def test_a_searcher_restored_from_an_older_snapshot_does_not_draw_the_dead_drivers_points_again(storage, tmp_path):
    s = _searcher(storage)
    s.suggest("a")
    s.save(str(tmp_path / "searcher.pkl"))  # the snapshot that survived the kill ...
    lost = s.suggest("b")["alpha"]  # ... and a draw the dead driver made after it
    restored = _searcher(storage)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("c")["alpha"] != lost  # the seeded sampler's saved state would repeat it


def _generator(storage, tmp_path, max_concurrent: int = 8, restored: bool = False):
    """A search stage's generator over 5 trials; ``restored``: as Tune restores one (unpickled from tuner.pkl, made
    before any experiment was added, and never given one: its own file holds it)."""
    from ray.tune.experiment import Experiment

    from tuner.driver.generator import ReconciledGenerator

    gen = ReconciledGenerator(_searcher(storage), max_concurrent=max_concurrent)
    if not restored:
        gen.add_configurations([Experiment("sw", lambda config: None, num_samples=5, storage_path=str(tmp_path))])
    return gen


_POINTS = [{"alpha": a, "seed": s, "config_id": f"c{a}"} for s in (1, 2) for a in (0.3, 1.0)]


def _points(tmp_path, max_concurrent: int = 1, restored: bool = False):
    """The confirmation stage's generator over 4 fixed points (2 configurations x 2 seeds); ``restored`` as in
    ``_generator``."""
    from ray.tune.experiment import Experiment

    from tuner.driver.generator import PointsSearch, ReconciledGenerator

    gen = ReconciledGenerator(PointsSearch(_POINTS), max_concurrent=max_concurrent)
    if not restored:
        gen.add_configurations([Experiment("confirm", _noop, num_samples=len(_POINTS), storage_path=str(tmp_path))])
    return gen


def _noop(config) -> None:
    """A trainable (a named function: Tune names the trials after it)."""


def _run_out(gen, restored=()) -> list:
    """The trials ``gen`` makes until it is finished, each ended at once (as Tune tells it), after the ``restored``
    trials Tune runs again (their slots are held for them)."""
    for trial in restored:
        gen.on_trial_complete(trial.trial_id, result={"val_acc": 1.0})
    made = []
    while not gen.is_finished():
        trial = gen.next_trial()
        assert trial is not None, "the generator holds a slot no trial will free: the stage would wait for ever"
        made.append(trial)
        gen.on_trial_complete(trial.trial_id, result={"val_acc": 1.0})
    return made


def _point(trial) -> tuple:
    return trial.config["config_id"], trial.config["seed"]


@pytest.mark.parametrize("saved, listed", [(3, 1), (1, 3)], ids=["snapshot-past-the-list", "snapshot-behind-the-list"])
def test_a_fixed_point_stage_restored_beside_a_torn_trial_list_runs_each_point_once(tmp_path, saved, listed):
    """The confirmation's generator (was Tune's BasicVariantGenerator, restored as saved): its snapshot past the list
    lost the points the dead driver made after the list (a stage 'interrupted' on every resume); behind it, it ran
    a point twice; at --max-concurrent 1 a slot held for a trial the list has ended waited for ever."""
    from ray.tune.experiment.trial import Trial

    first, snap = _points(tmp_path), tmp_path / "snap"
    snap.mkdir()
    made = []
    for i in range(3):  # one at a time (--max-concurrent 1); the generator's snapshot after ``saved`` of them
        made.append(first.next_trial())
        if i + 1 == saved:
            first.save_to_dir(str(snap), "2026-12-03_12-00-00")
        if i < 2:
            made[-1].set_status(Trial.TERMINATED)
            first.on_trial_complete(made[-1].trial_id)
    _trial_list(snap, made[:listed])  # the list that reached storage: the last one listed is still running

    restored = _points(tmp_path, restored=True)
    restored.restore_from_dir(str(snap))
    more = _run_out(restored, [t for t in made[:listed] if t.status != Trial.TERMINATED])
    assert sorted(_point(t) for t in made[:listed] + more) == sorted((p["config_id"], p["seed"]) for p in _POINTS)


def test_a_confirmation_an_older_srrl_tune_started_resumes_from_its_basic_variant_state(tmp_path):
    """A stage an older srrl-tune ran with Tune's BasicVariantGenerator: --resume rebuilds its tuner.pkl with today's
    generator, which Tune never gives an experiment, and the stage holds only the old generator's file. From that
    file's spec and the trial list, the stage makes the points no trial holds, once each, as the old trials were
    made (the same trainable); without it, it counted 0 trials to make and ended short for good."""
    from ray import tune
    from ray.tune.experiment import Experiment
    from ray.tune.experiment.trial import Trial
    from ray.tune.search.basic_variant import BasicVariantGenerator

    old, snap = BasicVariantGenerator(points_to_evaluate=_POINTS, max_concurrent=2), tmp_path / "snap"
    snap.mkdir()
    space = {k: tune.choice(sorted({p[k] for p in _POINTS}, key=str)) for k in _POINTS[0]}  # as the old stage set it
    old.add_configurations([Experiment("confirm", _noop, config=space, num_samples=len(_POINTS),
                                       storage_path=str(tmp_path))])
    made = [old.next_trial(), old.next_trial()]
    made[0].set_status(Trial.TERMINATED)
    old.save_to_dir(str(snap), "2026-12-03_12-00-00")
    _trial_list(snap, made)

    restored = _points(tmp_path, max_concurrent=2, restored=True)
    assert restored.has_checkpoint(str(snap))
    restored.restore_from_dir(str(snap))
    more = _run_out(restored, made[1:])
    assert sorted(_point(t) for t in made + more) == sorted((p["config_id"], p["seed"]) for p in _POINTS)
    assert {t.trainable_name for t in more} == {made[0].trainable_name} and all(
        {k: t.config[k] for k in _POINTS[0]} in _POINTS for t in more)


def _trial_list(folder, trials) -> None:
    """The experiment state file Tune restores its trial list from, as ``TuneController.save_to_dir`` writes it."""
    import json

    (folder / "experiment_state-2026-12-03_12-00-00.json").write_text(
        json.dumps({"trial_data": [t.get_json_state() for t in trials]}))


@pytest.mark.parametrize("listed", [2, 4], ids=["count-past-the-list", "count-behind-the-list"])
def test_a_generator_restored_beside_a_torn_trial_list_makes_the_trials_num_samples_asks(storage, tmp_path, listed):
    """Tune uploads its trial list and the generator's count as separate files: a driver killed, or a disk
    filled, between them leaves them apart (seen in CI: every --resume stopped one trial short). The
    restored generator counts the trials the list holds, so Tune makes exactly num_samples in all."""
    first, snap = _generator(storage, tmp_path), tmp_path / "snap"
    snap.mkdir()
    made = [first.next_trial() for _ in range(3)]
    first.save_to_dir(str(snap), "2026-12-03_12-00-00")  # the count that reached the disk: 3
    made += [first.next_trial()]
    _trial_list(snap, made[:listed])  # the list that did

    restored = _generator(storage, tmp_path, restored=True)
    restored.restore_from_dir(str(snap))
    more = []
    while not restored.is_finished():
        more.append(restored.next_trial())
    assert listed + len(more) == 5 and None not in more


def test_trials_that_ended_after_the_generators_snapshot_free_their_concurrency_slots(storage, tmp_path):
    """The limiter's snapshot held 2 of 2 slots live; the newer list says both trials ended. Restored as
    saved, the slots never free and the resumed search waits forever with nothing running."""
    from ray.tune.experiment.trial import Trial

    first, snap = _generator(storage, tmp_path, max_concurrent=2), tmp_path / "snap"
    snap.mkdir()
    made = [first.next_trial(), first.next_trial()]
    assert first.next_trial() is None  # both slots taken
    first.save_to_dir(str(snap), "2026-12-03_12-00-00")
    for trial in made:
        trial.set_status(Trial.TERMINATED)
    _trial_list(snap, made)

    restored = _generator(storage, tmp_path, max_concurrent=2, restored=True)
    restored.restore_from_dir(str(snap))
    assert restored.next_trial() is not None and restored.next_trial() is not None
    assert restored.next_trial() is None  # the limit still holds


def test_a_searcher_state_of_an_older_version_is_refused_in_one_line(storage, tmp_path):
    import pickle

    from tuner.core.config import ConfigError

    (tmp_path / "searcher.pkl").write_bytes(pickle.dumps({"_ot_trials": {}, "_completed_trials": set()}))
    with pytest.raises(ConfigError, match="older srrl-tune .* resume this sweep with the srrl-tune that started it"):
        _searcher(storage).restore(str(tmp_path / "searcher.pkl"))


def test_an_errored_trial_stays_running_until_its_rerun_ends_or_the_stage_fails_it(storage, tmp_path):
    """--resume re-runs errored trials (a full disk): the study learns how the re-run ends; only once the
    stage ended for good does settle_study tell FAIL, with the error, for those still errored."""
    from tuner.driver.search import settle_study

    s = _searcher(storage)
    s.suggest("disk"), s.suggest("bug")
    s.on_trial_result("disk", {"val_acc": 40.0, "epoch": 1})
    s.on_trial_complete("disk", error=True)
    s.on_trial_complete("bug", error=True)
    assert [t.state for t in _study(storage).trials] == [State.RUNNING, State.RUNNING]
    s.save(str(tmp_path / "searcher.pkl"))
    again = _searcher(storage)
    again.restore(str(tmp_path / "searcher.pkl"))  # the resumed driver re-runs "disk" from its checkpoint
    again.on_trial_result("disk", {"val_acc": 45.0, "epoch": 2})
    again.on_trial_complete("disk", {"val_acc": 50.0, "epoch": 3})
    told = settle_study(storage, "s", [(0, None, []), (1, "ValueError: a bug", [])], max_epochs=3, metrics=["val_acc"])
    assert told == {"errored": 1, "settled": 0, "orphaned": 0}  # 0 is not RUNNING
    disk, bug = _study(storage).trials
    assert disk.state == State.COMPLETE and disk.intermediate_values == {1: 40.0, 2: 45.0, 3: 50.0}
    assert bug.state == State.FAIL and bug.user_attrs["error"] == "ValueError: a bug"


def test_a_trial_restored_past_the_searchers_snapshot_is_told_to_the_study_trial_its_config_names(storage, tmp_path):
    """Seen in a loaded CI round: a driver killed mid-upload left Tune's experiment state newer than the
    searcher's own snapshot file. Tune restores trial "late", which that snapshot never saw: its results
    carry ``optuna_trial`` in their config, and they reach that study trial, not a fresh one."""
    s = _searcher(storage)
    s.suggest("early")
    s.save(str(tmp_path / "searcher.pkl"))  # the searcher file that survived the kill
    late = s.suggest("late")  # asked after it, by the killed driver
    restored = _searcher(storage)
    restored.restore(str(tmp_path / "searcher.pkl"))
    config = {"config/optuna_trial": late["optuna_trial"]}
    restored.on_trial_result("late", {"val_acc": 20.0, "epoch": 1, **config})
    restored.on_trial_result("late", {"val_acc": 25.0, "epoch": 2, **config})
    restored.on_trial_complete("late", {"val_acc": 30.0, "epoch": 3, **config})
    trials = sorted(_study(storage).trials, key=lambda t: t.number)
    assert len(trials) == 2 and trials[1].state == State.COMPLETE and trials[1].value == 30.0
    assert trials[1].intermediate_values == {1: 20.0, 2: 25.0, 3: 30.0}
    assert trials[0].state == State.RUNNING  # "early" runs on; nothing is failed before the stage ends


def test_settle_study_tells_what_tune_ran_and_fails_what_it_never_kept(storage):
    """At the stage's end Tune's trial list is whole: a study trial still RUNNING whose Tune trial ended
    (the searcher never heard: its snapshot predated it) gets its history and outcome; one that no Tune
    trial holds (asked by a killed driver, lost with its experiment state) is FAIL, ``orphaned``."""
    from tuner.driver.search import settle_study

    s = _searcher(storage)
    for tid in ("ran", "cut", "div", "lost", "done"):
        s.suggest(tid)
    s.on_trial_complete("done", {"val_acc": 70.0, "epoch": 3})
    history = [{"epoch": 1, "val_acc": 40.0}, {"epoch": 2, "val_acc": 50.0}, {"epoch": 3, "val_acc": 60.0}]
    told = settle_study(storage, "s", [(0, None, history), (1, None, history[:1]),
                                       (2, None, [{"epoch": 1, "val_acc": 5.0, "diverged": True}]),
                                       (4, None, history)], max_epochs=3, metrics=["val_acc"])
    assert told == {"errored": 0, "settled": 3, "orphaned": 1}
    ran, cut, div, lost, done = sorted(_study(storage).trials, key=lambda t: t.number)
    assert ran.state == State.COMPLETE and ran.value == 60.0 and ran.intermediate_values == {1: 40.0, 2: 50.0, 3: 60.0}
    assert cut.state == State.PRUNED and cut.user_attrs["stopped_at_epoch"] == 1 and cut.intermediate_values == {1: 40.0}
    assert div.state == State.FAIL and div.user_attrs["diverged_epoch"] == 1 and div.intermediate_values == {}
    assert lost.state == State.FAIL and lost.user_attrs["orphaned"] is True
    assert done.state == State.COMPLETE and done.value == 70.0  # told once, by the searcher
    assert settle_study(storage, "s", [], max_epochs=3, metrics=["val_acc"]) == {"errored": 0, "settled": 0, "orphaned": 0}


def test_a_sweep_with_fewer_trials_than_first_points_enqueues_no_point_it_will_not_run(tmp_path):
    """``--num-samples 1`` on a space with the authors' two points: one is enqueued, none waits in the study for ever."""
    from search_spaces import SpaceContext, get_space
    from tuner.core.config import TrialConfig
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep_build import searcher

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    space, base = get_space("loss_weights"), TrialConfig()
    ctx = SpaceContext.for_config(base, num_classes=10, in_channels=1, input_size=8)
    assert len(space.initial_points(ctx)) >= 2
    for n in (1, 2):
        sweep = SweepConfig(name=f"s{n}", num_samples=n, max_concurrent=1, searcher="tpe", optuna_storage=storage)
        searcher(sweep, space, ctx, grid=None)
        study = optuna.load_study(study_name=f"s{n}", storage=storage)
        assert [t.state for t in study.trials] == [State.WAITING] * n
