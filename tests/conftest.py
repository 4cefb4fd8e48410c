"""Shared fixtures: keep caches, Ray and MLflow state inside pytest's temp folders."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Ray renices its workers to 15, so beside any normal-priority load (a CI neighbour, the CPU hog we test
# with) a trial gets ~5% of a core and a 1-minute test takes 15. Tests want the machine's load, not that
# starvation on top: workers run at the test's own priority. Inherited by every Ray the tests start.
os.environ.setdefault("RAY_worker_niceness", "0")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Teacher cache in a temp dir shared by the session (tests never touch ~/.cache)."""
    os.environ["SRRL_CACHE_DIR"] = str(tmp_path_factory.mktemp("srrl-cache"))


@pytest.fixture
def one_thread():
    """Golden numbers are computed with one thread for bitwise-stable reductions."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def env():
    """The environment for this repo's CLIs run as subprocesses, with its own short RAY_TMPDIR (removed after)."""
    from tests._helpers import cli_env, ray_tmpdir

    with ray_tmpdir() as ray_tmp:
        yield cli_env(ray_tmp)
