"""``connectors``: which connector r joins the base student to the teacher, and the loss weights."""
from __future__ import annotations

from typing import Any, Dict, List

from search_spaces._base import SearchSpace, SpaceContext
from search_spaces._choices import PAPER_CONNECTOR, connector_choices, suggest_loss_weights, weight_points
from search_spaces._registry import register_space

GRID_WEIGHTS = [0.1, 1.0, 10.0]


def choices(ctx: SpaceContext) -> List[str]:
    """Connectors that fit the base student's channels to the teacher's."""
    return connector_choices(ctx, [ctx.base.student])


def define(trial: Any, ctx: SpaceContext) -> None:
    trial.suggest_categorical("connector", choices(ctx))
    suggest_loss_weights(trial)


def initial_points(ctx: SpaceContext) -> List[Dict[str, Any]]:
    return weight_points(connector=PAPER_CONNECTOR)


def grid_values(ctx: SpaceContext) -> Dict[str, List[Any]]:
    return {"connector": choices(ctx), "alpha": list(GRID_WEIGHTS), "beta": list(GRID_WEIGHTS)}


SPACE = register_space(
    SearchSpace(
        name="connectors",
        description="connector design (every one that fits the student) plus alpha and beta; student fixed",
        define=define,
        initial_points=initial_points,
        grid_values=grid_values,
    )
)
