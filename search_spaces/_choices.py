"""Choice lists and suggestions shared by the spaces; every list is deterministic given the context.

Optuna needs a categorical parameter to keep one choice set for the whole study, so choices are
computed from the ``SpaceContext`` alone and kept in registry order.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from search_spaces._base import SpaceContext
from tuner.core.catalog import connector_fits, feature_channels, list_connectors, list_models

__all__ = [
    "suggest_architecture",
    "base_architecture",
    "AUTHORS_WEIGHTS",
    "WEIGHT_LOW",
    "WEIGHT_HIGH",
    "PAPER_CONNECTOR",
    "suggest_loss_weights",
    "weight_points",
    "student_choices",
    "connector_choices",
    "connector_fits_student",
]

#: (alpha, beta) pairs the SRRL authors suggested trying per teacher-student pair (docs/method.md)
AUTHORS_WEIGHTS = ((1.0, 1.0), (1.0, 5.0), (10.0, 1.0))
WEIGHT_LOW, WEIGHT_HIGH = 0.01, 100.0
PAPER_CONNECTOR = "conv1x1_bn_relu"


def suggest_loss_weights(trial: Any) -> None:
    """alpha (FM weight) and beta (SR weight), each log-uniform on [0.01, 100]."""
    trial.suggest_float("alpha", WEIGHT_LOW, WEIGHT_HIGH, log=True)
    trial.suggest_float("beta", WEIGHT_LOW, WEIGHT_HIGH, log=True)


def weight_points(**fixed: Any) -> List[Dict[str, Any]]:
    """``fixed`` at each of the authors' (alpha, beta) pairs, in their order."""
    return [{**fixed, "alpha": a, "beta": b} for a, b in AUTHORS_WEIGHTS]


def student_channels(ctx: SpaceContext, student: str) -> int:
    return feature_channels(student)


def connector_fits_student(ctx: SpaceContext, connector: str, student: str) -> bool:
    return connector_fits(connector, student_channels(ctx, student), ctx.teacher_channels)


def student_choices(ctx: SpaceContext) -> List[str]:
    """Zoo models whose native input size is the data set's, minus the teacher's architecture.

    Raises:
        ValueError: no such model.
    """
    names = [m for m in list_models(input_size=ctx.input_size) if m != ctx.base.teacher]
    if not names:
        raise ValueError(
            f"student: no model besides the teacher {ctx.base.teacher!r} has native input size {ctx.input_size}; "
            "search a space that keeps the student fixed"
        )
    return names


def connector_choices(ctx: SpaceContext, students: Sequence[str]) -> List[str]:
    """Registered connectors that fit EVERY student in ``students`` to the teacher (``identity`` rarely does)."""

    return [c for c in list_connectors() if all(connector_fits_student(ctx, c, s) for s in students)]


def suggest_architecture(trial: Any, ctx: SpaceContext) -> None:
    """Student and a connector that fits every student choice (the ``full`` and ``pareto`` spaces)."""
    students = student_choices(ctx)
    trial.suggest_categorical("student", students)
    trial.suggest_categorical("connector", connector_choices(ctx, students))


def base_architecture(ctx: SpaceContext) -> Dict[str, Any]:
    """The base student and connector as a starting point; the paper's connector where the base one is no choice."""
    students = student_choices(ctx)
    connectors = connector_choices(ctx, students)
    fixed: Dict[str, Any] = {"student": ctx.base.student} if ctx.base.student in students else {}
    fixed["connector"] = ctx.base.connector if ctx.base.connector in connectors else PAPER_CONNECTOR
    return fixed
