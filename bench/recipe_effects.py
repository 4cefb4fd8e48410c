"""Which recipe settings matter for a fixed teacher and student? One change at a time, over seeds, at (1, 1).

``python -m bench.recipe_effects [--config configs/digits.yaml] [--seeds 5] [--workers 1] [--json out.json]
[--from out.json]``; ``--from bench/data/recipe_effects.json`` prints the README's table from the runs it
was made of (80 runs, 18 min on 1 of 2 loaded CPUs).

The base recipe at the authors' alpha = beta = 1 and each single change of an optimiser setting
(learning rate, weight decay, schedule, batch size, Nesterov momentum) train at the full epoch budget
for the same seeds, student fixed. Each change is compared with the base paired on seeds: mean
difference of final val and test accuracy with its 95% interval and p-value. What moves the
accuracy by more than the seed noise is what the default space searches (README, "The default
space"; docs/method.md, "What the default searches").
"""
from __future__ import annotations

from typing import Any, Dict, List

from bench._common import runs_main, train_pool
from tuner.core.sweep_config import SweepConfig

#: one change of the base recipe each; the base itself is ``{}``
CHANGES: List[Dict[str, Any]] = [
    {}, {"lr": 0.01}, {"lr": 0.02}, {"lr": 0.1}, {"lr": 0.2}, {"lr": 0.5}, {"lr": 0.8}, {"lr": 1.6},
    {"weight_decay": 0.0}, {"weight_decay": 5e-5}, {"weight_decay": 5e-3},
    {"schedule": "cosine"}, {"schedule": "constant"}, {"batch_size": 16}, {"batch_size": 32}, {"nesterov": True},
]


def _label(change: Dict[str, Any]) -> str:
    return " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in change.items()) or "base recipe"


def run(config: str, seeds: int, workers: int, done: List[Dict[str, Any]], save: Any) -> List[Dict[str, Any]]:
    """Every change x seed not already in ``done`` (an earlier run's rows: the bench continues it)."""
    base = SweepConfig.from_yaml(config, {"threads": 1, "alpha": 1.0, "beta": 1.0})[1]
    have = {(r["change"], r["seed"]) for r in done}
    jobs = [{"label": {"change": _label(c)}, "cfg": base.replace(seed=s, **c).to_dict(), "base": base.to_dict()}
            for s in range(1, seeds + 1) for c in CHANGES if (_label(c), s) not in have]
    return train_pool(jobs, base, workers, done, every=len(CHANGES), save=save)


def report(runs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Per change: mean final val/test over seeds and the paired difference to the base recipe (a table)."""
    from tuner.core.verdict import mean_ci, paired

    by = {(r["change"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    base = _label({})
    rows = []
    print(f"\nRecipe changes at alpha = beta = 1, {len(seeds)} seeds each, final epoch; difference to the base "
          "recipe paired on seeds (95% CI, p)")
    print("| change | val | test | val vs base | test vs base |\n|---|---|---|---|---|")
    for change in dict.fromkeys(r["change"] for r in runs):
        val = [by[(change, s)]["val"][-1] for s in seeds]
        test = [by[(change, s)]["test"] for s in seeds]
        row = {"change": change, "val": mean_ci(val).mean, "test": mean_ci(test).mean}
        cells = []
        for metric, xs in (("val", val), ("test", test)):
            if change == base:
                cells.append("-")
                continue
            ref = [by[(base, s)]["val"][-1] if metric == "val" else by[(base, s)]["test"] for s in seeds]
            d = paired(xs, ref)
            row[f"{metric}_diff"], row[f"{metric}_p"] = d.diff, d.p
            cells.append(f"{d.diff:+.2f} [{d.low:+.2f}, {d.high:+.2f}] p={d.p:.2g}")
        print(f"| {change} | {row['val']:.2f} | {row['test']:.2f} | {cells[0]} | {cells[1]} |")
        rows.append(row)
    return rows


if __name__ == "__main__":
    runs_main(__doc__, run, report, workers=1)
