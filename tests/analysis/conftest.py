"""Session fixtures of the analysis tests: one real MLflow store (see _analysis_store.py), loaded once.

The store is read-only for the tests (write_report only adds artifacts to the sweep runs).
"""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from _analysis_store import build_store  # noqa: E402


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The shared store: uri, parents ({sweep: parent run id}) and the deleted run's id."""
    return build_store(tmp_path_factory.mktemp("analysis-store"))


@pytest.fixture(scope="session")
def trials_a(store):
    from analysis.runs import load_history, load_trials

    history = load_history("srrl-a", store.uri)
    return load_trials("srrl-a", store.uri, history=history), history


@pytest.fixture(scope="session")
def trials_b(store):
    from analysis.runs import load_history, load_trials

    history = load_history("srrl-b", store.uri)
    return load_trials("srrl-b", store.uri, history=history), history
