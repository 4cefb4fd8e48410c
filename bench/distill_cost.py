"""Distillation cost: one SRRL training step against its parts run alone.

resnet32x4 (frozen, random weights) -> resnet8x4 with the paper's connector on CIFAR-shaped
synthetic data (100 classes). Ours: ``Trainer.train_epoch`` of the SRRL trainer (alpha = beta = 1),
per step. Baseline: the same student trained with CE alone (``Trainer.train_epoch`` with
alpha = beta = 0, so the teacher never runs) plus the teacher's no-grad forward over the same
batches, per step. One torch thread, as a CPU sweep runs each trial. The three measurements
alternate; each keeps its best repeat (the first is a warm-up).

``python -m bench.distill_cost [--quick]``
"""
from __future__ import annotations

import time
from typing import Any

from bench._common import Row, torch_threads

SCENARIO = "distillation cost"


def _teacher_forward(teacher: Any, batches: list) -> float:
    import torch

    start = time.perf_counter()
    with torch.no_grad():  # what Distiller.forward runs for the teacher
        for x in batches:
            teacher.head(teacher.forward_features(x))
    return time.perf_counter() - start


def run(quick: bool) -> Row:
    from tuner.config import TrialConfig
    from tuner.data import load_dataset
    from tuner.models import build_model
    from tuner.train import Trainer

    batch, steps, repeat = (16, 3, 3) if quick else (64, 6, 3)
    threads = 1  # as a CPU sweep runs each trial (threads = cpus_per_trial); also the least disturbed by neighbours
    splits = load_dataset("synthetic", num_classes=100, image_size=32, in_channels=3, train_size=batch * steps,
                          val_size=batch, test_size=batch)
    cfg = TrialConfig(dataset="synthetic", teacher="resnet32x4", student="resnet8x4", connector="conv1x1_bn_relu",
                      alpha=1.0, beta=1.0, batch_size=batch, epochs=1, device="cpu", threads=threads)
    with torch_threads(threads):
        teacher = build_model("resnet32x4", 100).eval().requires_grad_(False)
        srrl = Trainer(cfg, teacher, splits)
        alone = Trainer(cfg.replace(alpha=0.0, beta=0.0), None, splits)
        batches = [x for x, _ in alone.train_loader]
        times = {"srrl": [], "student": [], "teacher": []}
        for _ in range(repeat):
            times["srrl"].append(srrl.train_epoch()["epoch_time_s"])
            times["student"].append(alone.train_epoch()["epoch_time_s"])
            times["teacher"].append(_teacher_forward(teacher, batches))
    ours = min(times["srrl"]) / steps
    student, teacher_s = min(times["student"]) / steps, min(times["teacher"]) / steps
    return Row(SCENARIO, ours, student + teacher_s, "s/step", "<= 1.10",
               note=f"resnet32x4->resnet8x4, batch {batch}, {steps} steps x best of {repeat}, 1 torch thread, CPU; "
                    f"baseline = student fwd+bwd+SGD alone {student:.3f} s + teacher no-grad fwd {teacher_s:.3f} s")


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "distill_cost", *sys.argv[1:]]))
