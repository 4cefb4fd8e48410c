"""MLflow tracking: real Ray Tune (local, 2 CPUs) against a real SQLite MLflow store; no mocks."""
from __future__ import annotations

import os
import pickle
import sys
import time
from types import SimpleNamespace

import pytest

from tests._helpers import free_port, local_ray

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tuner import tracking as T  # noqa: E402  (after the env var)
from tuner.tracking.callback import MLflowTracking  # noqa: E402

pytestmark = pytest.mark.slow

MODES = ["ok", "early", "diverge", "fail"]


def _trainable(config):
    """3 epochs; 'diverge' reports a NaN loss and stops at epoch 2, 'fail' raises in epoch 2."""
    from ray import tune

    for e in range(1, config["epochs"] + 1):
        if config["mode"] == "fail" and e == 2:
            raise ValueError("boom at epoch 2")
        diverged = config["mode"] == "diverge" and e == 2
        tune.report({"epoch": e, "val_acc": 10.0 * e, "loss_total": float("nan") if diverged else 1.0 / e,
                     "diverged": diverged, "not_a_contract_metric": 5.0})
        if diverged:
            return


def _stop_early(trial_id, result):
    return result["config"]["mode"] == "early" and result["epoch"] >= 2


# ---- fixtures: one Ray, one store, one sweep per module -----------------------------------------
@pytest.fixture(scope="module")
def ray_local():
    with local_ray(log_to_driver=False) as ray:
        # the trainable lives in this test module, which Ray workers cannot import: ship it by value
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        yield ray


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    return T.default_tracking_uri(str(tmp_path_factory.mktemp("mlflow")))


@pytest.fixture(scope="module")
def client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _children(client, experiment_id, parent):
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    return {r.data.tags["srrl.trial_id"]: r for r in runs}


@pytest.fixture(scope="module")
def sweep(ray_local, uri, client, tmp_path_factory):
    """Start a sweep, run 4 trials (finished, stopped early, diverged, errored), then restore it."""
    from ray import tune

    params = {"space": "digits", "nested": {"a": 1}, "long": "x" * 7000}
    parent = T.start_sweep(uri, "exp-tune", "sweep-a", params, T.set_git_and_version_tags(), resume=False)
    exp_id = client.get_experiment_by_name("exp-tune").experiment_id
    storage = tmp_path_factory.mktemp("ray")
    cb = MLflowTracking(uri, exp_id, parent, epochs=3)
    tune.Tuner(
        _trainable,
        param_space={"mode": tune.grid_search(MODES), "epochs": 3, "opt": {"lr": 0.1}},
        run_config=tune.RunConfig(name="sweep-a", storage_path=str(storage), callbacks=[cb], verbose=0,
                                  stop=_stop_early),
    ).fit()
    first = _children(client, exp_id, parent)
    # experiment-level resume: Tune unpickles the callback from tuner.pkl and re-runs the errored trial
    tune.Tuner.restore(str(storage / "sweep-a"), _trainable, resume_errored=True).fit()
    second = _children(client, exp_id, parent)
    return SimpleNamespace(parent=parent, exp_id=exp_id, first=first, second=second)


def _by_mode(runs):
    return {r.data.params["mode"]: r for r in runs.values()}


# ---- the sweep ---------------------------------------------------------------------------------
def test_parent_run_has_tags_and_params(sweep, client):
    run = client.get_run(sweep.parent)
    tags, params = run.data.tags, run.data.params
    assert (tags["srrl.sweep"], tags["srrl.role"], tags["mlflow.runName"]) == ("sweep-a", "sweep", "sweep-a")
    assert tags["srrl.version.ray"] and tags["srrl.version.mlflow"]
    assert params["space"] == "digits" and params["nested.a"] == "1"
    assert len(params["long"]) == 6000


def test_one_nested_child_run_per_trial_with_its_config(sweep, client):
    assert len(sweep.first) == 4
    for tid, run in sweep.first.items():
        assert run.data.tags["mlflow.parentRunId"] == sweep.parent
        assert run.data.tags["mlflow.runName"] == tid and run.data.tags["srrl.role"] == "trial"
        assert run.data.params["epochs"] == "3" and run.data.params["opt.lr"] == "0.1"
    assert sorted(run.data.params["mode"] for run in sweep.first.values()) == sorted(MODES)


def test_metrics_are_logged_per_epoch(sweep, client):
    runs = _by_mode(sweep.first)
    ok = runs["ok"].info.run_id
    history = client.get_metric_history(ok, "val_acc")
    assert [(m.step, m.value) for m in history] == [(1, 10.0), (2, 20.0), (3, 30.0)]
    assert client.get_metric_history(ok, "epoch") == []  # the step, not a metric (it would plot as a diagonal)
    assert "not_a_contract_metric" not in runs["ok"].data.metrics  # only the metrics.py contract
    assert "diverged" not in runs["ok"].data.metrics  # bools are not metrics
    # NaN is never logged; the epoch it appeared in is tagged instead
    diverge = runs["diverge"]
    assert [m.step for m in client.get_metric_history(diverge.info.run_id, "loss_total")] == [1]
    assert diverge.data.tags["srrl.nonfinite.loss_total"] == "2"


def test_trial_end_status_tags(sweep):
    runs = _by_mode(sweep.second)
    ok, early, diverge, fail = (runs[m] for m in MODES)
    assert (ok.data.tags["srrl.status"], ok.info.status) == ("finished", "FINISHED")
    assert ok.data.tags["srrl.last_epoch"] == "3"
    assert (early.data.tags["srrl.status"], early.info.status) == ("stopped_early", "FINISHED")
    assert early.data.tags["srrl.stopped_at_epoch"] == "2"
    assert (diverge.data.tags["srrl.status"], diverge.info.status) == ("diverged", "FAILED")
    assert diverge.data.tags["srrl.diverged_epoch"] == "2"
    assert (fail.data.tags["srrl.status"], fail.info.status) == ("errored", "FAILED")
    assert fail.data.tags["srrl.error"] == "ValueError: boom at epoch 2"


def test_restored_sweep_reuses_child_runs(sweep, client):
    assert {t: r.info.run_id for t, r in sweep.second.items()} == {t: r.info.run_id for t, r in sweep.first.items()}
    all_runs = client.search_runs([sweep.exp_id], "")
    assert len(all_runs) == 5  # 1 parent + 4 children, nothing duplicated by the restore
    fail = _by_mode(sweep.second)["fail"]
    assert fail.data.tags["srrl.status"] == "errored"  # the re-run failed again, on the same run
    # the unpickled callback logged the re-run into the same run: epoch 1 appears once per attempt
    assert [m.step for m in client.get_metric_history(fail.info.run_id, "val_acc")] == [1, 1]


def test_pickled_callback_finds_existing_runs(sweep, client, uri):
    cb = MLflowTracking(uri, None, sweep.parent, epochs=3)  # experiment id looked up from the parent
    trials = [SimpleNamespace(trial_id=tid, config=r.data.params) for tid, r in sweep.first.items()]
    cb.on_trial_start(0, trials, trials[0])  # creates the client
    pickled = pickle.dumps(cb)
    assert b"MlflowClient" not in pickled  # Tune pickles callbacks: no open client travels
    clone = pickle.loads(pickled)
    for trial in trials:
        clone.on_trial_start(0, trials, trial)
        assert client.get_run(clone.run_ids[trial.trial_id]).info.status == "RUNNING"
    ids = {t: r.info.run_id for t, r in sweep.first.items()}
    assert clone.run_ids == ids and len(client.search_runs([sweep.exp_id], "")) == 5
    clone.on_trial_result(0, trials, trials[0], {"epoch": 3, "val_acc": 30.0})
    clone.on_trial_complete(0, trials, trials[0])
    run = client.get_run(ids[trials[0].trial_id])
    assert run.info.status == "FINISHED" and run.data.tags["srrl.status"] == "finished"
    # (the other runs stay RUNNING; the tests above read snapshots taken right after the sweep)


# ---- start / finish / resume of the parent ---------------------------------------------------------
def test_an_interrupted_sweep_marks_every_run_left_running(uri, client):
    """mark_interrupted ends the listed trials' runs and any other child still RUNNING (a trial the stop caught
    before Tune saved its state) as KILLED + interrupted; a finished child keeps its record."""
    parent = T.start_sweep(uri, "exp-interrupted", "s1", {}, {}, resume=False)
    exp = client.get_run(parent).info.experiment_id
    runs = {}
    for tid in ("listed", "unlisted", "done"):
        runs[tid] = client.create_run(exp, tags={"mlflow.parentRunId": parent, "srrl.trial_id": tid}).info.run_id
    client.set_tag(runs["done"], "srrl.status", "finished")
    client.set_terminated(runs["done"], status="FINISHED")
    T.mark_interrupted(uri, parent, ["listed"])
    seen = {tid: (client.get_run(r).info.status, client.get_run(r).data.tags.get("srrl.status")) for tid, r in runs.items()}
    assert seen == {"listed": ("KILLED", "interrupted"), "unlisted": ("KILLED", "interrupted"), "done": ("FINISHED", "finished")}
    assert client.get_run(parent).data.tags["srrl.interrupted"] == "2"


def test_start_sweep_resume_and_name_clash(uri, client):
    # a start that failed while setting up (before sweep_started) leaves the name free: its parent is replaced
    failed = T.start_sweep(uri, "exp-resume", "s1", {"a": 0}, {}, resume=False)
    parent = T.start_sweep(uri, "exp-resume", "s1", {"a": 1}, {}, resume=False)
    gone = client.get_run(failed).info
    assert parent != failed and (gone.lifecycle_stage, gone.status) == ("deleted", "FAILED")
    T.sweep_started(uri, parent)
    assert "srrl.setting_up" not in client.get_run(parent).data.tags
    with pytest.raises(ValueError, match=r"already exists.*--resume"):
        T.start_sweep(uri, "exp-resume", "s1", {"a": 1}, {}, resume=False)
    T.finish_sweep(uri, parent, "KILLED")
    assert client.get_run(parent).info.status == "KILLED"
    assert T.start_sweep(uri, "exp-resume", "s1", {"a": 2}, {}, resume=True) == parent
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags["srrl.resume_count"] == "1"
    exp_id = T.experiment_id(uri, "exp-resume")
    assert exp_id == client.get_experiment_by_name("exp-resume").experiment_id
    assert len(client.search_runs([exp_id], "")) == 1
    with pytest.raises(ValueError, match=r"^experiment: no experiment named 'exp-missing'"):
        T.experiment_id(uri, "exp-missing")
    with pytest.raises(ValueError, match=r"^resume: no sweep named 'nope' in experiment 'exp-resume'"):
        T.start_sweep(uri, "exp-resume", "nope", {}, {}, resume=True)
    with pytest.raises(ValueError, match=r"^resume: no sweep named"):
        T.start_sweep(uri, "exp-missing", "s1", {}, {}, resume=True)
    with pytest.raises(ValueError, match=r"^status:"):
        T.finish_sweep(uri, parent, "DONE")
    T.finish_sweep(uri, parent)
    assert client.get_run(parent).info.status == "FINISHED"


# ---- MLflow outage: retry, buffer, flush ---------------------------------------------------------
def test_unreachable_server_buffers_then_flushes(uri, client, monkeypatch):
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)  # the callback must bound them itself
    parent = T.start_sweep(uri, "exp-outage", "s", {}, {}, resume=False)
    exp_id = client.get_experiment_by_name("exp-outage").experiment_id
    cb = MLflowTracking(uri, exp_id, parent, epochs=3, retry_delays=(0.05, 0.1), flush_interval_s=0)
    trial = SimpleNamespace(trial_id="t0", config={"epochs": 3})
    cb.on_trial_start(0, [trial], trial)
    cb.on_trial_result(0, [trial], trial, {"epoch": 1, "val_acc": 1.0})

    cb.tracking_uri = f"http://127.0.0.1:{free_port()}"  # the server goes away
    t0 = time.perf_counter()
    cb.on_trial_result(0, [trial], trial, {"epoch": 2, "val_acc": 2.0})
    cb.on_trial_result(0, [trial], trial, {"epoch": 3, "val_acc": 3.0})
    assert time.perf_counter() - t0 < 10
    assert cb.held == [("log", "t0", [2, 3])]  # epochs 2 and 3 wait as one request
    state = pickle.loads(pickle.dumps(cb))  # the buffer survives pickling
    assert state.held == cb.held

    cb.tracking_uri = uri  # and comes back
    cb.on_trial_complete(0, [trial], trial)
    cb.on_experiment_end([trial])
    assert cb.held == []
    run_id = cb.run_ids["t0"]
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2, 3]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["srrl.status"] == "finished"


def test_epoch_metrics_are_held_then_sent_as_one_request_per_trial(uri, client, monkeypatch):
    parent = T.start_sweep(uri, "exp-coalesce", "s", {}, {}, resume=False)
    cb = MLflowTracking(uri, None, parent, epochs=3, flush_interval_s=3600)
    a, b = (SimpleNamespace(trial_id=t, config={"epochs": 3}) for t in ("ta", "tb"))
    for trial in (a, b):
        cb.on_trial_start(0, [a, b], trial)  # a start is sent at once: the runs exist
    from mlflow.tracking import MlflowClient

    calls = []
    real = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, run_id, **kw: calls.append(run_id) or real(self, run_id, **kw))
    for epoch in (1, 2):
        for trial in (a, b):
            cb.on_trial_result(0, [a, b], trial, {"epoch": epoch, "val_acc": 10.0 * epoch})
    cb.on_step_end(0, [a, b])
    assert calls == [] and client.get_metric_history(cb.run_ids["ta"], "val_acc") == []  # held: not due yet

    cb.flush_interval_s = 0.0
    cb.on_step_end(0, [a, b])  # due: one request per trial for both epochs
    assert sorted(calls) == sorted(cb.run_ids.values())
    for tid in ("ta", "tb"):
        assert [(m.step, m.value) for m in client.get_metric_history(cb.run_ids[tid], "val_acc")] == [(1, 10.0), (2, 20.0)]

    cb.flush_interval_s = 3600
    cb.on_trial_result(0, [a, b], a, {"epoch": 3, "val_acc": 30.0})  # held ...
    cb.on_trial_complete(0, [a, b], a)  # ... and sent before the trial's end
    assert [m.step for m in client.get_metric_history(cb.run_ids["ta"], "val_acc")] == [1, 2, 3]
    run = client.get_run(cb.run_ids["ta"])
    assert run.info.status == "FINISHED" and run.data.tags["srrl.status"] == "finished"


def test_held_metrics_survive_a_killed_driver_in_the_callback_state(uri, client):
    """Tune saves ``get_state()`` with the trials' checkpoints; a driver killed before its next flush
    hands the held epochs to the restored callback, which sends them (once, whatever was sent before)."""
    import cloudpickle

    parent = T.start_sweep(uri, "exp-held", "s", {}, {}, resume=False)
    cb = MLflowTracking(uri, None, parent, epochs=3, flush_interval_s=3600)
    trial = SimpleNamespace(trial_id="tk", config={"epochs": 3, "alpha": 0.5})
    cb.on_trial_start(0, [trial], trial)
    cb.on_trial_result(0, [trial], trial, {"epoch": 1, "val_acc": 10.0, "student_params": 99.0})
    cb.flush_interval_s = 0.0
    cb.on_step_end(0, [trial])  # epoch 1 sent
    cb.flush_interval_s = 3600
    for epoch in (2, 3):
        cb.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_acc": 10.0 * epoch, "student_params": 99.0})
    cb.tracking_uri = f"http://127.0.0.1:{free_port()}"  # MLflow unreachable at the snapshot: the held
    snapshot = cloudpickle.dumps(cb.get_state())  # epochs can only go with what Tune writes beside the checkpoints
    assert cb.held == [("log", "tk", [2, 3])]
    assert [m.step for m in client.get_metric_history(T.child_run_ids(uri, parent)["tk"], "val_acc")] == [1]
    del cb  # SIGKILL: epochs 2 and 3 were never sent

    restored = MLflowTracking(uri, None, parent, epochs=3, flush_interval_s=3600)
    restored.set_state(cloudpickle.loads(snapshot))
    restored.flush_interval_s = 0.0
    restored.on_step_end(0, [trial])
    run_id = T.child_run_ids(uri, parent)["tk"]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")] == [(1, 10.0), (2, 20.0), (3, 30.0)]
    assert len(client.get_metric_history(run_id, "student_params")) == 1  # a per-trial constant: once
    restored.set_state(cloudpickle.loads(snapshot))  # the same snapshot again: nothing is logged twice
    restored.on_step_end(0, [trial])
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [1, 2, 3]


def test_a_snapshot_sends_the_held_metrics_first(uri, client):
    """Tune writes the callback's state to its own file; a driver killed mid-upload may restore an older
    one beside a newer experiment state. ``get_state`` sends what is held, so that loses no epoch."""
    parent = T.start_sweep(uri, "exp-snap", "s", {}, {}, resume=False)
    cb = MLflowTracking(uri, None, parent, epochs=3, flush_interval_s=3600)
    trial = SimpleNamespace(trial_id="ts", config={"epochs": 3})
    cb.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        cb.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_acc": 10.0 * epoch})
    run_id = T.child_run_ids(uri, parent)["ts"]
    assert client.get_metric_history(run_id, "val_acc") == []  # held: the flush interval is an hour
    assert cb.get_state()["pending"] == []
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")] == [(1, 10.0), (2, 20.0)]


def test_a_trial_restored_at_its_final_checkpoint_ends_finished(uri, client):
    """Killed after a trial's last epoch, before Tune saw it end: the restored trial resumes at its final
    checkpoint and reports nothing. The callback's saved state can be a snapshot older than Tune's
    experiment state (separate files, seen in a loaded CI round); the later epoch of the two decides."""
    import cloudpickle

    parent = T.start_sweep(uri, "exp-final", "s", {}, {}, resume=False)
    cb = MLflowTracking(uri, None, parent, epochs=3, flush_interval_s=0.0)
    trial = SimpleNamespace(trial_id="tf", config={"epochs": 3}, last_result=None)
    cb.on_trial_start(0, [trial], trial)
    for epoch in (1, 2):
        cb.on_trial_result(0, [trial], trial, {"epoch": epoch, "val_acc": 10.0 * epoch})
    older = cloudpickle.dumps(cb.get_state())  # the callback's file of an older snapshot
    cb.on_trial_result(0, [trial], trial, {"epoch": 3, "val_acc": 30.0, "test_acc": 29.0})
    del cb  # SIGKILL; the experiment state that landed holds epoch 3 and its checkpoint

    restored = MLflowTracking(uri, None, parent, epochs=3)
    restored.set_state(cloudpickle.loads(older))
    trial.last_result = {"epoch": 3, "val_acc": 30.0, "test_acc": 29.0, "diverged": 0.0}
    restored.on_trial_start(0, [trial], trial)
    restored.on_trial_complete(0, [trial], trial)  # no result: the trainable had no epoch left
    run = client.get_run(T.child_run_ids(uri, parent)["tf"])
    assert run.info.status == "FINISHED"
    assert (run.data.tags["srrl.status"], run.data.tags["srrl.last_epoch"]) == ("finished", "3")
    assert "srrl.stopped_at_epoch" not in run.data.tags


def test_a_run_created_just_before_a_kill_gets_its_params_on_resume(uri, client):
    """Killed between creating a trial's run and logging its params (before any state snapshot): the
    resumed driver finds the run by tag and logs the params it lacks (seen in a loaded CI round)."""
    parent = T.start_sweep(uri, "exp-bare", "s", {}, {}, resume=False)
    exp = client.get_run(parent).info.experiment_id
    client.create_run(exp, tags=T.trial_tags(parent, "tb", {"alpha": 0.5}))  # the dead driver's last act
    resumed = MLflowTracking(uri, None, parent, epochs=3, base_params={"seed": 7})
    trial = SimpleNamespace(trial_id="tb", config={"alpha": 0.5})
    resumed.on_trial_start(0, [trial], trial)
    run = client.get_run(T.child_run_ids(uri, parent)["tb"])
    assert (run.data.params["seed"], run.data.params["alpha"]) == ("7", "0.5") and run.info.status == "RUNNING"


def test_a_run_that_sync_created_meanwhile_is_reused(uri, client):
    """``run_search.py --sync`` during a live sweep creates a trial's run; the callback's late start must not add a second."""
    from tuner.tracking.backfill import create_trial_run, find_sweep_runs

    parent = T.start_sweep(uri, "exp-sync-live", "s", {}, {}, resume=False)
    cb = MLflowTracking(uri, None, parent, epochs=3)
    first, late = (SimpleNamespace(trial_id=t, config={"epochs": 3}) for t in ("t1", "t2"))
    cb.on_trial_start(0, [first], first)  # the callback has listed the sweep's children now
    made = create_trial_run(find_sweep_runs("exp-sync-live", "s", uri), "t2")
    cb.on_trial_start(0, [first, late], late)
    cb.on_trial_result(0, [first, late], late, {"epoch": 3, "val_acc": 5.0})
    cb.on_trial_complete(0, [first, late], late)
    assert cb.run_ids["t2"] == made
    runs = client.search_runs([T.experiment_id(uri, "exp-sync-live")], "tags.`srrl.trial_id` = 't2'")
    assert [r.info.run_id for r in runs] == [made] and runs[0].data.tags["srrl.status"] == "finished"


def test_result_without_epoch_uses_training_iteration(uri, client):
    parent = T.start_sweep(uri, "exp-noepoch", "s", {}, {}, resume=False)
    cb = MLflowTracking(uri, None, parent, epochs=5, metric_keys=["val_acc", "custom"])
    trial = SimpleNamespace(trial_id="t1", config={})
    cb.on_trial_start(0, [trial], trial)
    cb.on_trial_result(0, [trial], trial, {"training_iteration": 2, "val_acc": 5.0, "custom": 1, "loss_total": 1.0})
    cb.on_trial_complete(0, [trial], trial)
    run = client.get_run(cb.run_ids["t1"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [2]
    assert set(run.data.metrics) == {"val_acc", "custom"}
    assert run.data.tags["srrl.status"] == "stopped_early" and run.data.tags["srrl.stopped_at_epoch"] == "2"
