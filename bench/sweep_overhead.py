"""Sweep overhead: wall time of a whole ``run_sweep`` against its trials' own compute time / parallelism.

A digits ``loss_weights`` sweep (TPE, FIFO so every trial runs all its epochs, 2 trials at once,
1 CPU and 1 torch thread each). Ours: the wall time of ``run_sweep``, i.e. data loading, the
cached teacher's load, the Optuna study, the MLflow parent run and per-epoch logging, Tune's
scheduling, per-epoch checkpoints and the best-3 export. Excluded: Ray's start (Ray is up before)
and the teacher's one-time training (``ensure_teacher`` runs first). Baseline: the sum over trials
of Tune's ``time_total_s`` (the trainable's own running time) divided by the 2 concurrent slots.

``python -m bench.sweep_overhead [--quick]``
"""
from __future__ import annotations

import time
from pathlib import Path

from bench._common import Row, digits_base, digits_teacher, ensure_ray, quiet, scratch_dir
from tuner.tracking import default_tracking_uri

SCENARIO = "sweep overhead"
CONCURRENT = 2


def run(quick: bool) -> Row:
    from ray.tune import ExperimentAnalysis

    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep

    trials, epochs = (8, 3) if quick else (16, 30)
    base = digits_base(quick, epochs=epochs)
    digits_teacher(base)  # train it now if it is not cached: not part of the measurement
    ensure_ray()
    with scratch_dir("sweep") as tmp:
        sweep = SweepConfig(name="bench-sweep", confirm=0, space="loss_weights", searcher="tpe", scheduler="fifo",
                            num_samples=trials, max_concurrent=CONCURRENT, cpus_per_trial=1,
                            storage_path=str(Path(tmp) / "ray"), tracking_uri=default_tracking_uri(tmp), seed=0)
        start = time.perf_counter()
        result = run_sweep(sweep, base, log=quiet, verbose=0)
        wall = time.perf_counter() - start
        done = ExperimentAnalysis(result.path).trials
        compute = sum(float(t.last_result.get("time_total_s", 0.0)) for t in done)
        finished = sum(1 for r in result.rows if r["status"] == "finished")
    if len(done) != trials or finished != trials:
        raise RuntimeError(f"expected {trials} finished trials, got {finished} of {len(done)}")
    return Row(SCENARIO, wall, compute / CONCURRENT, "s", "<= 1.25",
               note=f"{trials} trials x {epochs} epochs, digits loss_weights, TPE + FIFO, {CONCURRENT} concurrent; "
                    "ours = run_sweep wall (MLflow, Optuna, Tune, checkpoints, best-3 export; excl. Ray start and "
                    "teacher training); baseline = sum of trials' time_total_s / 2")


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "sweep_overhead", *sys.argv[1:]]))
