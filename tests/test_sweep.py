"""Sweeps end to end with real Ray, Optuna and MLflow (SQLite): the CLI, concurrency, ASHA + PRUNED,
interrupt + resume, and a two-node ``ray.cluster_utils.Cluster``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._helpers import (REPO, cli_env, cli_study, kill_when, ray_tmpdir, run_search, start_run_search, trial_runs, tune_results,
                            write_ilsvrc)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    """A small default-space sweep with ASHA cutting hard, so that some trials are pruned."""
    tmp = tmp_path_factory.mktemp("smoke")
    with ray_tmpdir() as ray_tmp:
        proc = run_search(tmp, cli_env(ray_tmp), "--name", "smk", "--confirm", "0", "--num-samples", "6", "--epochs", "4",
                          "--teacher-epochs", "3", "--grace-period", "1", "--reduction-factor", "2", "--cpus-per-trial", "1")
    return tmp, proc


def test_default_sweep_smoke_end_to_end(tmp_path, env):
    """The default ``--smoke``, SIGKILLed once two runs of its confirmation stage ended, then resumed: one run per
    (configuration, seed), the verdict, the printed commands work, and a finished sweep resumed writes nothing."""
    driver = start_run_search(tmp_path, env, "--smoke")
    kill_when(driver, lambda: any(sum(bool(rows) and "test_acc" in rows[-1] for rows in tune_results(stage, by_dir=True).values())
                                  >= 2 for stage in (tmp_path / "ray_results").glob("*/confirm")))
    [folder] = [p for p in (tmp_path / "ray_results").iterdir() if p.is_dir()]
    name = folder.name
    assert name.startswith("recipe-digits-")  # the default space
    proc = run_search(tmp_path, env, "--resume", str(folder))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "confirmation: continuing" in out and "Verdict: " in out and f"Sweep {name}: 4 trials" in out
    assert "best_val_acc" in out and f"mlflow ui --workers 1 --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'}" in out
    assert f"python run_search.py --resume {folder}" in out
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", name)
    assert sorted(r.data.tags["srrl.stage"] for r in runs) == ["confirm"] * 6 + ["search"] * 4  # smoke: 3 configs x 2 seeds
    confirm = [r for r in runs if r.data.tags["srrl.stage"] == "confirm"]
    assert len({(r.data.tags["srrl.config_id"], r.data.params["seed"]) for r in confirm}) == 6
    assert all(r.data.tags["srrl.status"] == "finished" for r in confirm)
    assert (tmp_path / "optuna.db").is_file() and (folder / "srrl_sweep.yaml").is_file()

    # the report command the summary prints works on the sweep's records
    command = next(line.split() for line in out.splitlines() if "python -m analysis report" in line)
    report = subprocess.run([sys.executable, *command[1:], "--out", str(tmp_path / "report")], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    html = (tmp_path / "report" / "report.html").read_text()
    import base64
    import re

    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 3 and all(base64.b64decode(i).startswith(b"\x89PNG") and len(i) > 1000 for i in images)
    assert (tmp_path / "report" / "report.md").is_file()

    # --resume of the finished sweep: its leaderboard and verdict again, no Ray, not a byte written
    import hashlib

    def files() -> dict:
        return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}

    before = files()
    again = run_search(tmp_path, env, "--resume", str(folder))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"sweep {name} finished already" in again.stdout and f"Sweep {name}: 4 trials" in again.stdout
    assert out.split("Verdict:")[1].split("\n")[0] == again.stdout.split("Verdict:")[1].split("\n")[0]
    assert "Started a local Ray instance" not in again.stdout + again.stderr
    assert files() == before


def test_authors_points_come_first_and_asha_prunes_in_the_study(smoke_sweep):
    import optuna

    tmp, proc = smoke_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = cli_study(tmp, "smk")
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) == 6
    assert [(t.params["alpha"], t.params["beta"]) for t in trials[:3]] == [(1, 1), (1, 5), (10, 1)]
    states = {t.state for t in trials}
    assert optuna.trial.TrialState.PRUNED in states, [t.state for t in trials]
    assert optuna.trial.TrialState.COMPLETE in states
    for t in trials:
        steps = sorted(t.intermediate_values)
        if t.state == optuna.trial.TrialState.COMPLETE:
            assert steps == [1, 2, 3, 4] and t.value == t.intermediate_values[4]
        else:
            assert t.state == optuna.trial.TrialState.PRUNED and len(steps) < 4
            assert t.user_attrs["stopped_at_epoch"] == steps[-1]
    # MLflow agrees with the study
    children = trial_runs(f"sqlite:///{tmp / 'mlflow.db'}", "smk")
    mlflow_states = sorted(r.data.tags["srrl.status"] for r in children)
    expected = sorted("finished" if t.state == optuna.trial.TrialState.COMPLETE else "stopped_early" for t in trials)
    assert mlflow_states == expected


def test_two_trials_overlap_in_time_on_two_cpus(smoke_sweep):
    tmp, proc = smoke_sweep
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = trial_runs(f"sqlite:///{tmp / 'mlflow.db'}", "smk")
    spans = sorted((r.info.start_time, r.info.end_time) for r in runs)
    assert any(b_start < a_end for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    assert {r.data.metrics["workers"] for r in runs} == {1}  # one process each (--workers-per-trial: test_workers.py)


def test_grid_searcher_runs_every_point_once_without_a_failure(tmp_path, env):
    """``--searcher grid``: 25 (alpha, beta) trials, each once; the last one used to fail and run twice."""
    import itertools

    import optuna

    proc = run_search(tmp_path, env, "--name", "grd", "--space", "loss_weights", "--confirm", "0", "--searcher", "grid",
                      "--scheduler", "fifo", "--epochs", "1",
                       "--teacher-epochs", "3", "--cpus-per-trial", "1", "--set", "max_failures=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Sweep grd: 25 trials" in proc.stdout
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "grd")
    assert len(runs) == 25 and {r.info.status for r in runs} == {"FINISHED"}
    study = cli_study(tmp_path, "grd")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 25
    grid = [0.01, 0.1, 1.0, 10.0, 100.0]
    assert {(t.params["alpha"], t.params["beta"]) for t in study.trials} == set(itertools.product(grid, grid))
    assert not list((tmp_path / "ray_results" / "grd").glob("*/error.*"))  # no trial failed (and was retried)


def test_an_image_folder_sweep_runs_at_the_image_size_asked(tmp_path, env):
    """An image folder fixes no class count or size: the sweep reads both from the data (3 classes, 16 px)."""
    from PIL import Image

    for cls, rgb in {"apple": (200, 30, 30), "sky": (30, 30, 200), "leaf": (30, 200, 30)}.items():
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (12 + i, 10), tuple(c + 3 * i for c in rgb)).save(tmp_path / "images" / cls / f"{i}.png")
    done = run_search(tmp_path, env, "--dataset", "imagefolder", "--data-dir", str(tmp_path / "images"), "--teacher",
                      "resnet20", "--student", "wrn_16_1", "--image-size", "16", "--smoke", "--confirm", "0", "--name", "img")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Sweep img: 4 trials" in done.stdout
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "img")
    assert len(runs) == 4 and {r.data.params["image_size"] for r in runs} == {"16"}
    assert all(r.data.metrics["student_macs"] > 0 for r in runs)


def test_the_imagenet_preset_sweeps_a_class_subset_of_a_tiny_ilsvrc_folder(tmp_path, env):
    """configs/imagenet_resnet34_resnet18.yaml as the README runs it, shrunk: a JPEG folder in the ILSVRC layout
    (4 classes), a 4-class torchvision-format teacher file, a 3-class subset at 32 px. The teacher is loaded,
    never trained; every trial streams its data through a DataLoader worker (2 CPUs a trial: 1 worker) in a
    reused actor, and reports every epoch."""
    import torch

    from tuner.core.models import build_model

    write_ilsvrc(tmp_path / "imagenet", classes=4, train_per_class=12, val_per_class=3, size=40)
    torch.save(build_model("resnet34", 4).state_dict(), tmp_path / "resnet34.pth")
    done = run_search(tmp_path, env, "--config", str(REPO / "configs" / "imagenet_resnet34_resnet18.yaml"), "--smoke",
                      "--confirm", "0", "--gpus-per-trial", "0", "--cpus-per-trial", "2", "--name", "inet",
                      "--class-subset", "3", "--train-fraction", "0.5", "--set", "image_size=32", "--set", "val_fraction=0.25")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"teacher resnet34 loaded from {tmp_path / 'resnet34.pth'}" in done.stdout + done.stderr
    assert "training teacher" not in done.stdout + done.stderr
    assert "Sweep inet: 4 trials" in done.stdout and "errored" not in done.stdout.split("Sweep inet:")[1]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runs = trial_runs(uri, "inet")
    assert len(runs) == 4
    assert {(r.data.params["dataset"], r.data.params["class_subset"], r.data.params["train_fraction"],
             r.data.params["image_size"], r.data.params["threads"]) for r in runs} == {("imagenet", "3", "0.5", "32", "2")}
    client = __import__("mlflow").tracking.MlflowClient(uri)
    for r in runs:
        epochs = [m.step for m in client.get_metric_history(r.info.run_id, "val_acc")]
        assert epochs == list(range(1, len(epochs) + 1)) and len(epochs) >= 1, (r.data.tags, done.stdout[-1500:])


def test_bad_flag_value_exits_2_before_ray_starts(tmp_path, env):
    """Refused before Ray starts: no Ray session folder in the run's RAY_TMPDIR (its speed is bench's and the
    shell refusal test's: a wall-clock bound here failed on a machine at load 10)."""
    proc = run_search(tmp_path, env, "--space", "loss_weight", "--epochs", "2")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: space: 'loss_weight' is not allowed (did you mean \"loss_weights\"?); choose from: "
        + ", ".join(__import__("search_spaces").list_spaces())
    ]
    assert not (Path(env["RAY_TMPDIR"]) / "ray").exists() and not (tmp_path / "ray_results").exists()


def test_trials_run_on_both_nodes_of_a_cluster(tmp_path, env, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep

    monkeypatch.setenv("RAY_TMPDIR", env["RAY_TMPDIR"])
    monkeypatch.chdir(tmp_path)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address)
        sweep, base = SweepConfig.split({"name": "two", "confirm": 0, "num_samples": 4, "epochs": 2, "teacher_epochs": 2,
                                         "scheduler": "fifo", "storage_path": str(tmp_path / "shared")})
        result = run_sweep(sweep, base, verbose=0)
        nodes = {r["node_id"] for r in result.rows}
        assert len(result.rows) == 4 and len(nodes) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
