"""VGG with BatchNorm for CIFAR (the CRD benchmark's vgg8 = vgg8_bn, vgg13 = vgg13_bn): 512 x 4x4 map.

Module names follow RepDistiller's ``vgg.py`` (``block0`` ... ``block4``, ``classifier``).
"""
from __future__ import annotations

import functools
from typing import List, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel, he_init

__all__ = ["VGG"]

_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
}


class VGG(DistillableModel):
    """Five blocks of conv3x3(+bias)-BN-ReLU with 2x2 max-pools after blocks 0-2.

    A fourth max-pool (after block 3) is applied for inputs of 64 px or more, as RepDistiller
    does for 64x64 inputs, so the map is 4x4 for both 32 and 64 px inputs.
    """

    key_aliases = {"classifier.": "fc."}

    def __init__(self, cfg: Sequence[Sequence[int]], num_classes: int = 100, in_channels: int = 3) -> None:
        super().__init__()
        c = in_channels
        for i, widths in enumerate(cfg):
            layers: List[nn.Module] = []
            for w in widths:
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
            setattr(self, f"block{i}", nn.Sequential(*layers[:-1]))  # the block's last ReLU runs in forward
        self.fc = nn.Linear(c, num_classes)
        self.feature_channels, self.num_classes = c, num_classes
        he_init(self)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        big = x.shape[-2] >= 64
        x = F.max_pool2d(F.relu(self.block0(x)), 2)
        x = F.max_pool2d(F.relu(self.block1(x)), 2)
        x = F.max_pool2d(F.relu(self.block2(x)), 2)
        x = F.relu(self.block3(x))
        if big:
            x = F.max_pool2d(x, 2)
        return F.relu(self.block4(x))


for _name, _cfg in _CFG.items():
    MODELS.provide(_name)(functools.partial(VGG, _cfg))
