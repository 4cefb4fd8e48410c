"""Distillation cost: one SRRL training step against its parts run alone.

resnet32x4 (frozen, random weights) -> resnet8x4 with the paper's connector on CIFAR-shaped
synthetic data (100 classes). Ours: ``Trainer.train_epoch`` of the SRRL trainer (alpha = beta = 1),
per step. Baseline: the same student trained with CE alone (``Trainer.train_epoch`` with
alpha = beta = 0, so the teacher never runs) plus the teacher's no-grad forward over the same
batches, per step. One torch thread, as a CPU sweep runs each trial. The three measurements
alternate; each keeps its best repeat (the first is a warm-up). With a CUDA GPU a second row
measures the same on it (channels_last, as ``Trainer`` runs there); both sides replay the teacher's
forward from CUDA graphs (``tuner.core.graphs``), and the plain eager forward's time is shown beside.

``python -m bench.distill_cost [--quick]``
"""
from __future__ import annotations

import time
from typing import Any

from bench._common import Row, torch_threads

SCENARIO = "distillation cost"


def _teacher_forward(trainer: Any, batches: list, graphed: bool) -> float:
    """Seconds of the teacher's no-grad forward over ``batches``: as ``Distiller.forward`` runs it
    (``graphed``: from CUDA graphs on a GPU), or as a plain eager call."""
    import torch

    distiller = trainer.distiller
    start = time.perf_counter()
    with torch.no_grad(), trainer._autocast():
        for x in batches:
            x = x.contiguous(memory_format=trainer.memory_format)
            _, out = distiller._teacher_forward(x) if graphed else distiller._teacher_forward.eager(x)
    float(out.float().sum())  # wait for the device, as train_epoch does once per epoch
    return time.perf_counter() - start


def _measure(device: str, batch: int, steps: int, repeat: int) -> Row:
    """One row: SRRL step against student-alone step + teacher forward, on ``device``."""
    import torch

    from tuner.core.config import TrialConfig
    from tuner.core.data import load_dataset
    from tuner.core.models import build_model
    from tuner.core.trainer import Trainer

    threads = 1  # as a CPU sweep runs each trial (threads = cpus_per_trial); also the least disturbed by neighbours
    splits = load_dataset("synthetic", num_classes=100, image_size=32, in_channels=3, train_size=batch * steps,
                          val_size=batch, test_size=batch)
    cfg = TrialConfig(dataset="synthetic", teacher="resnet32x4", student="resnet8x4", connector="conv1x1_bn_relu",
                      alpha=1.0, beta=1.0, batch_size=batch, epochs=1, device=device, threads=threads)
    with torch_threads(threads):
        teacher = build_model("resnet32x4", 100).eval().requires_grad_(False)
        srrl = Trainer(cfg, teacher, splits)
        alone = Trainer(cfg.replace(alpha=0.0, beta=0.0), None, splits)
        batches = [x for x, _ in alone.train_loader]
        times = {"srrl": [], "student": [], "teacher": [], "eager teacher": []}
        for _ in range(repeat):
            times["srrl"].append(srrl.train_epoch()["epoch_time_s"])
            times["student"].append(alone.train_epoch()["epoch_time_s"])
            times["teacher"].append(_teacher_forward(srrl, batches, graphed=True))
            if device != "cpu":  # on the CPU both are the same eager call
                times["eager teacher"].append(_teacher_forward(srrl, batches, graphed=False))
    ours = min(times["srrl"]) / steps
    student, teacher_s = min(times["student"]) / steps, min(times["teacher"]) / steps
    where = "1 torch thread, CPU"
    if device != "cpu":
        where = (f"{torch.cuda.get_device_name(0)}, {'bf16 autocast' if cfg.bf16 else 'fp32'} + channels_last; "
                 f"teacher from CUDA graphs (eager: {min(times['eager teacher']) / steps:.4f} s)")
    return Row(SCENARIO if device == "cpu" else f"{SCENARIO} (GPU)", ours, student + teacher_s, "s/step", "<= 1.10",
               note=f"resnet32x4->resnet8x4, batch {batch}, {steps} steps x best of {repeat}, {where}; baseline = "
                    f"student fwd+bwd+SGD alone {student:.4f} s + teacher no-grad fwd {teacher_s:.4f} s")


def run(quick: bool) -> Row:
    import torch

    row = _measure("cpu", *((16, 3, 3) if quick else (64, 6, 3)))
    if torch.cuda.is_available():  # the same ratio where sweeps spend their GPU time, beside the CPU row
        row.beside.append(_measure("cuda", 64, 50 if quick else 200, 3 if quick else 5))
    return row


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "distill_cost", *sys.argv[1:]]))
