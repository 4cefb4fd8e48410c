"""ResNet50, CIFAR variant (RepDistiller's ``resnetv2.py``): 3x3 stem, no max-pool, 2048 x 4x4 map."""
from __future__ import annotations

import functools
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel, he_init

__all__ = ["CifarBottleneckResNet"]


class Bottleneck(nn.Module):
    """1x1 - 3x3 (stride) - 1x1 (x4 channels), BN after each, ReLU after the residual sum."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        c_out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class CifarBottleneckResNet(DistillableModel):
    """Four bottleneck stages (64, 128, 256, 512 planes; strides 1, 2, 2, 2) on a 3x3 stride-1 stem."""

    key_aliases = {"linear.": "fc."}  # RepDistiller's name for the classifier

    def __init__(self, num_blocks: Sequence[int], num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        c = 64
        for i, (n, planes, stride) in enumerate(zip(num_blocks, (64, 128, 256, 512), (1, 2, 2, 2)), start=1):
            blocks = []
            for j in range(n):
                blocks.append(Bottleneck(c, planes, stride if j == 0 else 1))
                c = planes * Bottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.fc = nn.Linear(c, num_classes)
        self.feature_channels, self.num_classes = c, num_classes
        he_init(self)

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


MODELS.provide("ResNet50")(functools.partial(CifarBottleneckResNet, (3, 4, 6, 3)))
