"""How fast does ``analysis`` read a sweep back from MLflow? Bulk loading against the naive loop.

``python -m bench.analysis_load [--trials 200] [--epochs 20] [--repeat 3] [--db PATH]``
builds a SQLite store with one sweep of N trials x E epochs x every per-epoch metric of
``tuner.core.metrics.PER_EPOCH`` (tagged and parented exactly as ``tuner.tracking`` does, written with
``log_batch``), then times ``load_trials + load_history`` (one SQL query for the history) against
``load_trials + client_history(threads=0)`` (one ``get_metric_history`` call per run and metric), each part
best of ``--repeat``, after checking both histories are the same frame.

``run(quick)`` is the same measurement as a scenario of the suite (``python -m bench --only analysis_load``).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Tuple

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tuner.core import metrics as M  # noqa: E402
from tuner import tracking as T  # noqa: E402
from tuner.core.config import TrialConfig  # noqa: E402

if TYPE_CHECKING:
    from bench._common import Row

SCENARIO = "analysis load"
EXPERIMENT = "bench-analysis-load"


def build_store(db: Path, trials: int, epochs: int) -> str:
    """A store with one sweep of ``trials`` finished trials; returns its tracking URI."""
    from mlflow.tracking import MlflowClient

    from tuner.tracking.backfill import backfill_run

    uri = f"sqlite:///{db.resolve().as_posix()}"
    client = MlflowClient(uri)
    client.create_experiment(EXPERIMENT, artifact_location=(db.parent / "artifacts").resolve().as_uri())
    base = TrialConfig(epochs=epochs)
    parent = T.start_sweep(uri, EXPERIMENT, "bench", params={f"base.{k}": v for k, v in base.to_dict().items()},
                           tags={"srrl.teacher_val_acc": "97.0"}, resume=False)
    exp_id = T.experiment_id(uri, EXPERIMENT)
    t0 = int(time.time() * 1000)
    for i in range(trials):
        tid = f"bench_{i:05d}"
        alpha, beta = 10 ** ((i % 17) / 4 - 2), 10 ** ((i % 13) / 3 - 2)
        rid = client.create_run(exp_id, run_name=tid, tags=T.trial_tags(parent, tid)).info.run_id
        params = {**{k: str(v) for k, v in base.to_dict().items()}, "alpha": str(alpha), "beta": str(beta)}
        metrics = []
        for e in range(1, epochs + 1):
            ms = t0 + (i * epochs + e) * 1000
            acc = 90.0 * e / epochs - (i % 7)
            for key in M.PER_EPOCH:
                value = float(e) if key == M.EPOCH else acc if key in (M.VAL_ACC, M.BEST_VAL_ACC) else 1.0 / e
                metrics.append((key, value, ms, e))
        metrics.append((M.TEST_ACC, acc - 1, ms, epochs))
        backfill_run(uri, rid, params=params, metrics=metrics, end=("FINISHED", None),
                     tags={T.TAG_STATUS: "finished", T.TAG_LAST_EPOCH: str(epochs)})
    T.finish_sweep(uri, parent)
    return uri


def _best_of(repeat: int, fn: Callable[[], object]) -> Tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def measure(uri: str, repeat: int) -> Dict[str, float]:
    """Seconds (best of ``repeat``) of ``load_trials``, ``load_history`` and ``client_history(threads=0)`` on one store,
    after checking that both histories are the same frame; also the row counts."""
    import pandas as pd

    from analysis.runs import client_history, load_history, load_trials

    trials_s, trials = _best_of(repeat, lambda: load_trials(EXPERIMENT, uri))
    bulk_s, history = _best_of(repeat, lambda: load_history(EXPERIMENT, uri))
    loop_s, naive = _best_of(repeat, lambda: client_history(EXPERIMENT, uri, threads=0))
    pd.testing.assert_frame_equal(history, naive)
    return {"trials_s": trials_s, "bulk_s": bulk_s, "loop_s": loop_s, "trials": len(trials), "rows": len(history)}


def run(quick: bool) -> "Row":
    """The suite's scenario (``python -m bench``): load_trials + load_history against the naive loop."""
    from bench._common import Row, scratch_dir

    trials, epochs, repeat = (100, 10, 3) if quick else (1000, 30, 2)
    with scratch_dir("analysis") as tmp:
        uri = build_store(Path(tmp) / "mlflow.db", trials, epochs)
        t = measure(uri, repeat)
    ours = t["trials_s"] + t["bulk_s"]
    return Row(SCENARIO, ours, t["loop_s"], "s", "<= 0.10",
               note=f"{trials} trials x {epochs} epochs x {len(M.PER_EPOCH)} metrics ({t['rows']:,} rows), SQLite, best of "
                    f"{repeat}; ours = load_trials {t['trials_s']:.2f} s + load_history {t['bulk_s']:.2f} s; baseline = "
                    f"client_history(threads=0) (search_runs + one get_metric_history per run and metric); load_history alone is "
                    f"{t['bulk_s'] / t['loop_s']:.3f} of it")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--db", default=None, help="reuse (or create) this SQLite file instead of a temporary one")
    args = p.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-analysis-"))
    db = Path(args.db) if args.db else folder / "mlflow.db"
    if db.exists():
        uri = f"sqlite:///{db.resolve().as_posix()}"
    else:
        start = time.perf_counter()
        uri = build_store(db, args.trials, args.epochs)
        print(f"built {db} ({args.trials} trials x {args.epochs} epochs x {len(M.PER_EPOCH)} metrics) "
              f"in {time.perf_counter() - start:.1f} s")

    t = measure(uri, args.repeat)
    trials_s, bulk_s, loop_s, rows = t["trials_s"], t["bulk_s"], t["loop_s"], t["rows"]
    print(f"\n{t['trials']} trials, {rows:,} history rows (best of {args.repeat})")
    print(f"| {'what':<24} | {'rows':>7} | {'ours s':>7} | {'naive s':>7} | {'naive / ours':>12} |")
    print(f"|{'-' * 26}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 14}|")
    for what, ours, slow in (("load_trials + history", trials_s + bulk_s, trials_s + loop_s),
                             ("history only", bulk_s, loop_s)):
        print(f"| {what:<24} | {rows:>7,} | {ours:>7.2f} | {slow:>7.2f} | {slow / ours:>11.1f}x |")


if __name__ == "__main__":
    main()
