"""tuner.driver.sync's rules without a real sweep: when a Tune experiment is over, when a trial ended, what
it should have in MLflow (per-epoch metrics, per-trial constants once), the base config's source and
the log_batch sizes, and what a remote sweep folder fetches."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List

import pytest

from run_search import main
from tests._helpers import trial_runs
from tuner.core import metrics as M
from tuner import tracking as T

KEYS = M.PER_EPOCH + M.PER_TRIAL
NAME = "syn"


def _sync(uri: str, folder: Path, capsys, experiment: str) -> str:
    capsys.readouterr()
    assert main(["--sync", str(folder), "--experiment", experiment, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.strip()


@pytest.mark.parametrize("statuses, why", [
    ({}, "no Tune experiment state"),
    ({"a": "TERMINATED", "b": "PENDING"}, "1 of 2 trials not ended"),
    ({"a": "RUNNING", "b": "PAUSED", "c": "ERROR"}, "2 of 3 trials not ended"),
    ({"a": "TERMINATED", "b": "ERROR"}, None),  # and no search state to say more are planned
])
def test_sweep_not_over_reads_tunes_statuses(tmp_path, statuses, why):
    from tuner.driver.sync import sweep_not_over

    assert sweep_not_over(tmp_path, statuses) == why


def test_sweep_not_over_reads_the_planned_trials_from_the_sweep_file(tmp_path):
    """The sweep file says the search plans 3 trials: with 2 started and ended the sweep is not over;
    with 3 it is. A sweep file from before the count was kept leaves it to Tune's statuses."""
    from tuner.driver.sync import sweep_not_over
    from tuner.core.config import TrialConfig
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep_file import SWEEP_FILE, sweep_yaml

    ended = {"a": "TERMINATED", "b": "ERROR"}
    sweep, base = SweepConfig(name=NAME), TrialConfig()
    (tmp_path / SWEEP_FILE).write_text(sweep_yaml(sweep, base, trials=3))
    assert sweep_not_over(tmp_path, ended) == "2 of its 3 trials started"
    assert sweep_not_over(tmp_path, {**ended, "c": "TERMINATED"}) is None
    (tmp_path / SWEEP_FILE).write_text(sweep_yaml(sweep, base))  # written before sweeps kept the count
    assert sweep_not_over(tmp_path, ended) is None


def _trial(last: dict, tune_status=None, error=None):
    from tuner.driver.sync import TuneTrial

    return TuneTrial("t", Path("."), {}, [{M.EPOCH: 1}, last], tune_status, error)


@pytest.mark.parametrize("last, tune_status, planned, expected", [
    ({M.EPOCH: 3}, None, 3, ("finished", {T.TAG_LAST_EPOCH: "3"})),
    ({M.EPOCH: 3}, "TERMINATED", 3, ("finished", {T.TAG_LAST_EPOCH: "3"})),
    ({M.EPOCH: 2}, None, 3, None),
    ({M.EPOCH: 2}, "RUNNING", 3, None),
    ({M.EPOCH: 2}, "TERMINATED", 3, ("stopped_early", {T.TAG_LAST_EPOCH: "2", T.TAG_STOPPED_AT: "2"})),
    ({M.EPOCH: 2, "done": True}, None, 3, ("stopped_early", {T.TAG_LAST_EPOCH: "2", T.TAG_STOPPED_AT: "2"})),
    ({M.EPOCH: 2, T.DIVERGED_KEY: 1.0}, "TERMINATED", 3, ("diverged", {T.TAG_LAST_EPOCH: "2", T.TAG_DIVERGED_EPOCH: "2"})),
    ({M.EPOCH: 2}, "ERROR", 3, ("errored", {T.TAG_LAST_EPOCH: "2", T.TAG_ERROR: "ValueError: boom"})),
    ({M.EPOCH: 3}, "ERROR", 3, ("errored", {T.TAG_LAST_EPOCH: "3", T.TAG_ERROR: "ValueError: boom"})),
    ({"training_iteration": 3}, None, None, None),
    ({"training_iteration": 3, "done": True}, None, None, ("stopped_early", {T.TAG_LAST_EPOCH: "3", T.TAG_STOPPED_AT: "3"})),
])
def test_trial_end_follows_the_callbacks_rules(last, tune_status, planned, expected):
    from tuner.driver.sync import trial_end

    assert trial_end(_trial(last, tune_status, "ValueError: boom"), planned) == expected


@pytest.mark.parametrize("base_from", ["sweep-yaml", "legacy-parent-params"])
def test_sync_logs_in_batches_of_at_most_1000_metrics(tmp_path, capsys, monkeypatch, base_from):
    """A long trial (150 epochs), written as Tune writes it, goes in log_batch calls of <= 1000; the per-trial
    metrics once. Its params: the base of the folder's srrl_sweep.yaml, or the parent's ``base.*`` params
    of a sweep recorded before they moved there."""
    import yaml
    from mlflow.tracking import MlflowClient

    from tuner.core.config import TrialConfig
    from tuner.core.sweep_config import SweepConfig

    uri = f"sqlite:///{tmp_path / 'long.db'}"
    legacy = base_from == "legacy-parent-params"
    T.start_sweep(uri, "long", "long", {"base.epochs": 150} if legacy else {"sweep.name": "long"}, {}, resume=False)
    (tmp_path / "long").mkdir()
    if not legacy:
        (tmp_path / "long" / "srrl_sweep.yaml").write_text(yaml.safe_dump(
            {"sweep": SweepConfig(name="long").to_dict(), "base": TrialConfig(epochs=150, lr=0.07).to_dict()}))
    trial = tmp_path / "long" / "train_srrl_abc_00000_0_x"
    trial.mkdir()
    (trial / "params.json").write_text(json.dumps({"alpha": 0.5}))
    rows = [{**{k: float(e * 100 + i) for i, k in enumerate(KEYS)}, M.EPOCH: e, "trial_id": "abc_00000",
             "timestamp": 1_700_000_000 + e, "done": False, "training_iteration": e} for e in range(1, 151)]
    (trial / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    sizes: List[int] = []
    real = MlflowClient.log_batch

    def spy(self, run_id, metrics=(), *args, **kwargs):
        if metrics:
            sizes.append(len(metrics))
        return real(self, run_id, metrics, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    total = 150 * len(M.PER_EPOCH) + len(M.PER_TRIAL)
    line = _sync(uri, tmp_path / "long", capsys, experiment="long")
    assert f"1 trials, 1 runs created, {total} metrics backfilled, 1 runs ended, 0 students exported; " \
           "parent run left RUNNING: the sweep is not over (no Tune experiment state); " in line, line
    assert sizes == [1000] * (total // 1000) + [total % 1000]
    (run,) = trial_runs(uri, "long")
    assert run.data.params["alpha"] == "0.5" and run.data.params["epochs"] == "150"
    if not legacy:  # every field of the base config, the per-trial resources as the driver sets them
        fields = {f.name for f in dataclasses.fields(TrialConfig)}
        assert fields <= set(run.data.params) and run.data.params["lr"] == "0.07" and run.data.params["threads"] == "1"
    assert run.data.tags[T.TAG_STATUS] == "finished"
    client = MlflowClient(uri)
    history = client.get_metric_history(run.info.run_id, M.VAL_ACC)
    assert [(m.step, m.value, m.timestamp) for m in history] == \
           [(e, float(e * 100 + KEYS.index(M.VAL_ACC)), (1_700_000_000 + e) * 1000) for e in range(1, 151)]
    macs = client.get_metric_history(run.info.run_id, M.STUDENT_MACS)  # a per-trial constant: once, epoch 1
    assert [(m.step, m.value) for m in macs] == [(1, float(100 + KEYS.index(M.STUDENT_MACS)))]
    assert _sync(uri, tmp_path / "long", capsys, experiment="long").startswith(
        "sync 'long' (experiment 'long'): 1 trials, 0 runs created, 0 metrics backfilled")


def test_trial_metrics_logs_per_trial_constants_once():
    """After a restart (epoch 2 reported twice) the per-epoch value is the last one; a constant stays at its first."""
    from tuner.driver.sync import TuneTrial, trial_metrics

    results = [{M.EPOCH: 1, M.VAL_ACC: 10.0, "timestamp": 1},
               {M.EPOCH: 2, M.VAL_ACC: 20.0, M.STUDENT_MACS: 5.0, "timestamp": 2},
               {M.EPOCH: 2, M.VAL_ACC: 22.0, M.STUDENT_MACS: 6.0, "timestamp": 3},
               {M.EPOCH: 3, M.VAL_ACC: 30.0, M.STUDENT_MACS: 6.0, M.TEST_ACC: float("nan"), "timestamp": 4}]
    values, nonfinite = trial_metrics(TuneTrial("t", Path("."), {}, results))
    assert {k: v for k, (v, _) in values.items()} == {(M.VAL_ACC, 1): 10.0, (M.VAL_ACC, 2): 22.0,
                                                      (M.VAL_ACC, 3): 30.0, (M.STUDENT_MACS, 2): 5.0}
    assert nonfinite == {M.TEST_ACC: 3}



def test_a_remote_sweep_is_fetched_without_older_checkpoints():
    from tuner.driver.sync import _needed

    files = ["srrl_sweep.yaml", "experiment_state-x.json", "t1/result.json", "t1/checkpoint_000001/trainer_state.pt",
             "t1/checkpoint_000002/trainer_state.pt", "t2/result.json", "t2/checkpoint_000000/trainer_state.pt"]
    assert _needed(files) == [f for f in files if "checkpoint_000001" not in f]
