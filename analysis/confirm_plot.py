"""The confirmation stage as a figure: per confirmed configuration every seed, the mean and its 95% interval.

Beside ``analysis.plots`` (whose figures show the search's trials) and on its helpers; matplotlib is imported
inside them.
"""
from __future__ import annotations

import textwrap
from typing import Any, Optional

import numpy as np

from analysis.plots import _figure, _percent
from tuner.core import metrics as M
from tuner.core.verdict import USABLE_SEEDS

__all__ = ["confirmation"]


def confirmation(verdict: Any) -> Optional[Any]:
    """The confirmation stage: per configuration (one row each, the recommended first and gold) every seed's
    value and the mean with its 95% interval, for the ranked val value and the final test accuracy. None
    without a verdict."""
    if verdict is None or not verdict.configs:
        return None
    configs = verdict.ordered()
    shown = [m for m in (M.RANK_VAL_ACC, M.TEST_ACC) if any(m in c.metrics for c in configs)]
    fig = _figure(5.0 * len(shown) + 1.5, 1.0 + 0.55 * len(configs))
    axes = fig.subplots(1, len(shown), squeeze=False, sharey=True)[0]
    ys = np.arange(len(configs))[::-1]
    for ax, m in zip(axes, shown):
        for y, c in zip(ys, configs):
            iv = c.metrics.get(m)
            if iv is None:
                continue
            colour = "goldenrod" if c.config_id == verdict.recommended else "C0"
            ax.scatter(iv.values, [y] * len(iv.values), s=18, c="0.5", zorder=2)
            usable = c.n >= USABLE_SEEDS  # fewer seeds: the interval spans hundreds of points, none is drawn
            ax.errorbar([iv.mean], [y], xerr=[[iv.mean - iv.low], [iv.high - iv.mean]] if usable else None, fmt="D",
                        c=colour, ms=7, capsize=4, lw=2, zorder=3)
        ax.set_xlabel(f"{m} (dots: seeds; diamond: mean, bar: 95% CI)")
        _percent(ax.xaxis, m)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(ys, [f"{c.label} ({c.role}{', recommended' if c.config_id == verdict.recommended else ''}, "
                            f"{c.n} seeds{'' if c.n >= USABLE_SEEDS else ': no usable CI'})" for c in configs], fontsize=8)
    fig.suptitle(textwrap.fill("confirmation over fresh seeds: " + verdict.sentence, 150), fontsize=8)
    return fig

