"""Which rows and columns of ``load_trials``'s frame a view reads: the search stage or the confirmation,
and the params the trials actually vary. Shared by ``analysis.tables`` and ``analysis.confirm_views``."""
from __future__ import annotations

from typing import List, Sequence

import pandas as pd

from tuner.core.config import SEARCHED_PARAMS

__all__ = ["SEARCHED_PARAMS", "searched_params", "search_trials", "confirm_trials"]



def hashable(s: pd.Series) -> pd.Series:
    return s.map(lambda v: str(v) if isinstance(v, (list, dict, tuple)) else v)


def searched_params(trials: pd.DataFrame, candidates: Sequence[str] = SEARCHED_PARAMS) -> List[str]:
    """The ``candidates`` that are columns of ``trials`` and take more than one value there."""
    return [c for c in candidates if c in trials.columns and hashable(trials[c]).nunique(dropna=True) > 1]


def _stage(trials: pd.DataFrame) -> pd.Series:
    return trials["stage"].fillna("search") if "stage" in trials.columns else pd.Series("search", index=trials.index)


def search_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The search-stage trials (a run without ``stage``, from a sweep before the confirmation stage, is one)."""
    return trials[_stage(trials) != "confirm"]


def confirm_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The confirmation runs (``stage == "confirm"``): the verdict's, never the search views'."""
    return trials[_stage(trials) == "confirm"]
