"""Warm start: seed a new study with the answers of earlier sweeps (``--warm-start EXPERIMENT``).

From each experiment's newest sweep it takes the confirmed recommendation (the parent run's
``srrl.recommended.<param>`` tags), else the best finished search trial by the ranking rule; the
point is enqueued after the authors' points and its trials are labelled ``origin = warm-start``.
A point outside the new space is skipped with one line saying why.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Sequence, Tuple

from tuner.core import metrics as M
from tuner import tracking
from tuner.core.uri import redact
from tuner.core.config import ConfigError, TrialConfig, apply_params

__all__ = ["warm_points", "TAG_WARM_START"]

TAG_WARM_START = "srrl.warm_start"  # on the parent run: JSON list of {experiment, source, params}
_RECOMMENDED = "srrl.recommended."


def _typed(base: TrialConfig, raw: Dict[str, str]) -> Dict[str, Any]:
    """MLflow's string params as TrialConfig values (``"0.5"`` -> 0.5); unknown names are dropped."""
    fields = base.to_dict()
    cfg = apply_params(base, {k: v for k, v in raw.items() if k in fields})
    return {k: getattr(cfg, k) for k in raw if k in fields}


def _best_point(client: Any, experiment_id: str, parent: Any, tracking: Any) -> Tuple[str, Dict[str, str]]:
    """(source, raw params) of a sweep: its confirmed recommendation, else its best finished search trial."""
    tags = parent.data.tags
    rec = {k[len(_RECOMMENDED):]: v for k, v in tags.items() if k.startswith(_RECOMMENDED)}
    if rec:
        return "confirmed", rec
    finished = [run for run in tracking.child_runs(client, experiment_id, parent.info.run_id)
                if run.data.tags.get(tracking.TAG_STATUS) == M.FINISHED
                and run.data.tags.get(tracking.TAG_STAGE, "search") == "search" and M.RANK_VAL_ACC in run.data.metrics]
    if not finished:
        return "none", {}
    best = min(finished, key=lambda run: M.rank_key(M.FINISHED, 0, run.data.metrics[M.RANK_VAL_ACC]))
    return f"best search trial ({M.RANK_VAL_ACC} {best.data.metrics[M.RANK_VAL_ACC]:.2f})", dict(best.data.params)


def warm_points(tracking_uri: str, experiments: Sequence[str], space: Any, ctx: Any, names: Sequence[str],
                log: Callable[[str], None] = print) -> List[Dict[str, Any]]:
    """``[{experiment, source, params}]`` for each experiment whose answer lies in ``space``.

    Args:
        names: the parameters the new space searches; a point keeps only these.

    Raises:
        ConfigError: an experiment does not exist or holds no sweep (names ``warm_start``).
    """
    if not experiments:
        return []
    from pathlib import Path


    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):].split("?")[0]).is_file():
        # MLflow would create an empty store just to find nothing in it
        raise ConfigError(f"warm_start: no experiment named {experiments[0]!r}: there is no MLflow store at "
                          f"{redact(tracking_uri)}")
    client = tracking.client(tracking_uri)
    out: List[Dict[str, Any]] = []
    for name in experiments:
        try:
            exp_id = tracking.experiment_id(tracking_uri, name)
        except ValueError:
            raise ConfigError(f"warm_start: no experiment named {name!r} in {redact(tracking_uri)}") from None
        parents = tracking.sweep_parents(client, exp_id)
        if not parents:
            raise ConfigError(f"warm_start: experiment {name!r} holds no sweep")
        source, raw = _best_point(client, exp_id, parents[-1], tracking)
        if not raw:
            log(f"warm start: {name} skipped: it has no confirmed or finished search trial")
            continue
        try:
            point = {k: v for k, v in _typed(ctx.base, raw).items() if k in names}
        except ConfigError as e:
            log(f"warm start: {name} skipped: its point is not a valid config here ({e})")
            continue
        why = space.outside(ctx, point) if point else f"it sets none of {', '.join(names)}"
        if why:
            log(f"warm start: {name} skipped: {why}")
            continue
        if any(p["params"] == point for p in out):
            continue
        log(f"warm start: {name}: {source} {point}")
        out.append({"experiment": name, "source": source, "params": point})
    return out


def warm_tag(points: Sequence[Dict[str, Any]]) -> str:
    return json.dumps(list(points), sort_keys=True)
