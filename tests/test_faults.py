"""Faults a long sweep must survive, with real Ray, Optuna and MLflow: a worker node dies, the driver
is SIGKILLed twice, a trial diverges, the tracking server is unreachable, a checkpoint cannot be written,
a disk fills (on a tmpfs of a few MB: these tests skip where mounting one is not allowed)."""
from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest

from tests._helpers import (assert_records_agree, cli_study, free_port, kill_when, run_search, start_run_search, trial_runs,
                            tune_results)
from tests._outages import fill_disk, resize_disk, small_disk

pytestmark = pytest.mark.slow


def test_worker_node_dies_mid_sweep(tmp_path, env, monkeypatch):
    """Remove a worker without grace while its trial runs: the trial resumes from its last checkpoint elsewhere."""
    EPOCHS = 10  # the kill lands after epoch 3 and before the last: room for a checkpoint to resume from
    import ray
    from ray.cluster_utils import Cluster

    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep

    monkeypatch.setenv("RAY_TMPDIR", env["RAY_TMPDIR"])
    monkeypatch.chdir(tmp_path)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    folder = tmp_path / "shared" / "nd"
    killed: dict = {}

    def kill_when_a_trial_is_midway() -> None:
        deadline = time.monotonic() + 600
        victim = workers[1]
        while time.monotonic() < deadline and not killed:
            for name, rows in tune_results(folder, by_dir=True).items():
                if len(rows) >= 3 and rows[-1].get("node_id") == victim.node_id and rows[-1]["epoch"] < EPOCHS:
                    killed.update(trial=name, epoch=rows[-1]["epoch"])
                    cluster.remove_node(victim, allow_graceful=False)
                    return
            time.sleep(0.05)

    try:
        ray.init(address=cluster.address)
        killer = threading.Thread(target=kill_when_a_trial_is_midway, daemon=True)
        killer.start()
        sweep, base = SweepConfig.split({"name": "nd", "num_samples": 3, "confirm": 0, "epochs": EPOCHS, "teacher_epochs": 2,
                                         "scheduler": "fifo", "max_failures": 3, "storage_path": str(tmp_path / "shared")})
        result = run_sweep(sweep, base, verbose=0)
        killer.join(timeout=5)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert killed, "no trial ran on the worker that was to be killed"
    assert [r["status"] for r in result.rows] == ["finished"] * 3
    rows = tune_results(folder, by_dir=True)[killed["trial"]]
    epochs = [r["epoch"] for r in rows]
    assert epochs[-1] == EPOCHS and sorted(set(epochs)) == list(range(1, EPOCHS + 1))
    assert epochs.count(1) == 1, "the trial restarted from scratch instead of its checkpoint"
    assert len(epochs) - EPOCHS <= 1, f"more than one epoch was redone: {epochs}"
    assert rows[-1]["node_id"] != workers[1].node_id  # finished on the surviving worker
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "nd")
    assert len(runs) == 3 and {r.data.tags["srrl.status"] for r in runs} == {"finished"}


def _loads(path) -> bool:
    import json
    import pickle

    data = path.read_bytes()  # Tune's search_gen_state-*.json is a pickle despite its name
    return (json.loads(data) if path.name.startswith("experiment_state") else pickle.loads(data)) is not None


def test_driver_killed_twice_then_resumed(tmp_path, env):
    """SIGKILL, --resume, SIGKILL again, --resume: every trial once, every record agrees. Storage is given as a
    file:// URI, which goes through pyarrow's filesystem as s3:// and gs:// do (the other kill tests: a path)."""
    import optuna

    folder = tmp_path / "ray_results" / "kk"
    at = f"file://{folder}"
    epochs = 4
    first = start_run_search(tmp_path, env, "--name", "kk", "--confirm", "0", "--num-samples", "6", "--epochs", str(epochs), "--teacher-epochs", "3",
                             "--scheduler", "fifo", "--max-concurrent", "2", "--storage-path", f"file://{folder.parent}")
    # 1st kill: right after the first trial finished
    kill_when(first, lambda: any(len(r) >= epochs for r in tune_results(folder, by_dir=True).values()))
    first_files = set(folder.glob("searcher-state-*.pkl"))
    second = start_run_search(tmp_path, env, "--resume", at)
    # the resumed driver's first searcher snapshot, kept aside: its trials are the ones it knows
    snapshot: dict = {}

    def keep_first_snapshot() -> bool:
        if not snapshot:
            new = sorted(set(folder.glob("searcher-state-*.pkl")) - first_files)
            if new and _loads(new[0]):
                snapshot.update(path=new[0], data=new[0].read_bytes(), trials=set(tune_results(folder, by_dir=True)))
        return bool(snapshot)

    # 2nd kill: mid-trial, once a trial the snapshot above never saw has reported an epoch
    kill_when(second, lambda: keep_first_snapshot() and any(
        rows and name not in snapshot["trials"] for name, rows in tune_results(folder, by_dir=True).items()))
    # Tune's state files are whole after the kills (a resumed driver re-uploads them every second)
    states = sorted(folder.glob("*.pkl")) + sorted(folder.glob("*.json"))
    assert len(states) >= 4 and all(_loads(p) for p in states), states
    # Tune uploads a snapshot's files one by one: killed between them, the experiment state can land
    # and the searcher's file not (seen in a loaded CI round): the searcher then knows fewer trials
    # than Tune restores.
    snapshot["path"].write_bytes(snapshot["data"])
    # a tuner.pkl torn by an older version's killed upload is rebuilt from the sweep file
    (folder / "tuner.pkl").write_bytes(b"")
    done = run_search(tmp_path, env, "--resume", at)
    (tmp_path / "driver-3.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tuner.pkl was torn or missing; rebuilt it from srrl_sweep.yaml" in done.stdout
    assert "Sweep kk: 6 trials, 6 finished" in done.stdout
    assert f"python run_search.py --resume {at}" in done.stdout

    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "kk")
    assert len(runs) == 6 and len({r.data.tags["srrl.trial_id"] for r in runs}) == 6
    assert all(r.info.status == "FINISHED" and r.data.tags["srrl.status"] == "finished" for r in runs)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("kk")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")

    study = cli_study(tmp_path, "kk")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6 and len({(t.params["alpha"], t.params["beta"]) for t in complete}) == 6  # none twice
    assert all(t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("orphaned") for t in others), \
        [(t.state, t.params) for t in others]
    from_mlflow = sorted((round(float(r.data.params["alpha"]), 9), round(float(r.data.params["beta"]), 9),
                          round(r.data.metrics["best_val_acc"], 9)) for r in runs)  # the study's value: the ranking rule
    from_study = sorted((round(t.params["alpha"], 9), round(t.params["beta"], 9), round(t.value, 9)) for t in complete)
    assert from_mlflow == from_study

    # every trial's per-epoch history agrees, epoch by epoch, in MLflow, Tune's results and the study
    assert all(sorted({r["epoch"] for r in rows}) == list(range(1, epochs + 1)) for rows in tune_results(folder).values())
    assert_records_agree(f"sqlite:///{tmp_path / 'mlflow.db'}", "kk", folder, study)


def test_unreachable_tracking_server_refuses_to_start(tmp_path, env):
    port = free_port()
    start = time.monotonic()
    proc = run_search(tmp_path, env, "--tracking-uri", f"http://bob:s3cret@127.0.0.1:{port}", timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: tracking_uri: cannot reach MLflow server at http://127.0.0.1:{port}")
    assert "s3cret" not in proc.stderr + proc.stdout
    assert time.monotonic() - start < 30 and not (tmp_path / "ray_results").exists()


def test_unwritable_checkpoint_is_an_error_naming_the_path(tmp_path):
    from tuner.driver.trainable import save_state

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError, match=r"^checkpoint: cannot write .*file/trainer_state.pt"):
        save_state({"x": 1}, blocker / "trainer_state.pt")


def test_two_sweeps_started_together_in_a_fresh_folder_both_finish_and_diverging_trials_are_recorded(tmp_path, env):
    """Both create the MLflow and Optuna SQLite stores at once; a lock beside each serialises the creation. The
    second's trials all diverge (lr 1e6): each is recorded so, everywhere, and the sweep goes on to its end."""
    import subprocess
    import sys

    import optuna

    from tests._helpers import REPO

    runs = {"one": ("--smoke",), "dv": ("--num-samples", "3", "--epochs", "3", "--teacher-epochs", "2", "--set", "lr=1e6",
                                       "--set", "teacher_lr=0.05", "--scheduler", "fifo")}
    procs = [subprocess.Popen([sys.executable, str(REPO / "run_search.py"), "--name", name, "--confirm", "0", *args],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, args in runs.items()]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert len(trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "one")) == 4
    assert len(cli_study(tmp_path, "one").trials) == 4

    assert "Sweep dv: 3 trials, 0 finished, 0 stopped_early, 3 diverged" in outs[1][0]
    diverged = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "dv")
    assert len(diverged) == 3
    for run in diverged:
        assert run.data.tags["srrl.status"] == "diverged" and run.data.tags["srrl.diverged_epoch"] == "1"
        assert run.info.status == "FAILED"
    study = cli_study(tmp_path, "dv")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL] * 3
    assert all(t.user_attrs["diverged_epoch"] == 1 for t in study.trials)


@pytest.mark.parametrize("sig, race", [("SIGINT", 0), ("SIGTERM", 2)])
def test_an_interrupted_sweep_says_so_exits_130_and_resumes(sig, race, tmp_path, env):
    """Ctrl-C, or the SIGTERM a cluster scheduler sends: Tune saves the state, every record says how it stands;
    a raced search (tuner/driver/race.py) resumes with its race: its seeds still repeat their configurations."""
    import signal
    import subprocess
    import sys

    import mlflow

    from tests._helpers import REPO

    folder = tmp_path / "ray_results" / "si"
    proc = subprocess.Popen([sys.executable, str(REPO / "run_search.py"), "--name", "si", "--confirm", "0", "--num-samples",
                             "4", "--epochs", "5", "--teacher-epochs", "3", "--scheduler", "fifo", "--race", str(race)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while sum(len(r) for r in tune_results(folder, by_dir=True).values()) < 3:
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it could be interrupted"
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: the search stage stopped with " in err
    assert err.rstrip().endswith(f"python run_search.py --resume {folder}")
    assert "stopped_early" not in out.split("Sweep si:")[1].split("\n", 2)[2]  # no row calls a half-done trial so

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("si")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("srrl.role") == "sweep")
    assert parent.info.status == "KILLED" and int(parent.data.tags["srrl.interrupted"]) >= 1
    children = [r for r in runs if r.data.tags.get("srrl.role") == "trial"]
    assert children and not [r for r in runs if r.info.status == "RUNNING"]
    for r in children:
        assert (r.info.status, r.data.tags["srrl.status"]) in {("KILLED", "interrupted"), ("FINISHED", "finished")}

    done = run_search(tmp_path, env, "--resume", str(folder))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Sweep si: 4 trials, 4 finished" in done.stdout
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("srrl.role") == "sweep")
    assert parent.info.status == "FINISHED" and "srrl.interrupted" not in parent.data.tags
    trials = [r for r in runs if r.data.tags.get("srrl.role") == "trial"]
    assert sorted(r.data.tags["srrl.status"] for r in trials) == ["finished"] * 4
    if race:
        raced = [r for r in trials if r.data.tags["srrl.origin"] == "race"]
        first = {r.data.tags["srrl.config_id"]: r for r in trials if r.data.tags["srrl.origin"] != "race"}
        assert raced and len(first) + len(raced) == 4
        for r in raced:  # the same configuration at its second seed, across the kill
            assert r.data.params["seed"] == "1" and r.data.params["alpha"] == first[r.data.tags["srrl.config_id"]].data.params["alpha"]


def _parent(tracking_uri: str, experiment: str) -> Any:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("srrl.role") == "sweep"]


def test_a_full_storage_path_stops_the_sweep_in_one_line_and_resume_finishes_it(tmp_path, env):
    """Every trial checkpoints to the sweep folder: once its disk is full the sweep stops at once (no
    tracebacks, no part files), and with space back --resume finishes it with all three records agreeing."""
    import optuna

    with small_disk(tmp_path / "disk", 3072) as disk:
        filler = fill_disk(disk, leave_kb=172)  # room for Tune's state and a few checkpoints, not the sweep
        first = run_search(tmp_path, env, "--smoke", "--confirm", "0", "--scheduler", "fifo", "--name", "df",
                           "--storage-path", str(disk))
        assert first.returncode == 1, first.stderr[-3000:]
        assert re.fullmatch(rf"error: storage_path: no space left on the file system of {disk} \([\d.]+ [KMB]+ free\); "
                            rf"free space there, then continue with: python run_search.py --resume {disk}/df",
                            first.stderr.strip().splitlines()[-1]), first.stderr[-2000:]
        assert "Errno 28" not in first.stdout + first.stderr  # the line above, not Ray's tracebacks
        assert not list(disk.rglob("*.srrl-part"))
        summary = first.stdout.split("Sweep df:")[1].split("\nLook further")[0]
        # the trials the full disk caught are resumable: half-done ("interrupted") or, when it caught their first
        # checkpoint, with no epoch recorded ("pending"; which one depends on a few KB of checkpoint size)
        assert ("interrupted" in summary or "pending" in summary) and "errored" not in summary \
            and "stopped_early" not in summary.split("\n", 1)[1]
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        assert [p.info.status for p in _parent(uri, "df")] == ["KILLED"]
        ends = {(r.info.status, r.data.tags.get("srrl.status")) for r in trial_runs(uri, "df")}
        assert ends <= {("KILLED", "interrupted"), ("FINISHED", "finished")}, (ends, first.stdout[-2000:])
        assert optuna.trial.TrialState.FAIL not in {t.state for t in cli_study(tmp_path, "df").trials}

        filler.unlink()
        done = run_search(tmp_path, env, "--resume", str(disk / "df"))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Sweep df: 4 trials, 4 finished" in done.stdout
        assert [p.info.status for p in _parent(uri, "df")] == ["FINISHED"]
        assert not [r for r in trial_runs(uri, "df") if "srrl.error" in r.data.tags]
        assert_records_agree(uri, "df", disk / "df", cli_study(tmp_path, "df"))


def test_a_full_tracking_store_at_the_start_leaves_no_dead_end_and_mid_sweep_loses_nothing(tmp_path, env):
    """mlflow.db's folder fills while the sweep sets up: one line, and the same command runs once space is back
    (the failed start holds no sweep file, and its parent run is replaced). It fills again while trials run: the
    sweep stops with one line, the requests MLflow could not take wait in Tune's state, and --resume delivers
    them: every epoch is in MLflow once."""
    import subprocess
    import sys

    from tests._helpers import REPO

    storage = tmp_path / "ray_results"
    args = ("--name", "tm", "--confirm", "0", "--num-samples", "4", "--epochs", "6", "--teacher-epochs", "3",
            "--scheduler", "fifo", "--storage-path", str(storage))
    with small_disk(tmp_path / "work", 1200) as work:  # a fresh MLflow store fits; its first artifacts do not
        first = run_search(work, env, *args)
        assert first.returncode == 1, first.stderr[-3000:]
        assert re.fullmatch(rf"error: tracking_uri, optuna_storage: no space left on the file system of {work} \(.*\); "
                            r"free space there, then run the same command again \(the sweep had not started\)",
                            first.stderr.strip().splitlines()[-1]), first.stderr[-2000:]
        assert "Traceback" not in first.stderr
        assert not (storage / "tm" / "srrl_sweep.yaml").exists()

        resize_disk(work, 60 * 1024)
        proc = subprocess.Popen([sys.executable, str(REPO / "run_search.py"), *args],
                                cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 600
        while sum(len(r) for r in tune_results(storage / "tm", by_dir=True).values()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before its disk filled"
            time.sleep(0.2)
        filler = fill_disk(work)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 1, err[-3000:]
        assert re.fullmatch(rf"error: tracking_uri(, optuna_storage)?: no space left on the file system of {work} \(.*\); "
                            rf"free space there, then continue with: python run_search.py --resume {storage}/tm",
                            err.strip().splitlines()[-1]), err[-2000:]
        assert "database or disk is full" not in err  # MLflow's and Optuna's tracebacks stay out

        filler.unlink()
        done = run_search(work, env, "--resume", str(storage / "tm"))
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Sweep tm: 4 trials, 4 finished" in done.stdout
        uri = f"sqlite:///{work / 'mlflow.db'}"
        assert_records_agree(uri, "tm", storage / "tm", cli_study(work, "tm"))
        parents = _parent(uri, "tm")  # the failed start's parent was replaced by the sweep's own
        assert [(p.info.status, "srrl.setting_up" in p.data.tags) for p in parents] == [("FINISHED", False)]
