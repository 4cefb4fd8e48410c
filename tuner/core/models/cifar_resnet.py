"""CIFAR ResNets of the CRD benchmark (resnet20 ... resnet32x4): three stages of basic blocks.

Module names follow RepDistiller's ``resnet.py`` so its checkpoints load unchanged.
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel, he_init

__all__ = ["CifarResNet"]


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (1x1 conv + BN when the shape changes) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, c_out, stride)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(c_out, c_out)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class CifarResNet(DistillableModel):
    """ResNet-(6n+2) for 32x32 inputs; ``filters`` = (stem, stage1, stage2, stage3) widths.

    The feature map is the last block's post-ReLU output: ``filters[3] x 8 x 8`` for 32x32 inputs.
    """

    def __init__(self, depth: int, filters: Sequence[int], num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, filters[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        self.relu = nn.ReLU(inplace=True)
        c = filters[0]
        for i, (width, stride) in enumerate(zip(filters[1:], (1, 2, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c, width, stride if j == 0 else 1))
                c = width
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c, num_classes)
        self.feature_channels, self.num_classes = c, num_classes
        he_init(self)  # RepDistiller leaves the Linear at PyTorch's default init

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


_CONFIGS = {
    "resnet20": (20, (16, 16, 32, 64)),
    "resnet32": (32, (16, 16, 32, 64)),
    "resnet56": (56, (16, 16, 32, 64)),
    "resnet110": (110, (16, 16, 32, 64)),
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}
for _name, (_depth, _filters) in _CONFIGS.items():
    MODELS.provide(_name)(functools.partial(CifarResNet, _depth, _filters))
