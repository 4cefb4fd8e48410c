"""Trainable overhead: what a Ray Tune trial adds to SRRL training, per epoch.

The trial trains the digits preset (digits_cnn4x64 -> digits_cnn2x4, one torch thread). Each epoch
reports ``step_time_s``, the wall time of the epoch's work as the bare ``Trainer.fit`` loop does it
(training pass + val eval), and Tune records ``time_this_iter_s``, the wall time between two reports
(that work + the checkpoint write and upload + ``tune.report``'s round trip to the driver). The ratio
is paired: the sum of ``step_time_s`` over the sum of ``time_this_iter_s``, over epochs 2..E of every
repeat, so both sides of each epoch ran at the same moment. An unpaired ratio (the trial's fastest
iteration against a bare loop's fastest epoch, timed in turn) is printed beside it: on this VM the
same bare loop's fastest epoch moves by 10-20 % between repeats a minute apart (the "drift" in the
note), so that figure measures the machine as much as the trainable.

The trial runs as a sweep runs it: the sweep's Tune settings (``tuner.driver.sweep_build.tune_env``), storage
filesystem, logger callbacks and checkpoint retention.

``python -m bench.trainable_overhead [--quick]``
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List, Tuple

from bench._common import Row, digits_base, digits_teacher, ensure_ray, fit_in_tune, scratch_dir, torch_threads

SCENARIO = "trainable overhead"


def _in_trial(base: Any, splits: Any, teacher: Any, storage: Path, name: str) -> Tuple[List[float], List[float]]:
    """``(time_this_iter_s, step_time_s)`` of each epoch 2..E of one Tune trial, resources as a sweep gives them."""
    from ray import tune

    from tuner.core import metrics as M
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.trainable import train_srrl

    trainable = tune.with_resources(
        tune.with_parameters(train_srrl, base=base.to_dict(), teacher_state=teacher.model.state_dict(),
                             teacher_info=teacher.info(), splits=splits),
        {"cpu": 1, "gpu": 0})
    frame = fit_in_tune(trainable, storage, name, SweepConfig().num_to_keep, num_samples=1)[0].metrics_dataframe
    if len(frame) != base.epochs:
        raise RuntimeError(f"expected {base.epochs} reports, got {len(frame)}")
    return frame["time_this_iter_s"].tolist()[1:], frame[M.STEP_TIME_S].tolist()[1:]


def _bare(base: Any, splits: Any, teacher: Any) -> List[float]:
    """Seconds of each epoch 2..E of ``Trainer.fit`` (time between the epoch callbacks)."""
    from tuner.core.trainer import Trainer

    stamps: List[float] = []
    with torch_threads(base.threads):
        Trainer(base, teacher.model, splits).fit(lambda row, _: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def run(quick: bool) -> Row:
    epochs, repeat = (5, 2) if quick else (20, 3)
    base = digits_base(quick, epochs=epochs)
    splits, teacher = digits_teacher(base)
    ensure_ray()
    images = len(splits.train_x)
    iter_s: List[float] = []
    step_s: List[float] = []
    bare_best: List[float] = []
    with scratch_dir("overhead") as tmp:
        for i in range(repeat):
            iters, steps = _in_trial(base, splits, teacher, Path(tmp), f"overhead{i}")
            iter_s += iters
            step_s += steps
            bare_best.append(min(_bare(base, splits, teacher)))
    n = len(iter_s)
    row = Row(SCENARIO, images * n / sum(iter_s), images * n / sum(step_s), "img/s", ">= 0.95",
              note=f"digits_cnn4x64->digits_cnn2x4, 1 thread, {epochs} epochs, {repeat} repeats; paired over "
                   f"epochs 2..E: the trial's own epoch work (step_time_s: train + val eval) against its whole "
                   f"iteration (+ checkpoint + tune.report); excludes worker start and Trainer construction")
    row.beside.append(Row(f"{SCENARIO}, unpaired", images / min(iter_s), images / min(bare_best), "img/s", None,
                          note=f"the trial's fastest iteration against the bare Trainer.fit loop's fastest epoch, "
                               f"timed in turn; drift: the bare loop's fastest epoch moved by "
                               f"{max(bare_best) / min(bare_best) - 1:.0%} between its {repeat} repeats"))
    return row


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "trainable_overhead", *sys.argv[1:]]))
