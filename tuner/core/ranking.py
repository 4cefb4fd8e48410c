"""A raced search's configurations ranked as its trials are (docs/method.md, "Racing"): one home for the driver's
leaderboard, its record and confirmation candidates, and the analysis' leaderboard and figures."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from tuner.core import metrics as M
from tuner.core.config import RACE

__all__ = ["by_config", "row_rank"]


def by_config(rows: List[Dict[str, Any]], epochs: str = "epochs") -> List[Dict[str, Any]]:
    """A raced search's leaderboard (tuner/driver/race.py): one row per configuration, its first seed's row with
    ``best_val_acc`` and ``test_acc`` the means over its seeds that ran every epoch and ``seeds`` their count;
    ranked like trials (``metrics.rank_key``, the epochs run under the key ``epochs``), at equal epochs by seeds,
    then mean. Rows of a search that did not race pass through."""
    if not any(r.get("origin") == RACE for r in rows):
        return rows
    groups: Dict[Any, List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("config_id") or r["trial_id"], []).append(r)
    out = []
    for members in groups.values():
        first = next((r for r in members if r.get("origin") != RACE), members[0])
        done = [r for r in members if r["status"] == M.FINISHED]
        row = dict(first, seeds=len(done))
        for m in (M.RANK_VAL_ACC, M.TEST_ACC):
            values = [float(r[m]) for r in done if r.get(m) is not None]
            row[m] = sum(values) / len(values) if values else first.get(m)
        out.append(row)
    out.sort(key=lambda r: row_rank(r, epochs))
    return out


def row_rank(row: Dict[str, Any], epochs: str = "epochs") -> Tuple:
    """``metrics.rank_key`` of a leaderboard row (a trial's, or a raced configuration's with its ``seeds``)."""
    return M.rank_key(row["status"], row[epochs], row.get(M.RANK_VAL_ACC), row.get("seeds", 1))
