"""The one normalisation of every image batch: training, evaluation and an exported student's ``predict``."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["Normalize"]


class Normalize(torch.nn.Module):
    """Raw images (uint8 or float, in the data set's range) -> the model's input: ``(x / scale - mean) / std``
    per channel, as ``x * mul - add`` in float32. The one normalisation of training, evaluation and an
    exported student's ``predict``, so all three see the same numbers bit for bit."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float) -> None:
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mul", 1.0 / (scale * std_t))
        self.register_buffer("add", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t)

    def forward(self, x: Tensor) -> Tensor:
        # in place on a fresh copy: the same two float ops, bit for bit, without two more batch-sized buffers
        # (a 64 x 3 x 224 x 224 batch on one CPU thread: 47 -> 17 ms)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            # the streamed loader's channels-last batches: broadcast along whole rows of (W, C) pixels, as fast as a
            # planar batch (by channel, along runs of 3: 1.4-1.7x slower); the same ops on each number
            # (docs/architecture.md, "Data")
            out = x.permute(0, 2, 3, 1).to(torch.float32, copy=True)
            rows = out.view(-1, x.shape[-1] * x.shape[1])
            rows.mul_(self.mul.view(-1).repeat(x.shape[-1])).sub_(self.add.view(-1).repeat(x.shape[-1]))
            return out.permute(0, 3, 1, 2)
        return x.to(torch.float32, copy=True).mul_(self.mul).sub_(self.add)
