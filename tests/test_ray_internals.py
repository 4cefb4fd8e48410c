"""Pins the Ray Tune internals behind ``tuner.driver.ray_internals`` to the installed Ray: a Ray that changes one
fails here, by name, not in a resumed sweep."""
from __future__ import annotations

import json

import pytest
import ray
from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher

from tuner.driver import ray_internals as RI


def _state(folder, stamp: str, trial_ids) -> None:
    rows = [[json.dumps({"trial_id": t, "status": "TERMINATED"}), None] for t in trial_ids]
    (folder / f"experiment_state-{stamp}.json").write_text(json.dumps({"trial_data": rows}))


def test_the_newest_experiment_state_is_the_one_tune_restores(tmp_path):
    assert RI.newest_experiment_state(str(tmp_path)) is None
    _state(tmp_path, "2026-12-01_10-00-00", ["a"])
    _state(tmp_path, "2026-12-02_09-00-00", ["a", "b"])
    newest = RI.newest_experiment_state(str(tmp_path))
    assert newest is not None and newest.endswith("experiment_state-2026-12-02_09-00-00.json")
    from ray.tune.execution.tune_controller import TuneController

    assert RI.EXPERIMENT_STATE_GLOB == TuneController.CKPT_FILE_TMPL.format("*")


class _One(Searcher):
    """A searcher that always suggests the same point."""

    def suggest(self, trial_id):
        return {"a": 1}


def test_a_generator_told_its_trial_count_is_finished_at_num_samples():
    generator = SearchGenerator(_One(metric="x", mode="max"))
    generator.set_state({**generator.get_state(), "total_samples": 3})  # as num_samples=3 sets it
    RI.set_trials_created(generator, 2)
    assert not generator.is_finished()
    RI.set_trials_created(generator, 3)
    assert generator.is_finished()


def test_a_limiter_with_its_live_trials_set_suggests_only_when_a_slot_is_free():
    limiter = ConcurrencyLimiter(_One(metric="x", mode="max"), max_concurrent=2)
    RI.set_live_trials(limiter, ["t1", "t2"])
    assert limiter.suggest("t3") is None  # both slots held
    RI.set_live_trials(limiter, ["t1"])
    assert limiter.suggest("t3") == {"a": 1} and limiter.suggest("t4") is None


def test_a_function_trainable_becomes_a_trainable_class_whose_cleanup_runs_at_stop():
    def fn(config):
        ray.tune.report({"x": 1})

    cls = RI.function_trainable_class(fn)
    assert isinstance(cls, type) and issubclass(cls, ray.tune.Trainable) and callable(cls.cleanup)


@pytest.mark.slow
def test_a_running_trials_actor_is_reachable_and_killing_it_fails_the_trial(tmp_path):
    """``trial_actor`` is the handle of the actor a trial runs in: ``ray.kill`` on it ends the trial as a dead worker."""
    import time

    from ray import tune

    from tests._helpers import local_ray

    def slow(config):
        for i in range(300):
            tune.report({"i": i})
            time.sleep(0.1)

    seen = {}

    class KillAtFirstResult(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if not seen:
                seen["actor"] = RI.trial_actor(trial)
                ray.kill(seen["actor"])

    with local_ray():
        grid = tune.Tuner(slow, run_config=tune.RunConfig(storage_path=str(tmp_path), callbacks=[KillAtFirstResult()],
                                                          verbose=0)).fit()
    assert isinstance(seen["actor"], ray.actor.ActorHandle)
    assert isinstance(grid[0].error, ray.exceptions.RayActorError) and grid[0].metrics["i"] < 299


@pytest.mark.parametrize("uri", [False, True])
def test_what_a_new_tuner_writes_is_what_a_fresh_start_may_find_and_reuse(tmp_path, uri):
    """``tune.Tuner(...)`` writes exactly ``TUNER_START_FILES`` into a new sweep folder (before Ray starts): a start
    that failed after it and before its sweep file leaves a folder the same command may take again."""
    from ray import tune

    from tuner.driver.atomic_fs import PART_SUFFIX
    from tuner.driver.storage import SweepFolder
    from tuner.driver.sweep import _uncommitted

    storage = SweepFolder.of(f"file://{tmp_path}" if uri else str(tmp_path))
    path, fs = storage.for_tune()
    tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="s", storage_path=path, storage_filesystem=fs))
    folder = storage.child("s")
    assert folder.names() == sorted(RI.TUNER_START_FILES) and not ray.is_initialized()
    (tmp_path / "s" / f"srrl_sweep.yaml{PART_SUFFIX}").write_text("half")  # an upload the failure cut short
    assert _uncommitted(folder)
    (tmp_path / "s" / "srrl_sweep.yaml").write_text("sweep: {}\n")
    assert not _uncommitted(folder)
