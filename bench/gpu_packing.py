"""GPU packing: total training throughput of 4 trials sharing one GPU (0.25 each) against 1 trial owning it.

Each side is a Ray Tune run of ``train_srrl`` (resnet32x4, random frozen weights -> resnet8x4, the
paper's connector, batch 64) on CIFAR-shaped synthetic data, with the same CPUs per trial.
A trial's throughput is the mean ``images_per_s`` it reports over epochs 2..E (training only);
the packed figure is the sum over its 4 trials, which start together and run the same epochs.
Without a CUDA GPU the scenario is reported as skipped ("no GPU").

``python -m bench.gpu_packing [--quick]``
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bench._common import Row, ensure_ray, fit_in_tune, scratch_dir, skipped

SCENARIO = "GPU packing"
PACKED = 4


def packed_throughput(trials: int, gpu: float, cpus: int, base: Any, splits: Any, teacher_state: Any,
                      storage: Path, name: str) -> float:
    """Sum over ``trials`` concurrent Tune trials of their mean reported images/s over epochs 2..E."""
    from ray import tune

    from tuner.core import metrics as M
    from tuner.driver.trainable import train_srrl

    trainable = tune.with_resources(
        tune.with_parameters(train_srrl, base=base.replace(threads=cpus).to_dict(), teacher_state=teacher_state,
                             splits=splits),
        {"cpu": cpus, "gpu": gpu})
    total = 0.0
    for result in fit_in_tune(trainable, storage, name, 1, param_space={"seed": tune.grid_search(list(range(trials)))},
                              max_concurrent_trials=trials):
        rates = result.metrics_dataframe[M.IMAGES_PER_S].tolist()[1:]
        total += sum(rates) / len(rates)
    return total


def run(quick: bool) -> Row:
    import torch

    if not torch.cuda.is_available():
        return skipped(SCENARIO, "img/s", ">= 2.5", "no GPU")
    from tuner.core.config import TrialConfig
    from tuner.core.data import load_dataset
    from tuner.core.models import build_model

    train_size, epochs = (4096, 3) if quick else (16384, 5)
    cpus = max(1, min(4, (os.cpu_count() or 1) // PACKED))
    splits = load_dataset("synthetic", num_classes=100, image_size=32, in_channels=3, train_size=train_size,
                          val_size=512, test_size=512)
    teacher_state = build_model("resnet32x4", 100).state_dict()
    base = TrialConfig(dataset="synthetic", teacher="resnet32x4", student="resnet8x4", connector="conv1x1_bn_relu",
                       batch_size=64, epochs=epochs, device="cuda")
    ensure_ray()
    with scratch_dir("gpu") as tmp:
        alone = packed_throughput(1, 1.0, cpus, base, splits, teacher_state, Path(tmp), "alone")
        packed = packed_throughput(PACKED, 1.0 / PACKED, cpus, base, splits, teacher_state, Path(tmp), "packed")
    return Row(SCENARIO, packed, alone, "img/s", ">= 2.5",
               note=f"resnet32x4->resnet8x4 SRRL, batch 64, {train_size:,} synthetic images x {epochs} epochs, "
                    f"{cpus} CPUs per trial; {torch.cuda.get_device_name(0)}")


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "gpu_packing", *sys.argv[1:]]))
