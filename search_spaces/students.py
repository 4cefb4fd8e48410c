"""``students``: which zoo student to distil into (same input size as the data, not the teacher's arch)."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from search_spaces._base import SearchSpace, SpaceContext
from search_spaces._choices import (
    PAPER_CONNECTOR,
    connector_fits_student,
    student_choices,
    suggest_loss_weights,
    weight_points,
)
from search_spaces._registry import register_space


def define(trial: Any, ctx: SpaceContext) -> Optional[Dict[str, Any]]:
    """Student + loss weights; the base connector, or the paper's where the base one does not fit."""
    student = trial.suggest_categorical("student", student_choices(ctx))
    suggest_loss_weights(trial)
    if not connector_fits_student(ctx, ctx.base.connector, student):
        return {"connector": PAPER_CONNECTOR}
    return None


def initial_points(ctx: SpaceContext) -> List[Dict[str, Any]]:
    fixed = {"student": ctx.base.student} if ctx.base.student in student_choices(ctx) else {}
    return weight_points(**fixed)


SPACE = register_space(
    SearchSpace(
        name="students",
        description="student architecture (zoo models of the data's input size) plus alpha and beta",
        define=define,
        initial_points=initial_points,
    )
)
