"""Model size and cost: trainable parameters and multiply-accumulates of one forward pass."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs"]


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters (``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on a single sample, counted by ``FlopCounterMode``.

    Only matmuls and convolutions count (flops // 2); BN, activations and pooling do not. Runs in
    eval mode under ``no_grad`` on the model's device and restores its training mode afterwards.

    Args:
        input_shape: ``(C, H, W)`` of one sample (a leading batch dim of 1 is also accepted).
    """
    shape = tuple(input_shape)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    param = next(model.parameters(), None)
    x = torch.zeros((1, *shape), device=param.device if param is not None else None,
                    dtype=param.dtype if param is not None else None)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
