"""ShuffleNetV2 (net size 1) for CIFAR as in the CRD benchmark: 1024 x 4x4 map after the final 1x1 conv.

Module names follow RepDistiller's ``ShuffleNetv2.py``; weights keep PyTorch's default init,
as there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel
from tuner.core.models.shufflenetv1 import channel_shuffle

__all__ = ["ShuffleNetV2"]


def _conv(c_in: int, c_out: int, k: int = 1, stride: int = 1, dw: bool = False) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=c_in if dw else 1, bias=False)


class BasicBlock(nn.Module):
    """Split channels in half; 1x1 - depthwise 3x3 - 1x1 on the second half; concat; shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        c = channels // 2
        self.conv1, self.bn1 = _conv(c, c), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = _conv(c, c, 3, dw=True), nn.BatchNorm2d(c)
        self.conv3, self.bn3 = _conv(c, c), nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        out = F.relu(self.bn1(self.conv1(x2)))
        out = F.relu(self.bn3(self.conv3(self.bn2(self.conv2(out)))))
        return channel_shuffle(torch.cat([x1, out], 1), 2)


class DownBlock(nn.Module):
    """Two stride-2 branches (dw3x3 - 1x1 and 1x1 - dw3x3 - 1x1), each out // 2 channels; concat; shuffle."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_out // 2
        self.conv1, self.bn1 = _conv(c_in, c_in, 3, 2, dw=True), nn.BatchNorm2d(c_in)
        self.conv2, self.bn2 = _conv(c_in, mid), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = _conv(c_in, mid), nn.BatchNorm2d(mid)
        self.conv4, self.bn4 = _conv(mid, mid, 3, 2, dw=True), nn.BatchNorm2d(mid)
        self.conv5, self.bn5 = _conv(mid, mid), nn.BatchNorm2d(mid)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(DistillableModel):
    """1x1 stem to 24 channels, three stages (116, 232, 464), then 1x1 conv to 1024 + BN + ReLU."""

    key_aliases = {"linear.": "fc."}

    def __init__(
        self,
        num_classes: int = 100,
        in_channels: int = 3,
        out_channels: tuple = (116, 232, 464, 1024),
        num_blocks: tuple = (3, 7, 3),
    ) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(in_channels, 24), nn.BatchNorm2d(24)
        c = 24
        for i, (width, n) in enumerate(zip(out_channels[:3], num_blocks), start=1):
            setattr(self, f"layer{i}", nn.Sequential(DownBlock(c, width), *[BasicBlock(width) for _ in range(n)]))
            c = width
        self.conv2, self.bn2 = _conv(c, out_channels[3]), nn.BatchNorm2d(out_channels[3])
        self.fc = nn.Linear(out_channels[3], num_classes)
        self.feature_channels, self.num_classes = out_channels[3], num_classes

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return F.relu(self.bn2(self.conv2(x)))


MODELS.provide("ShuffleNetV2")(ShuffleNetV2)
