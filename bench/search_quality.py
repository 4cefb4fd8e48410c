"""Search quality on a ground truth: searchers replayed against the recipe grid through the sweep's own code.

``python -m bench.search_quality [--grid bench/data/recipe_grid.json] [--reps 30] [--searchers tpe,race,random,gp]
[--workers 3] [--json out.json] [--from out.json]``; ``--json bench/data/search_quality.json`` regenerates the
stored outcomes (150 replays, about 75 min on 2 CPUs with 4 at once), ``--from`` prints their table.

Each replay is ``run_sweep`` on the embedded default (``configs/digits.yaml``: the ``recipe`` space, 16
trials, ASHA, the confirmation stage and its verdict, 2 trials at once as on 2 CPUs) with two changes:
its trainable looks each trial up in ``bench.recipe_grid``'s table instead of training, and the
per-trial MLflow records are off (they decide nothing; the sweep's parent run is still written). A trial's
alpha, beta and lr are snapped to their grid cell (nearest in log space) and its seed ``s`` reads
replica ``order[s mod R]`` of that cell, epoch by epoch, where ``order`` is a permutation of the R
replicas drawn from the replay's seed. The sweep's seeds (search 0, race 1.., confirmation after them)
so read distinct replicas as far as R allows, and every searcher of one repetition reads the same
permutation (paired). Per searcher over the repetitions (sweep seeds 0..reps-1): how often the
recommendation's cell is within 0.5 test points of the grid's best cell (truth: mean final test over
replicas), mean regret, how often it is worse than the reference's cell, and the epochs spent
(every trial's epochs, the confirmation's included). docs/method.md, "Search quality on a ground truth".
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple
from unittest import mock

from bench.recipe_grid import GRID_FIELDS, key, snap, truth
from tuner.core import metrics as M

#: searcher name -> what its sweeps change in the default
SEARCHERS: Dict[str, Dict[str, Any]] = {
    "tpe": {"searcher": "tpe"},  # the default: TPE + ASHA + confirmation
    "race": {"searcher": "tpe", "race": 3},
    "random": {"searcher": "random"},
    "gp": {"searcher": "gp"},
    "tpe-confirm3": {"searcher": "tpe", "confirm": 3},  # the default with a third candidate confirmed
}
MARGIN = 0.5
CPUS = 2  # the default's concurrency on a 2-CPU machine, whatever this one has


def replay_trial(config: Dict[str, Any], base: Dict[str, Any], table: Dict[Tuple, Dict[str, Any]],
                 points: List[Dict[str, float]], order: List[int]) -> None:
    """A Tune trainable that reports the stored run of the trial's grid cell and seed, as ``run_epochs`` reports."""
    from ray import tune

    from tuner.core.config import apply_params

    cfg = apply_params(base, config)
    run = table[(key(snap(cfg.to_dict(), points)), order[cfg.seed % len(order)])]
    best = 0.0
    for epoch, val in enumerate(run["val"], 1):
        best = max(best, val)
        row = {M.EPOCH: epoch, M.VAL_ACC: val, M.BEST_VAL_ACC: best, M.DIVERGED_KEY: 0.0}
        if epoch == cfg.epochs:
            row[M.TEST_ACC] = run["test"]
        tune.report(row)
    if run["diverged"]:
        tune.report({M.EPOCH: run["diverged"], M.DIVERGED_KEY: 1.0, M.VAL_ACC: 0.0, M.RANK_VAL_ACC: 0.0})


def _NoRecords(*_: Any, **__: Any) -> Any:
    """Stands in for the sweep's ``MLflowTracking`` callback: a Tune callback that records nothing."""
    from ray.tune import Callback

    return Callback()


def replay(searcher: str, rep: int, runs: List[Dict[str, Any]], folder: Path, config: str) -> Dict[str, Any]:
    """One sweep of ``searcher`` with sweep seed ``rep``: its recommendation's grid cell and the epochs it spent."""
    from ray import tune

    from bench.search_quality import replay_trial  # by this name: run as ``-m``, this module is ``__main__``
    from tuner.driver import sweep_build
    from tuner.core.config import load_yaml
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep

    replicas = sorted({r["seed"] for r in runs})
    order = random.Random(rep).sample(replicas, len(replicas))
    table = {(key(r), r["seed"]): r for r in runs}
    points = [dict(zip(GRID_FIELDS, k)) for k in {key(r) for r in runs}]
    name = f"{searcher}-{rep}"
    sweep, base = SweepConfig.split({**load_yaml(config), **SEARCHERS[searcher], "name": name, "experiment": name,
                                     "seed": rep, "max_concurrent": CPUS, "storage_path": str(folder / "ray"),
                                     "tracking_uri": f"sqlite:///{folder}/mlflow.db",
                                     "optuna_storage": f"sqlite:///{folder}/optuna.db"})

    def lookup(sweep: Any, base: Dict[str, Any], **_: Any) -> Any:
        return tune.with_resources(tune.with_parameters(replay_trial, base=base, table=table, points=points, order=order),
                                   {"cpu": sweep.cpus_per_trial})

    # MLflow's per-epoch records decide nothing (the verdict reads Tune's results) and were half a replay's time
    with mock.patch.object(sweep_build, "trainable", lookup), mock.patch("tuner.driver.sweep.MLflowTracking", _NoRecords):
        result = run_sweep(sweep, base, log=lambda _: None, verbose=0)
    verdict = result.verdict
    chosen = verdict.config(verdict.recommended)
    epochs = sum(r["epochs"] for r in result.rows) + sum(c.n for c in verdict.configs) * base.epochs
    return {"searcher": searcher, "rep": rep, "recommended": snap(chosen.params, points), "role": chosen.role,
            "epochs": epochs, "trials": len(result.rows)}


def wilson(hits: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """The 95% Wilson interval of a rate of ``hits`` in ``n`` (sound at 0 and n, unlike the normal one)."""
    p, half = hits / n, z * math.sqrt(hits * (n - hits) / n + z * z / 4) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    return centre - half / (1 + z * z / n), centre + half / (1 + z * z / n)


def tied_with_best(runs: List[Dict[str, Any]]) -> Dict[Tuple, Any]:
    """The cells the grid cannot tell from its best: ``{cell key: paired comparison best - cell}`` over the replicas
    both ran (replica r of every cell shares split seed r), for the best and each cell with p >= 0.05."""
    from tuner.core.verdict import compare

    by: Dict[Tuple, Dict[int, float]] = {}
    for r in runs:
        if r["test"] is not None:
            by.setdefault(key(r), {})[r["seed"]] = float(r["test"])
    cells = truth(runs)
    best = key(max(cells.values(), key=lambda c: c["mean"]))
    tied = {}
    for k in by:
        d = compare(by[best], by[k])
        if k == best or d.p >= 0.05:
            tied[k] = d
    return tied


def report(out: List[Dict[str, Any]], runs: List[Dict[str, Any]], base_lr: float) -> List[Dict[str, Any]]:
    """Per searcher: hit rate within MARGIN of the grid's best and among the cells the grid cannot tell from it,
    mean regret, worse-than-reference rate, epochs."""
    from tuner.core.verdict import mean_ci

    cells = truth(runs)
    best = max(cells.values(), key=lambda c: c["mean"])
    reference = cells[key({"alpha": 1.0, "beta": 1.0, "lr": base_lr})]["mean"]
    tied = tied_with_best(runs)
    best_ci = mean_ci([t for t in best["tests"] if t is not None])
    print(f"\ngrid's best cell: alpha {best['alpha']:g} beta {best['beta']:g} lr {best['lr']:g}, {best['mean']:.2f} test "
          f"(95% CI {best_ci.low:.2f} .. {best_ci.high:.2f} over {len(best_ci.values)} replicas); the reference's "
          f"(1, 1, lr {base_lr:g}): {reference:.2f}; {sum(c['mean'] >= best['mean'] - MARGIN for c in cells.values())} "
          f"of {len(cells)} cells within {MARGIN}; {len(tied)} not told apart from it (paired over the replicas, p >= 0.05):")
    for k, d in sorted(tied.items(), key=lambda kv: -cells[kv[0]]["mean"]):
        print(f"  alpha {k[0]:g} beta {k[1]:g} lr {k[2]:g}: {cells[k]['mean']:.2f}, {d.diff:+.2f} below the best"
              + (f" (95% CI {d.low:+.2f} .. {d.high:+.2f}, p = {d.p:.2f})" if k != key(best) else ""))
    print(f"| searcher | reps | within {MARGIN} of best [95% CI] | not told apart from the best [95% CI] | mean regret "
          "[95% CI] | worse than reference | recommends the reference | epochs (mean) |\n|---|---|---|---|---|---|---|---|")
    rows = []
    for searcher in dict.fromkeys(o["searcher"] for o in out):
        mine = [o for o in out if o["searcher"] == searcher]
        got = [cells[key(o["recommended"])]["mean"] for o in mine]
        hits, n = sum(g >= best["mean"] - MARGIN for g in got), len(mine)
        regret = mean_ci([best["mean"] - g for g in got])
        ties = sum(key(o["recommended"]) in tied for o in mine)
        row = {"searcher": searcher, "reps": n, "hit": hits / n, "tied": ties / n, "regret": regret.mean,
               "worse": sum(g < reference for g in got) / n, "reference": sum(o["role"] == "reference" for o in mine) / n,
               "epochs": statistics.fmean(o["epochs"] for o in mine)}
        (low, high), (tlow, thigh) = wilson(hits, n), wilson(ties, n)
        print(f"| {searcher} | {n} | {row['hit']:.0%} [{low:.0%}, {high:.0%}] | {row['tied']:.0%} [{tlow:.0%}, {thigh:.0%}] "
              f"| {regret.mean:.2f} [{regret.low:.2f}, {regret.high:.2f}] | {row['worse']:.0%} | {row['reference']:.0%} "
              f"| {row['epochs']:.0f} |")
        rows.append(row)
    return rows


_WORKER: Dict[str, Any] = {}  # a pool process's grid runs, config and scratch folder (``_start``)


def _start(grid: str, config: str, scratch: str) -> None:
    """A pool process: its own local Ray (2 CPUs), the grid, and a folder for its stores (one per process)."""
    import os

    import ray

    _WORKER.update(runs=json.loads(Path(grid).read_text()), config=config,
                   folder=Path(tempfile.mkdtemp(dir=scratch, prefix=f"w{os.getpid()}-")))
    ray.init(address="local", include_dashboard=False, num_cpus=CPUS, log_to_driver=False)


def _replay(job: Tuple[str, int]) -> Dict[str, Any]:
    return replay(*job, _WORKER["runs"], _WORKER["folder"], _WORKER["config"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="bench/data/recipe_grid.json")
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--searchers", default=",".join(SEARCHERS))
    p.add_argument("--workers", type=int, default=3, help="replays at once, each its own local Ray (they mostly wait)")
    p.add_argument("--json", help="keep each replay's outcome here (replays it holds are not run again)")
    p.add_argument("--from", dest="src", help="report on these outcomes without replaying")
    args = p.parse_args()
    unknown = [s for s in args.searchers.split(",") if s not in SEARCHERS]
    if unknown:
        raise SystemExit(f"--searchers: unknown {', '.join(unknown)}; choose from: {', '.join(SEARCHERS)}")
    import multiprocessing as mp

    from tuner.core.sweep_config import SweepConfig

    runs = json.loads(Path(args.grid).read_text())
    base_lr = SweepConfig.from_yaml(args.config)[1].lr
    if args.src:
        report(json.loads(Path(args.src).read_text()), runs, base_lr)
        return
    out = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else []
    have = {(o["searcher"], o["rep"]) for o in out}
    jobs = [(s, rep) for rep in range(args.reps) for s in args.searchers.split(",") if (s, rep) not in have]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="srrl-bench-search-quality-") as tmp, \
            mp.get_context("spawn").Pool(args.workers, _start, (args.grid, args.config, tmp)) as pool:
        for i, got in enumerate(pool.imap_unordered(_replay, jobs), 1):
            out.append(got)
            if args.json:
                Path(args.json).write_text(json.dumps(out))
            print(f"{i}/{len(jobs)} replays, {time.perf_counter() - start:.0f} s", flush=True)
    report(out, runs, base_lr)


if __name__ == "__main__":
    main()
