"""A sweep run as a Ray job keeps its records out of Ray's temporary copy of the working_dir.

The real ``ray job submit`` path runs in tests/test_readme.py; these pin the rules on the driver side
with the variable Ray's job supervisor sets for an entrypoint.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.core.config import ConfigError
from tuner.core.sweep_config import SweepConfig
from tuner.driver.job_dir import JOB_CONFIG_ENV
from tuner.driver.prepare import prepare_sweep
from tuner.tracking.uri import artifact_location


@pytest.fixture
def in_job(tmp_path, monkeypatch) -> Path:
    """cwd = an unpacked working_dir copy, as Ray's job supervisor runs an entrypoint."""
    copy = tmp_path / "session" / "runtime_resources" / "working_dir_files" / "_ray_pkg_abc"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.setenv(JOB_CONFIG_ENV, json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_abc.zip"}, "metadata": {}}))
    return copy


def _prepare(**fields):
    return prepare_sweep(*SweepConfig.split({"name": "j", **fields}))[0]


def test_a_job_refuses_the_relative_default_storage_path(in_job):
    with pytest.raises(ConfigError, match=r"^storage_path: \./ray_results is inside Ray's temporary copy of this "
                                          r"job's working_dir \(.*_ray_pkg_abc\).*give --storage-path an absolute path"):
        _prepare()


def test_a_job_keeps_its_stores_beside_an_absolute_storage_path(in_job, tmp_path):
    sweep = _prepare(storage_path=str(tmp_path / "keep"))
    assert sweep.tracking_uri == f"sqlite:///{tmp_path / 'keep' / 'mlflow.db'}"
    assert sweep.optuna_storage == f"sqlite:///{tmp_path / 'keep' / 'optuna.db'}"
    assert artifact_location(sweep.tracking_uri, "j") == str(tmp_path / "keep" / "mlruns" / "j")


@pytest.mark.parametrize("field, value, flag", [
    ("tracking_uri", "sqlite:///mlflow.db", "--tracking-uri"),
    ("optuna_storage", "sqlite:///sub/optuna.db", "--optuna-storage"),
    ("cache_dir", "cache", "cache_dir"),
])
def test_a_job_refuses_any_store_inside_its_copy(in_job, tmp_path, field, value, flag):
    with pytest.raises(ConfigError, match=rf"^{field}: .* is inside Ray's temporary copy .*give {flag} an absolute path"):
        _prepare(storage_path=str(tmp_path / "keep"), **{field: value})


def test_a_job_with_remote_storage_must_name_its_tracking_store(in_job):
    with pytest.raises(ConfigError, match=r"^tracking_uri: a Ray job runs in a temporary copy .* pass --tracking-uri"):
        _prepare(storage_path="s3://bucket/ray_results")


def test_outside_a_job_the_defaults_stay_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv(JOB_CONFIG_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    sweep = _prepare()
    assert sweep.storage_path == str(tmp_path / "ray_results")
    assert sweep.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert artifact_location(sweep.tracking_uri, "my sweep/1") == str(tmp_path / "mlruns" / "my_sweep_1")
    assert artifact_location("http://127.0.0.1:5000", "j") is None
