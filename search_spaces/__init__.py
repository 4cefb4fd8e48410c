"""Named search spaces for SRRL sweeps: a define-by-run function over an Optuna trial (or an
exhaustive grid) per module, plus a registry mapping name -> :class:`SearchSpace`.

Adding a space: write a module that builds a ``SearchSpace`` and passes it to ``register_space``,
then import it below; ``tests/search_spaces`` tests every registered space.
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
from search_spaces import loss_weights, connectors, students, full, ablation, pareto  # noqa: F401,E402
# isort: on

__all__ = [
    "SPACES",
    "SearchSpace",
    "SpaceContext",
    "get_space",
    "list_spaces",
    "describe_spaces",
    "build_sampler",
    "grid_size",
    "apply_params",
    "LABEL_KEYS",
    "SAMPLERS",
    "SCHEDULERS",
]
