"""Fixtures of the search-space tests: the spaces' contexts for digits (the embedded default) and CIFAR-100."""
from __future__ import annotations

import pytest

from search_spaces import SpaceContext
from tuner.core.config import TrialConfig

CIFAR = {"dataset": "cifar100", "teacher": "resnet32x4", "student": "resnet8x4"}


@pytest.fixture(scope="module")
def digits_ctx() -> SpaceContext:
    return SpaceContext.for_config(TrialConfig())


@pytest.fixture(scope="module")
def cifar_ctx() -> SpaceContext:
    return SpaceContext.for_config(TrialConfig.from_dict(CIFAR))  # no data_dir: nothing is read from disk


@pytest.fixture(scope="module", params=["digits", "cifar100"])
def ctx(request: pytest.FixtureRequest) -> SpaceContext:
    return request.getfixturevalue("digits_ctx" if request.param == "digits" else "cifar_ctx")
