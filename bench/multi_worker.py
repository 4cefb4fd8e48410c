"""Multi-worker trials: what a 2-worker trial (Ray Train inside the Tune trial, DDP over gloo) costs beside a
1-worker trial of the same recipe and global batch, per step, per report and at its start.

Both trials are built as a sweep builds them (``tuner.driver.sweep_build.trainable``): the 1-worker trial holds
1 CPU, the 2-worker trial 0.1 CPU for itself and 0.95 CPU for each worker; one torch thread per process.
``step_time_s`` is an epoch's own work (training pass + val eval, all-reduces included);
``time_this_iter_s`` is Tune's time between two reports, so their difference is what reporting costs
(the checkpoint write, and for 2 workers the hop through Ray Train's controller and a queue to the
trial). Epochs 2..E are averaged; the first iteration is the start (worker processes, process group,
data and model), shown apart. A 2-CPU machine cannot show a speed-up from 2 workers on digits' tiny
batches: the figures are the overhead, honestly, not a scaling claim.

``python -m bench.multi_worker [--quick]``
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from bench._common import Row, digits_base, digits_teacher, ensure_ray, fit_in_tune, scratch_dir

SCENARIO = "multi-worker trial"


def _trial(sweep: Any, base: Any, splits: Any, teacher: Any, storage: Path, name: str) -> Dict[str, float]:
    """One trial of ``base`` under Tune as ``sweep`` runs it: its per-step, per-report and start seconds."""
    from tuner.core import metrics as M
    from tuner.driver import sweep_build
    from tuner.core.sweep_config import trial_base

    trainable = sweep_build.trainable(sweep, base=trial_base(sweep, base).to_dict(), teacher_state=teacher.model.state_dict(),
                                      teacher_info=teacher.info(), splits=splits)
    frame = fit_in_tune(trainable, storage, name, sweep.num_to_keep, num_samples=1,
                        reuse_actors=sweep_build.reuse_actors(sweep))[0].metrics_dataframe
    if len(frame) != base.epochs:
        raise RuntimeError(f"{name}: expected {base.epochs} reports, got {len(frame)}")
    later = frame.iloc[1:]
    step = float(later[M.STEP_TIME_S].mean())
    return {"step": step, "report": float((later["time_this_iter_s"] - later[M.STEP_TIME_S]).mean()),
            "start": float(frame["time_this_iter_s"].iloc[0] - frame[M.STEP_TIME_S].iloc[0])}


def run(quick: bool) -> Row:
    from tuner.core.sweep_config import SweepConfig

    epochs = 4 if quick else 10
    base = digits_base(quick, epochs=epochs)
    splits, teacher = digits_teacher(base)
    ensure_ray()
    images = len(splits.train_x)
    with scratch_dir("workers") as tmp:
        one = _trial(SweepConfig(cpus_per_trial=1), base, splits, teacher, Path(tmp), "one")
        two = _trial(SweepConfig(workers_per_trial=2, cpus_per_worker=0.95), base, splits, teacher, Path(tmp), "two")
    recipe = (f"digits_cnn4x64->digits_cnn2x4, global batch {base.batch_size}, {epochs} epochs; ours: 2 workers "
              f"(gloo), baseline: 1 worker")
    # the target: DDP's all-reduces and per-rank overhead cost at most a quarter of a worker's throughput
    # (2 workers on 2 CPUs would reach 2.0 if they were free)
    row = Row(SCENARIO, images / two["step"], images / one["step"], "img/s", ">= 0.75",
              note=f"{recipe}; per step (train + val eval, epochs 2..E); 2 workers hold twice the CPUs")
    row.beside.append(Row(f"{SCENARIO}, per report", two["report"], one["report"], "s", None,
                          note="Tune's time between reports minus the epoch's work: checkpoint + the path to Tune "
                               "(below 0 when the workers run ahead of the trial's reports)"))
    row.beside.append(Row(f"{SCENARIO}, start", two["start"], one["start"], "s", None,
                          note="first report's time beyond its epoch: worker group, process group, data, model"))
    return row


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "multi_worker", *sys.argv[1:]]))
