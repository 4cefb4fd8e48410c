"""``pareto``: accuracy against student cost (MACs), multi-objective over student, connector and weights."""
from __future__ import annotations

from typing import Any, Dict, List

from search_spaces._base import SearchSpace, SpaceContext
from search_spaces._choices import (
    PAPER_CONNECTOR,
    connector_choices,
    student_choices,
    suggest_loss_weights,
    weight_points,
)
from search_spaces._registry import register_space
from tuner import metrics


def define(trial: Any, ctx: SpaceContext) -> None:
    students = student_choices(ctx)
    trial.suggest_categorical("student", students)
    trial.suggest_categorical("connector", connector_choices(ctx, students))
    suggest_loss_weights(trial)


def initial_points(ctx: SpaceContext) -> List[Dict[str, Any]]:
    students = student_choices(ctx)
    connectors = connector_choices(ctx, students)
    fixed: Dict[str, Any] = {"student": ctx.base.student} if ctx.base.student in students else {}
    fixed["connector"] = ctx.base.connector if ctx.base.connector in connectors else PAPER_CONNECTOR
    return weight_points(**fixed)


SPACE = register_space(
    SearchSpace(
        name="pareto",
        description="val_acc vs student MACs (NSGA-II): student, connector, alpha and beta",
        define=define,
        initial_points=initial_points,
        objectives=((metrics.VAL_ACC, "max"), (metrics.STUDENT_MACS, "min")),
        sampler="nsga2",
        scheduler="fifo",
    )
)
