"""``ablation``: which loss terms matter; every arm of CE / FM / SR / KD at every seed (no Optuna)."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from search_spaces._base import SearchSpace, SpaceContext
from search_spaces._registry import register_space
from tuner.core.config import LOSS_WEIGHTS

#: arm label -> (FM on, SR on, KD on); the order of the ablation table
ARMS: Tuple[Tuple[str, Tuple[bool, bool, bool]], ...] = (
    ("CE", (False, False, False)),
    ("CE+FM", (True, False, False)),
    ("CE+SR", (False, True, False)),
    ("CE+FM+SR", (True, True, False)),
    ("CE+KD", (False, False, True)),
    ("CE+FM+SR+KD", (True, True, True)),
)


def arm_weights(ctx: SpaceContext) -> Dict[str, Dict[str, float]]:
    """Arm -> {alpha, beta, gamma}: a term that is on takes the base weight, or 1.0 where the base has it off."""
    on = {k: (getattr(ctx.base, k) if getattr(ctx.base, k) > 0 else 1.0) for k in LOSS_WEIGHTS}
    return {
        arm: {k: (on[k] if flag else 0.0) for k, flag in zip(LOSS_WEIGHTS, flags)}
        for arm, flags in ARMS
    }


def grid(ctx: SpaceContext, n_seeds: int) -> List[Dict[str, Any]]:
    """Seed-major: all six arms at ``base.seed``, then all at ``base.seed + 1``, ..."""
    if n_seeds < 1:
        raise ValueError(f"num_seeds: the ablation needs at least 1 seed, got {n_seeds}")
    weights = arm_weights(ctx)
    return [
        {"arm": arm, **weights[arm], "seed": ctx.base.seed + i}
        for i in range(n_seeds)
        for arm, _ in ARMS
    ]


SPACE = register_space(
    SearchSpace(
        name="ablation",
        description="loss-term ablation: CE, +FM, +SR, +FM+SR, +KD, +FM+SR+KD at base weights x seeds (exhaustive)",
        grid=grid,
        scheduler="fifo",
    )
)
