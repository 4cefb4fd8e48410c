"""ShuffleNetV1 (groups 3) for CIFAR as in the CRD benchmark: 960 x 4x4 map.

Module names follow RepDistiller's ``ShuffleNetv1.py``; weights keep PyTorch's default init,
as there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel

__all__ = ["ShuffleNetV1", "channel_shuffle"]


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """``B x C x H x W`` -> same shape, channels interleaved across ``groups``."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class Bottleneck(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1; stride 2 concatenates an avg-pooled shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = c_out // 4
        self.stride = stride
        self.g1 = 1 if c_in == 24 else groups  # the first block sees the 24-channel stem: no grouping
        self.conv1 = nn.Conv2d(c_in, mid, 1, groups=self.g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(out + x)


class ShuffleNetV1(DistillableModel):
    """1x1 stem to 24 channels, three stages (each halves the resolution) of out_planes widths."""

    key_aliases = {"linear.": "fc."}

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        out_planes: tuple = (240, 480, 960),
        num_blocks: tuple = (4, 8, 4),
        groups: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        c = 24
        for i, (width, n) in enumerate(zip(out_planes, num_blocks), start=1):
            # the stride-2 first block concatenates its input, so its branch makes width - c channels
            blocks = [Bottleneck(c, width - c, 2, groups)] + [Bottleneck(width, width, 1, groups) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            c = width
        self.fc = nn.Linear(c, num_classes)
        self.feature_channels, self.num_classes = c, num_classes

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


MODELS.provide("ShuffleNetV1")(ShuffleNetV1)
