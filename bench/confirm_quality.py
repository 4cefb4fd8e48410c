"""Does the tool's answer hold up? The embedded default sweep, its confirmed recommendation, and a check on seeds it never saw.

``python -m bench.confirm_quality [--config configs/digits.yaml] [--holdout-seeds 5] [--json out.json]``

Runs the default sweep (search + confirmation stage) in a scratch folder, prints the confirmation's
5-seed table and verdict, then re-trains the recommendation, the authors' (1, 1), the search's
single-seed winner (what a leaderboard's first row would have said) and CE-only on fresh seeds
(100 + i, never used by the sweep) and prints their means with 95% intervals side by side. The
property wanted: the recommendation's hold-out test mean is at least the reference's, or the tool
said that nothing beats the reference.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

from tuner.core import metrics as M
from tuner.core.config import apply_params
from tuner.core.sweep_config import SweepConfig
from tuner.core.verdict import format_verdict, mean_ci, welch

HOLDOUT_SEED0 = 100


def _train(cfg: Any, teacher: Any, splits: Any) -> Dict[str, float]:
    from tuner.core.trainer import Trainer

    final = Trainer(cfg, teacher.model if cfg.needs_teacher else None, splits).fit().final
    return {M.VAL_ACC: final[M.VAL_ACC], M.TEST_ACC: final[M.TEST_ACC]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--holdout-seeds", type=int, default=5)
    p.add_argument("--json")
    args = p.parse_args()

    from tuner.core.config import load_yaml
    from tuner.driver.sweep import run_sweep
    from tuner.core.teacher import ensure_teacher
    from tuner.core.trainer import load_splits

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        sweep, base = SweepConfig.split({**load_yaml(args.config), "name": "confirm-quality",
                                         "storage_path": str(Path(tmp) / "ray"),
                                         "tracking_uri": f"sqlite:///{tmp}/mlflow.db",
                                         "optuna_storage": f"sqlite:///{tmp}/optuna.db"})
        result = run_sweep(sweep, base, log=lambda _: None, verbose=0)
    sweep_s = time.perf_counter() - start
    verdict = result.verdict
    print(f"\ndefault sweep: {len(result.rows)} search trials, confirmation included, {sweep_s:.0f} s\n")
    print(format_verdict(verdict))

    winner = next(r for r in result.rows if r["status"] == "finished")
    arms = {"recommended: " + verdict.config(verdict.recommended).label: verdict.config(verdict.recommended).params,
            "reference: " + verdict.config(verdict.reference).label: verdict.config(verdict.reference).params,
            f"search's single-seed winner: alpha {winner['alpha']:.3g} beta {winner['beta']:.3g}": winner["params"],
            "CE only": verdict.config(verdict.ce).params}
    splits = load_splits(base)
    teacher = ensure_teacher(base, splits, log=lambda _: None)
    seeds = [HOLDOUT_SEED0 + i for i in range(args.holdout_seeds)]
    out: Dict[str, Dict[str, List[float]]] = {}
    for arm, params in arms.items():
        if any(params == done for done in [arms[a] for a in out]):
            out[arm] = next(out[a] for a in out if arms[a] == params)
            continue
        runs = [_train(apply_params(base, {**params, "seed": s}), teacher, splits) for s in seeds]
        out[arm] = {m: [r[m] for r in runs] for m in (M.VAL_ACC, M.TEST_ACC)}

    ref = next(a for a in arms if a.startswith("reference"))
    print(f"\nHold-out check on seeds {seeds[0]}..{seeds[-1]} (never used by the sweep), final epoch, mean [95% CI]:")
    print("| arm | val_acc | test_acc | test vs reference (Welch p) |\n|---|---|---|---|")
    for arm, values in out.items():
        v, t = mean_ci(values[M.VAL_ACC]), mean_ci(values[M.TEST_ACC])
        d = welch(values[M.TEST_ACC], out[ref][M.TEST_ACC])
        vs = "-" if arm == ref else f"{d.diff:+.2f} [{d.low:+.2f}, {d.high:+.2f}] p={d.p:.2g}"
        print(f"| {arm} | {v.mean:.2f} [{v.low:.2f}, {v.high:.2f}] | {t.mean:.2f} [{t.low:.2f}, {t.high:.2f}] | {vs} |")
    rec = next(a for a in arms if a.startswith("recommended"))
    holds = verdict.recommended == verdict.reference or mean_ci(out[rec][M.TEST_ACC]).mean >= mean_ci(out[ref][M.TEST_ACC]).mean
    print(f"\nproperty (recommendation's hold-out test mean >= the reference's, or the tool recommends the reference): "
          f"{'holds' if holds else 'FAILS'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"verdict": verdict.to_dict(), "holdout": out, "holds": holds,
                                               "sweep_s": sweep_s}, indent=2))


if __name__ == "__main__":
    main()
