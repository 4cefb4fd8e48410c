"""Trainable overhead: SRRL training inside a Ray Tune trial against the bare ``Trainer.fit`` loop.

Both sides train the digits preset (digits_cnn4x64 -> digits_cnn2x4, one torch thread, the same
data and teacher). A side's figure is training images per second of wall time per epoch in the
steady state: the fastest of epochs 2..E over all repeats of, for the trial, Tune's ``time_this_iter_s``
of each report (epoch + val eval + checkpoint write + ``tune.report``, costs every epoch pays); for
the bare loop, the time between ``on_epoch`` callbacks (epoch + val eval). Trial and bare loop
alternate. Best-of keeps a noisy neighbour's bursts out of the ratio, as ``timeit`` does.

``python -m bench.trainable_overhead [--quick]``
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, List

from bench._common import Row, digits_base, digits_teacher, ensure_ray, fit_in_tune, scratch_dir, torch_threads

SCENARIO = "trainable overhead"


def _in_trial(base: Any, splits: Any, teacher: Any, storage: Path, name: str) -> List[float]:
    """Seconds of each epoch 2..E of one Tune trial (``time_this_iter_s``), resources as a sweep gives them."""
    from ray import tune

    from tuner.config import SweepConfig
    from tuner.trainable import train_srrl

    trainable = tune.with_resources(
        tune.with_parameters(train_srrl, base=base.to_dict(), teacher_state=teacher.model.state_dict(),
                             teacher_info=teacher.info(), splits=splits),
        {"cpu": 1, "gpu": 0})
    result = fit_in_tune(trainable, storage, name, SweepConfig().num_to_keep, num_samples=1)[0]
    iters = result.metrics_dataframe["time_this_iter_s"].tolist()
    if len(iters) != base.epochs:
        raise RuntimeError(f"expected {base.epochs} reports, got {len(iters)}")
    return iters[1:]


def _bare(base: Any, splits: Any, teacher: Any) -> List[float]:
    """Seconds of each epoch 2..E of ``Trainer.fit`` (time between the epoch callbacks)."""
    from tuner.train import Trainer

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
    trial_s: List[float] = []
    bare_s: List[float] = []
    with scratch_dir("overhead") as tmp:
        for i in range(repeat):
            trial_s += _in_trial(base, splits, teacher, Path(tmp), f"overhead{i}")
            bare_s += _bare(base, splits, teacher)
    return Row(SCENARIO, images / min(trial_s), images / min(bare_s), "img/s", ">= 0.95",
               note=f"digits_cnn4x64->digits_cnn2x4, 1 thread, {epochs} epochs, {repeat} repeats; fastest "
                    "epoch of 2..E: train + val eval (+ checkpoint + tune.report in the trial); "
                    "excludes worker start and Trainer construction")


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "trainable_overhead", *sys.argv[1:]]))
