"""Which per-trial number should rank a search, and how early can ASHA cut? Measured on a digits grid over seeds.

``python -m bench.ranking_rule [--seeds 5] [--workers 2] [--json out.json] [--from out.json]``

Every point of the ``loss_weights`` grid (25 alpha x beta pairs) trains at the full epoch budget
for each seed, with no early stopping. A configuration's quality is its multi-seed mean of final
test accuracy. For each candidate rule (the max of val_acc over epochs, the final epoch's val_acc,
the mean of the last k epochs' val_acc) and each seed s, the rule's value on seed s is rank-
correlated (Spearman) with the quality measured on the OTHER seeds, so one seed's noise cannot
predict itself; the table reports the mean over s. The same is done for the val_acc at each epoch
(what an ASHA rung sees), which tells the smallest grace period whose cut still ranks well.
"""
from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from typing import Any, Dict, List, Sequence

from bench._common import runs_main
from tuner.core import metrics as M
from tuner.core.config import TrialConfig
from tuner.core.sweep_config import SweepConfig

GRID = [0.01, 0.1, 1.0, 10.0, 100.0]


def _train(job: Dict[str, Any]) -> Dict[str, Any]:
    from tuner.core.teacher import ensure_teacher
    from tuner.core.trainer import Trainer, load_splits

    cfg = TrialConfig.from_dict(job["cfg"])
    splits = load_splits(cfg)
    teacher = ensure_teacher(cfg, splits, log=lambda _: None)
    result = Trainer(cfg, teacher.model, splits).fit()
    return {"alpha": cfg.alpha, "beta": cfg.beta, "seed": cfg.seed,
            "val": [row[M.VAL_ACC] for row in result.history], "test": result.final[M.TEST_ACC]}


def run(config: str, seeds: int, workers: int, done: List[Dict[str, Any]] = ()) -> List[Dict[str, Any]]:
    """Every grid point x seed not already in ``done`` (an earlier run's rows: the bench continues it)."""
    base = SweepConfig.from_yaml(config, {"threads": 1})[1]
    have = {(r["alpha"], r["beta"], r["seed"]) for r in done}
    jobs = [{"cfg": base.replace(alpha=a, beta=b, seed=s).to_dict()} for s in range(seeds) for a in GRID for b in GRID
            if (a, b, s) not in have]
    from tuner.core.teacher import ensure_teacher
    from tuner.core.trainer import load_splits

    ensure_teacher(base, load_splits(base), log=print)  # trained once, before the workers read the cache
    start = time.perf_counter()
    with mp.get_context("spawn").Pool(workers) as pool:
        out = list(done)
        for i, row in enumerate(pool.imap_unordered(_train, jobs), 1):
            out.append(row)
            if i % 25 == 0:
                print(f"{i}/{len(jobs)} runs, {time.perf_counter() - start:.0f} s", flush=True)
    return out


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def held_out(runs: List[Dict[str, Any]], score: Any) -> Dict[str, float]:
    """Over seeds s, how well ``score`` of seed s's val history predicts the other seeds' mean final test acc.

    ``rho``: Spearman across all configurations; ``rho_top``: across the better half (by the held-out
    quality), where a search's decision is made; ``regret``: quality of the best configuration minus
    that of the one the rule picks on seed s (test points; 0 is a perfect pick). Means over s.
    """
    seeds = sorted({r["seed"] for r in runs})
    configs = sorted({(r["alpha"], r["beta"]) for r in runs})
    by = {(r["alpha"], r["beta"], r["seed"]): r for r in runs}
    out: Dict[str, List[float]] = {"rho": [], "rho_top": [], "regret": []}
    for s in seeds:
        xs = [score(by[(a, b, s)]["val"]) for a, b in configs]
        ys = [statistics.mean(by[(a, b, o)]["test"] for o in seeds if o != s) for a, b in configs]
        out["rho"].append(spearman(xs, ys))
        top = sorted(range(len(ys)), key=lambda i: -ys[i])[: len(ys) // 2]
        out["rho_top"].append(spearman([xs[i] for i in top], [ys[i] for i in top]))
        out["regret"].append(max(ys) - ys[max(range(len(xs)), key=lambda i: xs[i])])
    return {k: statistics.mean(v) for k, v in out.items()}


def held_out_rho(runs: List[Dict[str, Any]], score: Any) -> float:
    return held_out(runs, score)["rho"]


RULES = {
    "max over epochs": lambda v: max(v),
    "final epoch": lambda v: v[-1],
    "mean of last 3": lambda v: statistics.mean(v[-3:]),
    "mean of last 5": lambda v: statistics.mean(v[-5:]),
    "mean of last 10": lambda v: statistics.mean(v[-10:]),
    "mean of last 15": lambda v: statistics.mean(v[-15:]),
}


def report(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    epochs = len(runs[0]["val"])
    seeds = len({r["seed"] for r in runs})
    stats = {name: held_out(runs, fn) for name, fn in RULES.items()}
    rules = {name: st["rho"] for name, st in stats.items()}
    # the multi-seed mean's own ceiling: seed s's final test acc against the other seeds' mean
    ceiling = held_out([{**r, "val": [r["test"]]} for r in runs], lambda v: v[-1])
    print(f"\nRanking rules ({len(runs) // seeds} configurations x {seeds} seeds, {epochs} epochs): the rule on one "
          "seed vs the other seeds' mean final test acc (Spearman over all / the better half; regret of its pick)")
    print("| rule | Spearman, all | Spearman, better half | regret of the top pick (test points) |\n|---|---|---|---|")
    for name, st in sorted(stats.items(), key=lambda kv: kv[1]["regret"]):
        print(f"| {name} | {st['rho']:.3f} | {st['rho_top']:.3f} | {st['regret']:.2f} |")
    print(f"| (one seed's final test acc, for scale) | {ceiling['rho']:.3f} | {ceiling['rho_top']:.3f} | "
          f"{ceiling['regret']:.2f} |")
    # an ASHA rung at epoch e sees each rule's value over the epochs so far; the project's rule is the max
    # (tuner.core.metrics.RANK_VAL_ACC): what the grace period is derived from
    rungs = {name: {e: held_out(runs, lambda v, e=e, fn=fn: fn(v[:e])) for e in range(1, epochs + 1)}
             for name, fn in RULES.items()}
    best = "max over epochs"
    rung = rungs[best]
    print("\nASHA rungs: each rule over the first e epochs vs the final multi-seed mean (Spearman all / better half)")
    print("| epoch | " + " | ".join(RULES) + " |\n|---|" + "---|" * len(RULES))
    for e in range(1, epochs + 1):
        print(f"| {e} | " + " | ".join(f"{rungs[n][e]['rho']:.2f} / {rungs[n][e]['rho_top']:.2f}" for n in RULES) + " |")
    final = rung[epochs]["rho"]
    grace = next(e for e, st in rung.items() if st["rho"] >= 0.9 * final)
    print(f"\nfirst epoch whose Spearman ({best}) reaches 90% of the final epoch's ({final:.3f}): {grace} "
          f"= {grace / epochs:.2f} of the budget")
    return {"rules": rules, "ceiling": ceiling, "best": best, "rungs": rung, "all_rungs": rungs, "grace": grace}


if __name__ == "__main__":
    runs_main(__doc__, run, report, workers=2)
