"""The confirmation stage's verdict from a store's confirm runs, through ``tuner.core.verdict.summarize``
(the one home of its statistics), as a numeric table and as the report's formatted one.

DataFrame in, ``Verdict`` / DataFrame out; no I/O.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import pandas as pd

from analysis.frames import SEARCHED_PARAMS, confirm_trials, searched_params
from tuner.core import metrics as M
from tuner.core.verdict import DECISION, reference_name, summarize

if TYPE_CHECKING:
    from tuner.core.verdict import Verdict

__all__ = ["confirm_rows", "verdict_table", "VERDICT_COLUMNS"]

_METRICS = (DECISION, M.TEST_ACC)  # the verdict's: the ranking rule's val value, final test
_VS = (("reference", "vs_reference"), ("ce", "vs_ce"))
#: how a confirmation run that counts ended: finished, or failed (a stall is an errored run)
_ENDS = (M.FINISHED, M.DIVERGED, M.ERRORED, M.STALLED)
#: ``verdict_table``'s columns: per configuration its finished and failed seeds, the mean and 95% CI over the
#: finished of val and test accuracy, then the difference to the reference point and to CE-only (paired on
#: seeds), each with its p-value
VERDICT_COLUMNS = (
    ["config", "config_id", "role", "rank", "seeds", "failed_seeds", "recommended"]
    + [f"{m}_{s}" for m in _METRICS for s in ("mean", "ci_low", "ci_high")]
    + [f"{m}_vs_{o}{p}" for o, _ in _VS for m in _METRICS for p in ("", "_p")]
)


def _value(v: Any) -> Any:
    """A plain Python value (numpy scalars unwrapped), None where missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    return v.item() if hasattr(v, "item") else v


def _params(confirm: pd.DataFrame) -> List[str]:
    """The searched params that tell the confirmed configurations apart (the seeds of one do not)."""
    return searched_params(confirm, [p for p in SEARCHED_PARAMS if p != "seed"])


def confirm_rows(trials: pd.DataFrame) -> List[Dict[str, Any]]:
    """``tuner.core.verdict.summarize``'s rows: one per ended confirmation run of ``trials``, with its
    ``config_id, role, rank, params`` (the searched values), ``seed``, and ``best_val_acc`` and final ``test_acc``
    (finished) or ``failed`` (diverged or errored), as the driver's ``confirm.verdict_of`` gives them."""
    confirm = confirm_trials(trials)
    if confirm.empty or "config_id" not in confirm.columns:
        return []
    confirm = confirm[confirm["status"].isin(_ENDS) & confirm["config_id"].notna()]
    params = _params(confirm)
    rows = []
    for _, run in confirm.iterrows():
        rows.append({"config_id": str(run["config_id"]), "role": run.get("config_role"),
                     "rank": _value(run.get("config_rank")),
                     "params": {p: _value(run[p]) for p in params if _value(run[p]) is not None},
                     "seed": _value(run.get("seed")),
                     **({m: _value(run.get(m)) for m in _METRICS} if run["status"] == M.FINISHED else {"failed": True})})
    return rows


def verdict_table(trials: pd.DataFrame, sweep: Optional[str] = None) -> Tuple[Optional["Verdict"], pd.DataFrame]:
    """The verdict of the confirmation runs in ``trials`` and one row per configuration (``VERDICT_COLUMNS``,
    recommended first); ``(None, empty frame)`` when no confirmation run ended.

    Args:
        sweep: whose confirmation runs; needed when ``trials`` holds those of several sweeps.

    Raises:
        ValueError: confirmation runs of several sweeps and no ``sweep`` given.
    """
    confirm = confirm_trials(trials)
    if sweep is not None:
        confirm = confirm[confirm["sweep"] == sweep]
    elif "sweep" in confirm.columns and confirm["sweep"].nunique() > 1:
        raise ValueError(f"sweep: confirmation runs of several sweeps ({', '.join(sorted(confirm['sweep'].unique()))}); "
                         "give one")
    rows = confirm_rows(confirm)
    if not rows:
        return None, pd.DataFrame(columns=list(VERDICT_COLUMNS))
    ref = next((r["params"] for r in rows if r["role"] == "reference"), {})
    verdict = summarize(rows, reference_name(ref))
    out = []
    for c in verdict.ordered():
        row: Dict[str, Any] = {"config": c.label, "config_id": c.config_id, "role": c.role, "rank": c.rank,
                               "seeds": c.n, "failed_seeds": c.failed, "recommended": c.config_id == verdict.recommended}
        for m in _METRICS:
            iv = c.metrics.get(m)
            row.update({f"{m}_mean": iv.mean if iv else math.nan, f"{m}_ci_low": iv.low if iv else math.nan,
                        f"{m}_ci_high": iv.high if iv else math.nan})
        for other, attr in _VS:
            for m in _METRICS:
                d = getattr(c, attr).get(m)
                row.update({f"{m}_vs_{other}": d.diff if d else math.nan, f"{m}_vs_{other}_p": d.p if d else math.nan})
        out.append(row)
    df = pd.DataFrame(out, columns=list(VERDICT_COLUMNS))
    df["rank"] = df["rank"].astype("Int64")
    df[["seeds", "failed_seeds"]] = df[["seeds", "failed_seeds"]].astype("int64")
    df["recommended"] = df["recommended"].astype(bool)
    return verdict, df

