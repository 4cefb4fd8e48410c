"""MLflow stores params as strings: give them back their real types (pure functions, no I/O)."""
from __future__ import annotations

import ast
import dataclasses
import math
import re
from functools import lru_cache
from typing import Any, Dict, List, Optional

import numpy as np
import pandas as pd

from tuner.core.config import TrialConfig

__all__ = ["parse_param", "typed_column", "field_types"]

_INT = re.compile(r"[+-]?\d+")
_TRUE, _FALSE = ("true", "yes"), ("false", "no")


@lru_cache(maxsize=1)
def field_types() -> Dict[str, str]:
    """TrialConfig field -> its annotation as a string (``'float'``, ``'Optional[str]'``, ``'List[float]'``)."""
    return {f.name: str(f.type) for f in dataclasses.fields(TrialConfig)}


def _generic(raw: str) -> Any:
    """int -> float -> bool -> list/dict literal -> str; ``'None'`` -> None."""
    s = raw.strip()
    if s == "None":
        return None
    if _INT.fullmatch(s):
        return int(s)
    try:
        return float(s)
    except ValueError:
        pass
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    if s[:1] in "[({" and s[-1:] in "])}":
        try:
            return ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    return raw


def parse_param(name: str, raw: Optional[str]) -> Any:
    """One param value with its real type: TrialConfig's annotation for known fields, else a generic guess.

    ``'None'`` becomes None (NaN once in a float column). A value that does not parse as its
    annotated type falls back to the generic guess rather than raising.
    """
    if raw is None:
        return None
    ann = field_types().get(name)
    if ann is None:
        return _generic(raw)
    optional = ann.startswith("Optional[")
    base = ann[len("Optional["):-1] if optional else ann
    s = raw.strip()
    if s == "None":
        return None
    try:
        if base == "bool":
            if s.lower() in _TRUE + ("1",) or s.lower() in _FALSE + ("0",):
                return s.lower() in _TRUE + ("1",)
            raise ValueError(s)
        if base == "int":
            value = float(s)
            if not value.is_integer():
                raise ValueError(s)
            return int(value)
        if base == "float":
            return float(s)
        if base == "str":
            return raw
        if base.startswith("List["):
            value = ast.literal_eval(s)
            return list(value) if isinstance(value, (list, tuple)) else [value]
    except (ValueError, SyntaxError, TypeError):
        pass
    return _generic(raw)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def typed_column(values: List[Any], name: str = "") -> pd.Series:
    """A column of parsed values with one dtype: bool, int64, float64, else object/str.

    Missing values in an all-int or all-bool column give pandas' nullable ``Int64`` / ``boolean``;
    a field annotated float (or Optional[float]) is float64 even when every value is missing.
    """
    present = [v for v in values if not _missing(v)]
    missing = len(present) < len(values)
    ann = field_types().get(name, "")
    if ann in ("float", "Optional[float]") and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                    for v in present):
        return pd.Series([np.nan if _missing(v) else float(v) for v in values], dtype="float64")
    if present and all(isinstance(v, (bool, np.bool_)) for v in present):
        return pd.Series(values, dtype="boolean" if missing else "bool")
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return pd.Series([None if _missing(v) else v for v in values], dtype="Int64" if missing else "int64")
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return pd.Series([np.nan if _missing(v) else float(v) for v in values], dtype="float64")
    if present and all(isinstance(v, str) for v in present):
        return pd.Series([None if _missing(v) else v for v in values])
    return pd.Series([None if _missing(v) else v for v in values], dtype=object)
