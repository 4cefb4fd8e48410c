"""Cell formatting shared by the printed, HTML and Markdown tables (no dependency on tabulate)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tuner.core.config import SEARCHED_PARAMS, fmt_param

__all__ = ["fmt_value", "to_markdown", "to_html", "for_display"]


def fmt_value(v: Any) -> str:
    """Readable text for one cell: integral floats with thousands separators, others to 4 significant
    digits (p-values and tiny numbers in exponent form), missing values empty."""
    if v is None or v is pd.NA or v is pd.NaT:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) >= 10_000 else str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return ""
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x.is_integer() and abs(x) < 1e15:
            return f"{int(x):,}" if abs(x) >= 10_000 else str(int(x))
        return f"{x:.4g}"
    if isinstance(v, pd.Timestamp):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def for_display(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with every cell (and the index) as formatted text."""
    out = df.copy()
    for c in out.columns:  # a searched param reads as in the CLI and the run names (one format everywhere)
        out[c] = out[c].astype(object).map(lambda v, param=c in SEARCHED_PARAMS: fmt_param(float(v)) if param and
                                           isinstance(v, (float, np.floating)) and np.isfinite(v) else fmt_value(v))
    out.index = pd.Index([fmt_value(i) for i in out.index], name=out.index.name)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-flavoured Markdown table (numbers right-aligned)."""
    shown = for_display(df)
    headers = [str(c) for c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    rows = [list(r) for r in shown.itertuples(index=False, name=None)]
    if index:
        headers = [str(df.index.name or "")] + headers
        numeric = [pd.api.types.is_numeric_dtype(df.index)] + numeric
        rows = [[i] + r for i, r in zip(shown.index, rows)]
    lines = ["| " + " | ".join(_cell(h) for h in headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(_cell(str(v)) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def to_html(df: pd.DataFrame, index: bool = True) -> str:
    """The formatted cells (HTML-escaped) as a table of class ``tbl``: numbers right-aligned, text
    left-aligned; the index, if shown, as a first column (one header row)."""
    import html

    shown = for_display(df)
    source = df
    if index:
        shown = shown.reset_index(names=str(df.index.name or ""))
        source = df.reset_index(names=str(df.index.name or ""))
    align = ["num" if pd.api.types.is_numeric_dtype(source[c]) and not pd.api.types.is_bool_dtype(source[c]) else "txt"
             for c in source.columns]
    head = "".join(f'<th class="{a}">{html.escape(str(c))}</th>' for c, a in zip(shown.columns, align))
    rows = []
    for values in shown.itertuples(index=False):
        cells = "".join(f'<td class="{a}">{"" if _blank(v) else html.escape(str(v))}</td>' for v, a in zip(values, align))
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="tbl"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _blank(value: object) -> bool:
    try:
        return value is None or bool(pd.isna(value))
    except (TypeError, ValueError):
        return False