"""The MLflow server goes away mid-sweep: a real ``mlflow server`` (SQLite backend) on 127.0.0.1 becomes
unreachable while a real in-process sweep runs.

1. It becomes unreachable (a gate in front of it refuses and cuts connections) and reachable again while
   the sweep still runs: the callback's in-memory buffer delivers everything, with no duplicate runs.
2. It stays down until the sweep has ended: the sweep still returns normally, and once the server
   is back ``python run_search.py --sync DIR`` fills in everything from Tune's result files.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Optional

import pytest

from tests._helpers import local_ray, trial_runs, tune_results
from tests._outages import MlflowServer, TcpGate

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def ray_local():
    with local_ray():
        yield


def _sweep(tmp_path: Path, uri: str, name: str, trials: int, epochs: int, **extra):
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep

    sweep, base = SweepConfig.split({
        "name": name, "confirm": 0, "num_samples": trials, "epochs": epochs, "teacher_epochs": 3, "scheduler": "fifo",
        "max_concurrent": 1, "top_k": 1, "storage_path": str(tmp_path / "ray"), "tracking_uri": uri,
        "optuna_storage": f"sqlite:///{tmp_path / 'optuna.db'}", **extra})
    return run_sweep(sweep, base, verbose=0)


def _cut_after_first_epoch(server: MlflowServer, experiment: str, events: Dict[str, float], done: threading.Event,
                           cut: Callable[[], None], restore: Optional[Callable[[], None]] = None,
                           restore_when: Callable[[float], bool] = lambda stopped: True) -> threading.Thread:
    """A thread that calls ``cut`` once some child run has val_acc logged (asked of the server itself), then
    ``restore`` once ``restore_when(stopped time)`` holds. ``events`` gets the times (time.time()).

    It watches until ``done`` is set (the sweep returned), however long a loaded machine takes to get
    there: a fixed deadline here once expired before the first epoch of a loaded run.
    """
    import mlflow

    def watch() -> None:
        client = mlflow.MlflowClient(server.uri)
        while not done.is_set() and "stopped" not in events:
            try:
                exp = client.get_experiment_by_name(experiment)
                runs = client.search_runs([exp.experiment_id], "tags.`srrl.role` = 'trial'") if exp else []
                if any("val_acc" in r.data.metrics for r in runs):
                    events["stopping"] = time.time()
                    cut()
                    events["stopped"] = time.time()
            except Exception:  # noqa: BLE001 - the experiment may not exist yet
                pass
            time.sleep(0.2)
        if restore is not None and "stopped" in events:
            while not done.is_set() and not restore_when(events["stopped"]):
                time.sleep(0.2)
            restore()
            events["back"] = time.time()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _check_complete(uri: str, experiment: str, folder: Path, epochs: int) -> None:
    """Exactly one ended child per trial, and every finite metric of every epoch equal to result.json."""
    from analysis.runs import load_history
    from tuner.core import metrics as M

    results = tune_results(folder)
    children = trial_runs(uri, experiment)
    assert sorted(c.data.tags["srrl.trial_id"] for c in children) == sorted(results)
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags
        assert child.data.tags["srrl.status"] == "finished"
        assert child.data.tags["srrl.last_epoch"] == str(epochs)
    history = load_history(experiment, uri)
    logged = {(r.trial_id, r.metric, r.epoch): r.value for r in history.itertuples()}
    for trial_id, rows in results.items():
        assert sorted(e for (t, m, e) in logged if t == trial_id and m == M.VAL_ACC) == list(range(1, epochs + 1))
        first = {}  # a per-trial constant is logged once, at the first result that carries it
        for row in rows:
            for key in M.PER_EPOCH + M.PER_TRIAL:
                value = row.get(key)
                if not (isinstance(value, (int, float)) and math.isfinite(value)):
                    continue
                if key in M.PER_TRIAL:
                    first.setdefault(key, (row["epoch"], value))
                    continue
                assert logged.get((trial_id, key, row["epoch"])) == pytest.approx(value, rel=1e-12), (trial_id, key)
        for key, (epoch, value) in first.items():
            steps = {e for (t, m, e) in logged if t == trial_id and m == key}
            assert steps == {epoch} and logged[(trial_id, key, epoch)] == pytest.approx(value, rel=1e-12), (trial_id, key)


def test_server_unreachable_mid_sweep_loses_nothing(tmp_path, monkeypatch, server, ray_local):
    """The sweep talks to the server through a gate that is shut after the first epoch (connections refused
    and cut) and opened again once some epoch has ended during the outage: however slow the machine, the
    outage ends while the sweep still runs, and the buffer has had something to hold."""
    monkeypatch.chdir(tmp_path)
    if not server.up():
        server.start()
    gate = TcpGate(server.port)
    gate.open()
    folder = tmp_path / "ray" / "out-a"

    def an_epoch_ended_meanwhile(stopped: float) -> bool:
        # result.json timestamps are whole seconds: one at or after the cut, and over a second ago
        late = [r["timestamp"] for rows in tune_results(folder, by_dir=True).values() for r in rows
                if r["timestamp"] >= math.ceil(stopped)]
        return bool(late) and time.time() > min(late) + 1.5

    events: Dict[str, float] = {}
    done = threading.Event()
    watcher = _cut_after_first_epoch(server, "out-a", events, done, cut=gate.shut, restore=gate.open,
                                     restore_when=an_epoch_ended_meanwhile)
    t0 = time.time()
    try:  # 3 trials of 8 epochs: most of the sweep runs after the gate opens again
        result = _sweep(tmp_path, gate.uri, "out-a", trials=3, epochs=8, batch_size=16)
    finally:
        ended = time.time()
        done.set()
    watcher.join(timeout=60)
    gate.shut()
    assert "stopped" in events and "back" in events, events
    assert events["back"] < ended, "the sweep ended before the gate opened again"
    assert [r["status"] for r in result.rows] == ["finished"] * 3
    results = tune_results(Path(result.path))
    during = [r for rows in results.values() for r in rows if events["stopped"] <= r["timestamp"] < events["back"] - 1]
    assert during, "no epoch ended while the server was unreachable"
    _check_complete(server.uri, "out-a", Path(result.path), epochs=8)
    import mlflow

    client = mlflow.MlflowClient(server.uri)
    parent = client.search_runs([client.get_experiment_by_name("out-a").experiment_id], "tags.`srrl.role` = 'sweep'")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    print(f"outage {events['back'] - events['stopped']:.1f} s of a {ended - t0:.1f} s sweep; "
          f"{len(during)} results reported meanwhile")


def test_server_down_until_the_end_then_sync_backfills(tmp_path, monkeypatch, server, ray_local):
    monkeypatch.chdir(tmp_path)
    if not server.up():
        server.start()
    events: Dict[str, float] = {}
    done = threading.Event()
    watcher = _cut_after_first_epoch(server, "out-b", events, done, cut=server.stop)
    try:  # returns although MLflow is gone; 6 epochs so that trials still run once the server is down
        result = _sweep(tmp_path, server.uri, "out-b", trials=2, epochs=6)
    finally:
        ended = time.time()
        done.set()
    watcher.join(timeout=60)
    assert "stopped" in events and not server.up(), events
    assert [r["status"] for r in result.rows] == ["finished"] * 2
    folder = Path(result.path)
    assert folder.name == "out-b" and len(tune_results(folder)) == 2
    last_result = max(r["timestamp"] for rows in tune_results(folder).values() for r in rows)
    # giving up costs the retry delays (3.5 s) and one-try requests: not MLflow's minutes of HTTP retries
    assert ended - last_result < 60, f"the sweep took {ended - last_result:.0f} s after its last epoch to give up"

    server.start()  # the same store comes back
    before = {c.data.tags["srrl.trial_id"]: c for c in trial_runs(server.uri, "out-b")}
    assert len(before) >= 1 and any(c.info.status == "RUNNING" for c in before.values())
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "run_search.py"), "--sync", str(folder), "--experiment", "out-b",
           "--tracking-uri", server.uri]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.strip()
    assert "\n" not in line and f"{2 - len(before)} runs created" in line and "2 runs ended" in line, line
    assert " 0 metrics backfilled" not in line, line
    _check_complete(server.uri, "out-b", folder, epochs=6)
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert again.returncode == 0 and "0 runs created, 0 metrics backfilled, 0 runs ended" in again.stdout, again.stdout
