"""Data pipeline: our in-memory ``TensorLoader`` (crop_flip on tensors) against torchvision's PIL pipeline.

Both read the same CIFAR-shaped uint8 images (N x 3 x 32 x 32, 100 classes) and yield shuffled,
augmented, normalised float32 batches of 64. Baseline: a torchvision-style Dataset over the same
array held HWC (as ``torchvision.datasets.CIFAR100`` holds it) with RandomCrop(32, padding=4),
RandomHorizontalFlip, ToTensor, Normalize, through a ``DataLoader`` with ``num_workers=0``
(the ratio) and with 2 workers (shown beside it). One torch thread on both sides; images/s of a
full epoch, best of the repeats.

``python -m bench.data_pipeline [--quick]``
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from bench._common import Row, torch_threads

SCENARIO = "data pipeline"
BATCH = 64


class UInt8ImageDataset:
    """A torchvision-style Dataset: HWC uint8 array -> PIL image -> transform; ``(image, label)``."""

    def __init__(self, images_hwc: Any, labels: Any, transform: Any) -> None:
        self.data, self.targets, self.transform = images_hwc, labels, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> Any:
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), int(self.targets[i])


def _images_per_s(batches: Iterable) -> float:
    seen, start = 0, time.perf_counter()
    for x, y in batches:
        seen += len(y)
    return seen / (time.perf_counter() - start)


def run(quick: bool) -> Row:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import transforms

    from tuner.core.data import CIFAR100_MEAN, CIFAR100_STD, CROP_PADDING, TensorLoader

    n, repeat = (8192, 2) if quick else (50_000, 3)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 100, (n,), generator=g)
    ours_loader = TensorLoader(x, y, BATCH, shuffle=True, augment="crop_flip", mean=CIFAR100_MEAN, std=CIFAR100_STD,
                               scale=255.0, seed=0)
    transform = transforms.Compose([transforms.RandomCrop(32, padding=CROP_PADDING), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(), transforms.Normalize(CIFAR100_MEAN, CIFAR100_STD)])
    dataset = UInt8ImageDataset(x.permute(0, 2, 3, 1).contiguous().numpy(), y.numpy(), transform)
    ours, pil0, pil2 = [], [], []
    with torch_threads(1):
        xb, _ = next(iter(DataLoader(dataset, batch_size=BATCH, shuffle=True)))
        xo, _ = next(iter(ours_loader))
        assert xb.shape == xo.shape and xb.dtype == xo.dtype, (xb.shape, xo.shape)
        for i in range(repeat):
            ours.append(_images_per_s(ours_loader))
            pil0.append(_images_per_s(DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0)))
            if i < max(1, repeat - 1):
                pil2.append(_images_per_s(DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2)))
    best = max(ours)
    row = Row(SCENARIO, best, max(pil0), "img/s", ">= 3",
              note=f"{n:,} CIFAR-shaped uint8 images, batch {BATCH}, 1 torch thread, full epoch, best of {repeat}; "
                   "baseline = torchvision Dataset + PIL transforms, DataLoader num_workers=0")
    row.beside.append(Row(f"{SCENARIO}, 2 workers", best, max(pil2), "img/s", None,
                          note="the same baseline with DataLoader num_workers=2 (epoch includes worker start)"))
    return row


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "data_pipeline", *sys.argv[1:]]))
