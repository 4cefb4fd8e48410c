"""What ``--resume`` rebuilds before it restores a sweep, with real Ray, Optuna and MLflow: a trial's result log
older than its checkpoints (the kill skew of a loaded round), and a ``tuner.pkl`` an older srrl-tune wrote."""
from __future__ import annotations

import re

import pytest

from tests._helpers import as_an_older_srrl_tune_wrote_it, assert_records_agree, cli_study, run_search, stall_watched, tune_results

pytestmark = pytest.mark.slow


def test_a_result_log_older_than_its_checkpoints_is_completed_on_resume(tmp_path, env):
    """The kill skew of a loaded round, set up exactly: the driver died after Tune's experiment state (the
    trial ended) reached storage but before the trial's last result.json did. ``--resume`` completes the
    log from the newest checkpoint's history, so table, study and MLflow agree with what the trial ran.
    The sweep's tuner.pkl is also one an srrl-tune before the stall watch wrote: it is rebuilt, so the resumed
    sweep is watched."""
    import json

    import mlflow
    import yaml

    folder = tmp_path / "ray_results" / "sk"
    args = ("--confirm", "0", "--num-samples", "2", "--epochs", "3", "--teacher-epochs", "2", "--scheduler", "fifo")
    proc = run_search(tmp_path, env, "--name", "sk", *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    full = tune_results(folder, by_dir=True)
    trial, rows = max(full.items(), key=lambda kv: max(r["val_acc"] for r in kv[1][1:]))  # its best is not epoch 1
    (folder / trial / "result.json").write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:40])  # + a torn line
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    parent = next(r for r in client.search_runs([client.get_experiment_by_name("sk").experiment_id])
                  if r.data.tags.get("srrl.role") == "sweep")
    client.update_run(parent.info.run_id, status="RUNNING")  # as the killed driver left it
    # and as an srrl-tune before the stall watch left it
    assert stall_watched(folder) and yaml.safe_load((folder / "srrl_sweep.yaml").read_text())["teacher"]["teacher_hash"]
    as_an_older_srrl_tune_wrote_it(folder)

    done = run_search(tmp_path, env, "--resume", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "completed the result.json of 1 trial(s) from their newest checkpoints" in done.stdout
    assert f"{folder}/tuner.pkl was written by an older srrl-tune (version 1 of its Tune objects, not 2: no stall " \
           "watch); rebuilt it from srrl_sweep.yaml" in done.stdout
    assert stall_watched(folder) and "tuner_pkl: 2" in (folder / "srrl_sweep.yaml").read_text()
    rebuilt = tune_results(folder, by_dir=True)[trial]
    assert [r["epoch"] for r in rebuilt] == [1, 2, 3]
    assert [r.get("rebuilt_from_checkpoint", False) for r in rebuilt] == [False, True, True]
    for key in ("val_acc", "best_val_acc", "loss_total", "lr", "test_acc", "student_params"):
        assert [r.get(key) for r in rebuilt] == [r.get(key) for r in rows], key  # bit-equal: the checkpoint's own
    assert rebuilt[-1]["trial_id"] == rows[-1]["trial_id"] and rebuilt[-1]["config"] == rows[-1]["config"]
    assert rebuilt[-1]["checkpoint_dir_name"] == rows[-1]["checkpoint_dir_name"]
    best = f"{max(r['val_acc'] for r in rows):.2f}"
    assert re.search(rf"^\s*1 .*{best}", done.stdout, re.M) or best in done.stdout, done.stdout[-2000:]
    assert_records_agree(uri, "sk", folder, cli_study(tmp_path, "sk"))
