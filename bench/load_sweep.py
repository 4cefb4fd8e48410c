"""Load: a sweep of many short trials on digits (default 200 x 2 epochs) in this process.

``python -m bench.load_sweep [--trials 200] [--epochs 2]`` prints the wall time and where it went,
the driver's peak RSS, and the number of MLflow child runs it left (must equal --trials).
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    import ray

    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep
    from tuner.core.teacher import ensure_teacher
    from tuner.core.trainer import load_splits

    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("SRRL_CACHE_DIR", str(Path(tmp) / "cache"))
        uri = f"sqlite:///{tmp}/mlflow.db"
        sweep, base = SweepConfig.split({"name": "load", "confirm": 0, "num_samples": args.trials, "epochs": args.epochs,
                                         "scheduler": "fifo", "storage_path": f"{tmp}/ray", "tracking_uri": uri,
                                         "optuna_storage": f"sqlite:///{tmp}/optuna.db"})
        t0 = time.perf_counter()
        ensure_teacher(base, load_splits(base))  # cached before the timed sweep
        teacher_s = time.perf_counter() - t0
        ray.init(address="local", include_dashboard=False)
        t1 = time.perf_counter()
        result = run_sweep(sweep, base, verbose=0)
        sweep_s = time.perf_counter() - t1
        concurrency = int(ray.cluster_resources().get("CPU", 1))
        ray.shutdown()
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name("load")
        children = [r for r in client.search_runs([exp.experiment_id], max_results=5000)
                    if r.data.tags.get("srrl.role") == "trial"]
        trial_s = sum(r.info.end_time - r.info.start_time for r in children) / 1000
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| trials | epochs | sweep wall s | trial time s (sum) | / concurrency {concurrency} | overhead per trial s "
          f"| driver peak RSS MB | child runs |")
    print(f"| {args.trials} | {args.epochs} | {sweep_s:.1f} | {trial_s:.1f} | {trial_s / concurrency:.1f} | "
          f"{(sweep_s - trial_s / concurrency) / args.trials:.3f} | {rss_mb:.0f} | {len(children)} |")
    print(f"teacher (trained or loaded before the sweep): {teacher_s:.1f} s; statuses: "
          + ", ".join(f"{s}={sum(r['status'] == s for r in result.rows)}" for s in ("finished", "stopped_early", "diverged", "errored")))


if __name__ == "__main__":
    main()
