"""Does SRRL help on a config? Teacher vs student alone (CE) vs student with SRRL, over several seeds.

``python -m bench.distill_quality [--config configs/digits.yaml] [--seeds 5] [--json out.json]``
prints mean and std of val and test accuracy per arm, side by side from one run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Dict, List

from tuner.core import metrics as M
from tuner.core.config import TrialConfig
from tuner.core.sweep_config import SweepConfig
from tuner.core.teacher import ensure_teacher
from tuner.core.trainer import Trainer, load_splits


def run(cfg: TrialConfig, seeds: int) -> List[Dict[str, object]]:
    splits = load_splits(cfg)
    teacher = ensure_teacher(cfg, splits, log=print)
    rows: List[Dict[str, object]] = [{"arm": f"teacher {cfg.teacher}", "val": [teacher.val_acc], "test": [teacher.test_acc], "s": 0.0}]
    arms = {f"student {cfg.student} alone (CE)": {"alpha": 0.0, "beta": 0.0, "gamma": 0.0},
            f"student {cfg.student} SRRL alpha={cfg.alpha:g} beta={cfg.beta:g}": {}}
    for arm, change in arms.items():
        val, test, start = [], [], time.perf_counter()
        for seed in range(seeds):
            final = Trainer(cfg.replace(seed=seed, **change), teacher.model, splits).fit().final
            val.append(final[M.VAL_ACC])
            test.append(final[M.TEST_ACC])
        rows.append({"arm": arm, "val": val, "test": test, "s": time.perf_counter() - start})
    return rows


def _fmt(xs: List[float]) -> str:
    return f"{statistics.mean(xs):6.2f} ± {statistics.stdev(xs):4.2f}" if len(xs) > 1 else f"{xs[0]:6.2f}       "


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json")
    args = p.parse_args()
    cfg = SweepConfig.from_yaml(args.config, {"threads": args.threads})[1]
    rows = run(cfg, args.seeds)
    print(f"\n{cfg.dataset}: {cfg.teacher} -> {cfg.student}, {cfg.epochs} epochs, {args.seeds} seeds (final-epoch accuracy, %)")
    print(f"| {'arm':<52} | {'val acc':>13} | {'test acc':>13} | {'wall s':>6} |")
    print(f"|{'-' * 54}|{'-' * 15}|{'-' * 15}|{'-' * 8}|")
    for r in rows:
        print(f"| {r['arm']:<52} | {_fmt(r['val'])} | {_fmt(r['test'])} | {r['s']:6.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
