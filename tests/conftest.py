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
    """Teacher cache in a temp dir shared by the whole run, every xdist worker included, so each teacher is
    trained once per run (tests never touch ~/.cache). Safe to share: a cache file is written atomically."""
    base = tmp_path_factory.getbasetemp()
    cache = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "srrl-cache"
    cache.mkdir(exist_ok=True)
    os.environ["SRRL_CACHE_DIR"] = str(cache)


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


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    """Spread the suite over pytest-xdist's workers (setup.cfg: ``-n 3 --dist loadgroup``) without paying for a
    shared fixture twice: the tests of a module that share a module-scoped fixture (one sweep, one Ray, one
    cluster) run on one worker, as do the users of a session-scoped one; every other test goes wherever a
    worker is free. The multi-process (``slow``) tests are handed out first, so no long one starts last."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shared = [(defs[-1].scope, name) for name, defs in (info.name2fixturedefs.items() if info else ())
                  if defs and defs[-1].scope in ("module", "session") and name not in _PER_WORKER]
        if any(scope == "module" for scope, _ in shared):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
        elif shared:
            item.add_marker(pytest.mark.xdist_group(sorted(shared)[0][1]))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: each module's order is kept


#: session fixtures every worker makes for itself anyway (cheap, or per process by nature)
_PER_WORKER = {"_isolated_cache", "tmp_path_factory", "worker_id", "testrun_uid"}
