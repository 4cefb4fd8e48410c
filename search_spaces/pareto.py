"""``pareto``: accuracy against student cost (MACs), multi-objective over student, connector and weights."""
from __future__ import annotations

from typing import Any, Dict, List

from search_spaces._base import SearchSpace, SpaceContext
from search_spaces._choices import base_architecture, suggest_architecture, suggest_loss_weights, weight_points
from search_spaces._registry import register_space
from tuner import metrics


def define(trial: Any, ctx: SpaceContext) -> None:
    suggest_architecture(trial, ctx)
    suggest_loss_weights(trial)


def initial_points(ctx: SpaceContext) -> List[Dict[str, Any]]:
    return weight_points(**base_architecture(ctx))


SPACE = register_space(
    SearchSpace(
        name="pareto",
        description="val_acc vs student MACs (NSGA-II): student, connector, alpha and beta",
        define=define,
        initial_points=initial_points,
        objectives=((metrics.RANK_VAL_ACC, "max"), (metrics.STUDENT_MACS, "min")),
        sampler="nsga2",
        scheduler="fifo",
    )
)
