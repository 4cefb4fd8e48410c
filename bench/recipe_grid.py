"""A ground truth for the default space: every point of a grid over alpha, beta and lr, trained on several seeds.

``python -m bench.recipe_grid [--config configs/digits.yaml] [--seeds 6] [--workers 2] [--json out.json]
[--from out.json]``; ``--json bench/data/recipe_grid.json`` regenerates the stored table (456 runs; the time
it took is in docs/method.md, "Search quality on a ground truth"), ``--from`` prints its summary.

The grid is the ``recipe`` preset's range in whole steps: alpha and beta at every decade of
[0.01, 100], lr at base x {1, 4, 16} (the range [base/2, base x 32] in three equal log-width cells).
Replica ``r`` (r = 1..seeds) of a point trains with seed ``r`` on the train/val split re-drawn by
``r`` (``val_split_seed``, as a confirmation seed does), so replicas differ in both the run's luck and
the validation images, and replica ``r`` of every point shares its split (as a sweep's trials share
theirs). Each run stores its per-epoch val and test accuracy. ``bench.search_quality`` replays
searchers against this table; the truth of a point is its mean final test accuracy over replicas.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

from bench._common import runs_main, train_pool
from search_spaces.presets import LOSS_GRID
from tuner.core.config import TrialConfig
from tuner.core.sweep_config import SweepConfig

LR_STEPS = (1, 4, 16)  # x the base lr
GRID_FIELDS = ("alpha", "beta", "lr")


def grid_points(base: TrialConfig) -> List[Dict[str, float]]:
    """Every grid point of ``base``'s recipe space, the reference (``base``'s own alpha, beta, lr) among them, then
    CE-only at the base lr (the confirmation's other yardstick)."""
    return [*({"alpha": a, "beta": b, "lr": base.lr * k} for k in LR_STEPS for a in LOSS_GRID for b in LOSS_GRID),
            {"alpha": 0.0, "beta": 0.0, "lr": base.lr}]


def key(point: Dict[str, Any]) -> Tuple[float, ...]:
    """A point's identity in the table (rounded, so a value read back from JSON matches)."""
    return tuple(round(float(point[f]), 9) for f in GRID_FIELDS)


def snap(point: Dict[str, Any], points: List[Dict[str, float]]) -> Dict[str, float]:
    """The grid point nearest ``point`` in log space, field by field (its cell); a weight of 0 is CE-only's 0."""
    out = {}
    for f in GRID_FIELDS:
        value = float(point[f])
        values = sorted({p[f] for p in points if (p[f] == 0) == (value == 0)})
        out[f] = min(values, key=lambda v: abs(math.log(v) - math.log(value))) if value else 0.0
    return out


def run(config: str, seeds: int, workers: int, done: List[Dict[str, Any]], save: Any) -> List[Dict[str, Any]]:
    """Every point x replica not already in ``done``, replica by replica (a partial table covers every point)."""
    base = SweepConfig.from_yaml(config, {"threads": 1})[1]
    have = {(key(r), r["seed"]) for r in done}
    jobs = [{"label": p, "cfg": base.replace(seed=s, val_split_seed=s, **p).to_dict(), "base": base.to_dict(),
             "test_curve": True}
            for s in range(1, seeds + 1) for p in grid_points(base) if (key(p), s) not in have]
    return train_pool(jobs, base, workers, done, every=25, save=save)


def truth(runs: List[Dict[str, Any]]) -> Dict[Tuple[float, ...], Dict[str, Any]]:
    """Per point: its replicas' final test accuracies (a diverged run scores 0, as a sweep scores it), their mean."""
    by: Dict[Tuple[float, ...], Dict[str, Any]] = {}
    for r in runs:
        cell = by.setdefault(key(r), {**{f: r[f] for f in GRID_FIELDS}, "tests": []})
        cell["tests"].append(0.0 if r["diverged"] else r["test"])
    for cell in by.values():
        cell["mean"] = sum(cell["tests"]) / len(cell["tests"])
    return by


def report(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The ten best points and the reference by mean final test over replicas (95% intervals)."""
    from tuner.core.verdict import mean_ci

    by = truth(runs)
    cells = sorted(by.values(), key=lambda c: -c["mean"])
    best = cells[0]["mean"]
    reference = by[key({"alpha": 1.0, "beta": 1.0, "lr": min(r["lr"] for r in runs)})]  # the base lr is the grid's lowest
    replicas = sorted({r["seed"] for r in runs})
    diverged = sum(1 for r in runs if r["diverged"])
    print(f"\n{len(cells)} grid points x {len(replicas)} replicas ({len(runs)} runs, {diverged} diverged); "
          f"{sum(1 for c in cells if c['mean'] >= best - 0.5)} point(s) within 0.5 test points of the best")
    print("| rank | alpha | beta | lr | test mean [95% CI] |\n|---|---|---|---|---|")
    for rank, c in enumerate(cells, 1):
        if rank <= 10 or c is reference:
            ci = mean_ci(c["tests"])
            print(f"| {rank}{' (reference)' if c is reference else ''} | {c['alpha']:g} | {c['beta']:g} | {c['lr']:g} "
                  f"| {ci.mean:.2f} [{ci.low:.2f}, {ci.high:.2f}] |")
    return cells


if __name__ == "__main__":
    runs_main(__doc__, run, report, workers=2, seeds=6)
