"""``full``: student, connector, loss weights, learning rate and weight decay together."""
from __future__ import annotations

from typing import Any, Dict, List

from search_spaces._base import SearchSpace, SpaceContext
from search_spaces._choices import base_architecture, suggest_architecture, suggest_loss_weights, weight_points
from search_spaces._registry import register_space

LR_FACTOR = 10.0  # lr searched on [base.lr / 10, base.lr * 10]
WEIGHT_DECAY_RANGE = (1e-5, 1e-3)


def define(trial: Any, ctx: SpaceContext) -> None:
    suggest_architecture(trial, ctx)
    suggest_loss_weights(trial)
    trial.suggest_float("lr", ctx.base.lr / LR_FACTOR, ctx.base.lr * LR_FACTOR, log=True)
    trial.suggest_float("weight_decay", *WEIGHT_DECAY_RANGE, log=True)


def initial_points(ctx: SpaceContext) -> List[Dict[str, Any]]:
    """The base recipe at the authors' weights (a base value outside the space is left to the sampler)."""
    fixed = {**base_architecture(ctx), "lr": ctx.base.lr}
    if WEIGHT_DECAY_RANGE[0] <= ctx.base.weight_decay <= WEIGHT_DECAY_RANGE[1]:
        fixed["weight_decay"] = ctx.base.weight_decay
    return weight_points(**fixed)


SPACE = register_space(
    SearchSpace(
        name="full",
        description="student, connector, alpha, beta, lr (base/10..base*10) and weight decay (1e-5..1e-3)",
        define=define,
        initial_points=initial_points,
    )
)
