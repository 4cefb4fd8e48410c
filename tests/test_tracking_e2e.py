"""A real sweep recorded in MLflow, on an SQLite store and on an ``mlflow server`` on 127.0.0.1:
parent/child structure, full params, complete per-epoch metrics, artifacts, best-K students that load
back and reproduce their logged test accuracy."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from tests._helpers import local_ray
from tests._outages import MlflowServer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for both stores' sweeps (a start is ~8 s of CPU on 2 CPUs)."""
    with local_ray():
        yield


def _sweep(tmp_path: Path, tracking_uri: str, name: str):
    """A 4-trial FIFO sweep of 3 epochs, run in this process (on ``ray_local``) against ``tracking_uri``."""
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep

    sweep, base = SweepConfig.split({"name": name, "confirm": 0, "num_samples": 4, "epochs": 3, "teacher_epochs": 3, "scheduler": "fifo",
                                     "top_k": 2, "storage_path": str(tmp_path / "ray"), "tracking_uri": tracking_uri,
                                     "optuna_storage": f"sqlite:///{tmp_path / 'optuna.db'}"})
    return run_sweep(sweep, base, verbose=0)


def _check_records(tracking_uri: str, result) -> None:
    import mlflow

    from tuner.core import metrics as M
    from tuner.core.config import TrialConfig
    from tuner.core.export import load_student
    from tuner.core.trainer import evaluate_model, load_splits
    from tuner.core.data import make_loaders

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(result.experiment)
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("srrl.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("srrl.role") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    tags = parent.data.tags
    assert tags["srrl.space"] == "recipe" and tags["srrl.teacher"] == "digits_cnn4x64"  # the default space
    assert float(tags["srrl.teacher_val_acc"]) > 50 and "srrl.version.torch" in tags and "srrl.version.ray" in tags
    assert parent.data.params["sweep.num_samples"] == "4"
    assert all(k.startswith("sweep.") for k in parent.data.params)  # the base config is the artifact, not params
    parent_files = {f.path for d in ("config", "space", "teacher") for f in client.list_artifacts(parent.info.run_id, d)}
    assert "config/srrl_sweep.yaml" in parent_files and any(p.startswith("teacher/") and p.endswith(".pt") for p in parent_files)
    space = yaml.safe_load(Path(client.download_artifacts(parent.info.run_id, "space/srrl_space.yaml")).read_text())
    assert list(space["search"]) == ["alpha", "beta", "lr"]  # the space as searched, recorded on the parent

    import dataclasses

    fields = {f.name for f in dataclasses.fields(TrialConfig)}
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert fields <= set(child.data.params), fields - set(child.data.params)
        assert child.data.tags["srrl.status"] == "finished" and child.info.status == "FINISHED"
        for key in (M.VAL_ACC, M.LOSS_TOTAL, M.LOSS_SR):
            assert [m.step for m in client.get_metric_history(child.info.run_id, key)] == [1, 2, 3]

    with_model = [c for c in children if any(f.path == "model/student.pt" for f in client.list_artifacts(c.info.run_id, "model"))]
    assert len(with_model) == 2
    best_two = sorted(children, key=lambda c: -c.data.metrics[M.VAL_ACC])[:2]
    assert {c.info.run_id for c in with_model} == {c.info.run_id for c in best_two}
    for child in with_model:
        loaded = load_student(f"runs:/{child.info.run_id}/model/student.pt", tracking_uri=tracking_uri)
        assert loaded.config.alpha == float(child.data.params["alpha"])
        splits = load_splits(loaded.config)
        _, _, test = make_loaders(splits, 256, seed=0)
        acc, _ = evaluate_model(loaded.student, test)
        assert acc == pytest.approx(child.data.metrics[M.TEST_ACC], abs=1e-6)
        # raw images as the data set holds them (digits: 0..16), one call: the logged accuracy, exactly
        raw = 100.0 * (loaded.predict(splits.test_x).argmax(1) == splits.test_y).double().mean().item()
        assert raw == child.data.metrics[M.TEST_ACC]
        assert loaded.preprocessing["image_size"] == 8 and loaded.preprocessing["scale"] == 16.0
        with pytest.raises(ValueError, match=r"^images: shape \(2, 1, 9, 9\) is not \(N, 1, 8, 8\)"):
            loaded.predict(torch.zeros(2, 1, 9, 9))


def test_sweep_records_on_sqlite(tmp_path, monkeypatch, ray_local):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = _sweep(tmp_path, uri, "sq")
    _check_records(uri, result)


@pytest.fixture
def mlflow_server(tmp_path):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        yield server.uri
    finally:
        server.stop()


def test_sweep_records_on_an_mlflow_server(tmp_path, monkeypatch, mlflow_server, ray_local):
    monkeypatch.chdir(tmp_path)
    result = _sweep(tmp_path, mlflow_server, "srv")
    _check_records(mlflow_server, result)
