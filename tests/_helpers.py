"""Helpers shared by several test modules (import as ``from tests._helpers import ...``); ray and mlflow load lazily."""
from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: for a server to start on, or to stand for an unreachable one.

    Drawn below the kernel's ephemeral range (and above Ray's worker ports, 10002-19999): a port a test lets go
    and takes again (a gate reopened, a server restarted) is then never handed meanwhile to some process's
    outgoing connection, as one drawn by ``bind(0)`` was in a loaded round (the gate's reopen: EADDRINUSE).
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default
    draw = random.Random()
    for _ in range(100 if low > 20001 else 0):
        port = draw.randrange(20000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tune_results(folder: Path, by_dir: bool = False) -> Dict[str, List[dict]]:
    """trial id (with ``by_dir``: trial dir name, safe on a result.json still empty) -> Tune's result.json lines."""
    out = {}
    try:
        paths = list(folder.glob("train_srrl_*/result.json"))
    except FileNotFoundError:  # the sweep's writability probe creates the folder and removes it again: not there yet
        return out
    for path in paths:
        try:
            lines = path.read_text().split("\n")
        except FileNotFoundError:  # a trial folder set aside (orphaned/) between the listing and the read
            continue
        rows = [json.loads(line) for line in lines[:-1] if line.strip()]  # the last, unended line may be half-written
        out[path.parent.name if by_dir else rows[-1]["trial_id"]] = rows
    return out


def trial_runs(tracking_uri: str, experiment: str) -> list:
    """The experiment's child runs (tag srrl.role = trial), up to 1000, as the MLflow client returns them."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in runs if r.data.tags.get("srrl.role") == "trial"]


def cli_study(folder: Path, name: str) -> Any:
    """The Optuna study ``name`` that ``run_search.py`` run in ``folder`` keeps (its default ``optuna.db`` there)."""
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'optuna.db'}")


@contextlib.contextmanager
def ray_tmpdir() -> Iterator[str]:
    """A short folder for ``RAY_TMPDIR`` (Ray's unix socket paths must stay under ~107 characters), removed after."""
    tmp = tempfile.mkdtemp(prefix="ry-", dir="/tmp")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cmdline(proc: Any) -> str:
    """A process's command line (a Ray worker's is its title, ``ray::RayTrainWorker ...``), or "" once it is gone."""
    import psutil

    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def descendants_mentioning(root: int, text: str) -> List[int]:
    """The processes below ``root`` (a driver: its local Ray's raylet and workers are its descendants) whose
    command line contains ``text`` (a Ray actor's process title names its class: ``ray::RayTrainWorker``)."""
    import psutil

    try:
        below = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return sorted(p.pid for p in below if text in _cmdline(p))


def kill_processes_mentioning(text: str, grace: float = 10.0) -> None:
    """SIGTERM every process whose command line contains ``text`` (e.g. the ``--temp-dir`` of a
    ``ray start``), and their children; SIGKILL what is left after ``grace`` s. Unlike ``ray stop``,
    this leaves other Ray clusters on the machine alone."""
    import psutil

    roots = [p for p in psutil.process_iter() if p.pid != os.getpid() and text in _cmdline(p)]
    doomed = {p.pid: p for p in roots}
    for p in roots:  # and their descendants (Ray's workers do not name the temp dir)
        with contextlib.suppress(psutil.Error):
            doomed.update((c.pid, c) for c in p.children(recursive=True))
    for p in doomed.values():
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(list(doomed.values()), timeout=grace)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


@contextlib.contextmanager
def local_ray(**init_kwargs) -> Iterator:
    """``ray`` started locally on 2 CPUs, in its own ``ray_tmpdir``."""
    import ray

    before = os.environ.get("RAY_TMPDIR")
    with ray_tmpdir() as tmp:
        os.environ["RAY_TMPDIR"] = tmp
        try:
            ray.init(address="local", include_dashboard=False, num_cpus=2, **init_kwargs)
            try:
                yield ray
            finally:
                ray.shutdown()
        finally:
            if before is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = before


def cli_env(ray_tmp: str, **extra: str) -> Dict[str, str]:
    """The environment of a subprocess running this repo's CLIs: ``RAY_TMPDIR``, no telemetry, the repo importable."""
    return {**os.environ, "RAY_TMPDIR": ray_tmp, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO), **extra}


def run_search(cwd: Path, env: Dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``python run_search.py ARGS`` in ``cwd``, to its end, output captured."""
    return subprocess.run([sys.executable, str(REPO / "run_search.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def start_run_search(cwd: Path, env: Dict[str, str], *args: str) -> subprocess.Popen:
    """``python run_search.py ARGS`` in the background, in its own process group (to SIGKILL it whole);
    its output goes to ``cwd/driver-N.log`` (N counts the drivers started there), kept for a failure."""
    log = cwd / f"driver-{len(list(cwd.glob('driver-*.log'))) + 1}.log"
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, str(REPO / "run_search.py"), *args], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 600) -> None:
    """SIGKILL ``proc``'s process group once ``ready()``; fail if it ends first or the moment never comes."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if ready():
                return
            if proc.poll() is not None:
                pytest.fail("the driver ended before it could be killed")
            time.sleep(0.1)
        pytest.fail("the moment to kill the driver never came")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def assert_records_agree(tracking_uri: str, experiment: str, folder: Path, study: Any,
                         keys=("val_acc", "best_val_acc", "loss_total", "lr")) -> None:
    """Every search trial's per-epoch history is the same, epoch by epoch, in MLflow, Tune's result.json and the
    Optuna study's intermediate values (the ranking rule's value), and they agree on how it ended."""
    import mlflow
    import optuna

    client = mlflow.MlflowClient(tracking_uri)
    results = tune_results(folder)
    by_number = {t.number: t for t in study.trials}
    runs = [r for r in trial_runs(tracking_uri, experiment) if r.data.tags["srrl.stage"] == "search"]
    assert len(runs) == len(results) and runs
    ended = {"finished": optuna.trial.TrialState.COMPLETE, "stopped_early": optuna.trial.TrialState.PRUNED}
    for run in runs:
        tune_rows = {row["epoch"]: row for row in results[run.data.tags["srrl.trial_id"]]}  # a re-run epoch: its last row
        for key in keys:
            logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            tuned = {e: row[key] for e, row in tune_rows.items()}
            assert logged == tuned, (run.info.run_name, key, "mlflow", logged, "tune", tuned)
        trial = by_number[int(run.data.tags["srrl.optuna_trial"])]
        assert trial.intermediate_values == {e: row["best_val_acc"] for e, row in tune_rows.items()}, run.info.run_name
        assert trial.state == ended[run.data.tags["srrl.status"]], (run.info.run_name, trial.state)


def write_ilsvrc(root: Path, classes: int = 3, train_per_class: int = 12, val_per_class: int = 2,
                 size: int = 48, seed: int = 0, suffix: str = ".JPEG") -> Path:
    """A tiny ImageNet in the ILSVRC layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``), real JPEG files
    (PNG ones with ``suffix=".png"``).

    Each class is a colour plus noise, each image a different size near ``size`` (wider or taller), so
    crops and resizes have work to do and a model can learn the classes.
    """
    import torch
    from torchvision.io import write_jpeg, write_png

    g = torch.Generator().manual_seed(seed)
    palette = torch.randint(40, 216, (classes, 3, 1, 1), generator=g)
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                h, w = (int(v) for v in torch.randint(size * 3 // 4, size * 5 // 4 + 1, (2,), generator=g))
                noise = torch.randint(-40, 41, (3, h, w), generator=g)
                image = (palette[c] + noise).clamp(0, 255).to(torch.uint8)
                path = str(folder / f"n{c:08d}_{i}{suffix}")
                write_png(image, path) if suffix == ".png" else write_jpeg(image, path, quality=90)
    return root


def stall_watched(stage: Path) -> bool:
    """Whether a stage's tuner.pkl (Tune pickles a dict of the Tuner's fields) holds the stall watch among its callbacks."""
    import pickle

    state = pickle.loads((stage / "tuner.pkl").read_bytes())
    return any(type(c).__name__ == "StallWatch" for c in state["_run_config"].callbacks)


def as_an_older_srrl_tune_wrote_it(folder: Path) -> None:
    """Make the sweep in ``folder`` one an srrl-tune before the stall watch left: no ``tuner_pkl`` in its sweep file,
    and no stall watch in any stage's tuner.pkl (Tune restores a stage's callbacks from there)."""
    import pickle

    import yaml
    from ray import cloudpickle

    settings = yaml.safe_load((folder / "srrl_sweep.yaml").read_text())
    from tuner.driver.sweep_file import TUNER_PKL

    assert settings.pop("tuner_pkl") == TUNER_PKL
    (folder / "srrl_sweep.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    for pkl in [folder / "tuner.pkl", *folder.glob("confirm/tuner.pkl")]:
        state = pickle.loads(pkl.read_bytes())
        state["_run_config"].callbacks = [c for c in state["_run_config"].callbacks if type(c).__name__ != "StallWatch"]
        pkl.write_bytes(cloudpickle.dumps(state))  # as Tune writes it
        assert not stall_watched(pkl.parent)

