"""Wide ResNets WRN-d-k of the CRD benchmark (pre-activation blocks, final BN + ReLU, 8x8 map).

Module names follow RepDistiller's ``wrn.py`` (``block1.layer.0.convShortcut`` ...) so its
checkpoints load unchanged.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch.nn.functional as F
from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel, he_init

__all__ = ["WideResNet"]


class WideBasic(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3; the 1x1 shortcut (if any) reads the activated input."""

    def __init__(self, c_in: int, c_out: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.drop_rate = drop_rate
        self.convShortcut: Optional[nn.Conv2d] = None  # RepDistiller's key name
        if c_in != c_out:
            self.convShortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        out = self.conv2(F.dropout(out, self.drop_rate, self.training) if self.drop_rate > 0 else out)
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class NetworkBlock(nn.Module):
    """One stage of ``n`` blocks; the first changes width and stride."""

    def __init__(self, n: int, c_in: int, c_out: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasic(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, drop_rate) for i in range(n)]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(DistillableModel):
    """WRN-depth-widen: stem conv to 16, stages of width 16k, 32k, 64k, then BN + ReLU."""

    def __init__(
        self, depth: int, widen: int, num_classes: int = 100, in_channels: int = 3, drop_rate: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.feature_channels, self.num_classes = widths[3], num_classes
        he_init(self)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return F.relu(self.bn1(x))


for _name, (_depth, _widen) in {"wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2)}.items():
    MODELS.provide(_name)(functools.partial(WideResNet, _depth, _widen))
