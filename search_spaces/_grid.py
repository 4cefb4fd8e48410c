"""The ``grid`` sampler for sweeps (its own module: Tune pickles the searcher, so the class must be importable)."""
from __future__ import annotations

from typing import Any

import optuna

__all__ = ["TuneGridSampler"]


class TuneGridSampler(optuna.samplers.GridSampler):
    """A ``GridSampler`` that never calls ``study.stop()``: the sweep's trial count (the grid's size) ends it.

    Under Tune the study is told results with ``study.tell`` outside ``optimize()``, where the stock
    sampler's ``study.stop()`` on the last grid point raises; Tune then counted a failed trial and ran it again.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        pass
