"""Search spaces for SRRL sweeps: spaces declared as data (``declared``: a user's ``search:`` mapping,
and the named presets in ``presets``), the exhaustive ``ablation`` grid, and a registry name -> ``SearchSpace``.

Adding a named space: an entry in ``presets.PRESETS`` (or a module that builds a ``SearchSpace`` and
passes it to ``register_space``, imported below); ``tests/search_spaces`` tests every registered space.
"""
from __future__ import annotations

from search_spaces._base import (
    LABEL_KEYS,
    SAMPLERS,
    SCHEDULERS,
    SearchSpace,
    SpaceContext,
    apply_params,
    build_sampler,
    grid_size,
)
from search_spaces._registry import SPACES, describe_spaces, get_space, list_spaces

# isort: off
# Importing a space module registers it; this order is list_spaces()'s.
from search_spaces import presets, ablation  # noqa: F401,E402
from search_spaces.declared import declaration_yaml, space_of  # noqa: E402
# isort: on

__all__ = [
    "SPACES",
    "SearchSpace",
    "SpaceContext",
    "get_space",
    "space_of",
    "declaration_yaml",
    "list_spaces",
    "describe_spaces",
    "build_sampler",
    "grid_size",
    "apply_params",
    "LABEL_KEYS",
    "SAMPLERS",
    "SCHEDULERS",
]
