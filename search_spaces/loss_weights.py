"""``loss_weights``: the per-pair (alpha, beta) search the SRRL authors recommend, nothing else."""
from __future__ import annotations

from typing import Any, Dict, List

from search_spaces._base import SearchSpace, SpaceContext
from search_spaces._choices import suggest_loss_weights, weight_points
from search_spaces._registry import register_space

GRID_WEIGHTS = [0.01, 0.1, 1.0, 10.0, 100.0]


def define(trial: Any, ctx: SpaceContext) -> None:
    suggest_loss_weights(trial)


def initial_points(ctx: SpaceContext) -> List[Dict[str, Any]]:
    return weight_points()


def grid_values(ctx: SpaceContext) -> Dict[str, List[Any]]:
    return {"alpha": list(GRID_WEIGHTS), "beta": list(GRID_WEIGHTS)}


SPACE = register_space(
    SearchSpace(
        name="loss_weights",
        description="alpha (FM) and beta (SR) weights, log-uniform on [0.01, 100]; student and connector fixed",
        define=define,
        initial_points=initial_points,
        grid_values=grid_values,
    )
)
