"""Small CNNs for scikit-learn's 8x8 digits (1 input channel, 10 classes): fast end-to-end checks."""
from __future__ import annotations

import functools
from typing import List

from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel, he_init

__all__ = ["DigitsCNN"]


class DigitsCNN(DistillableModel):
    """``depth`` x [conv3x3 (pad 1, no bias) -> BN -> ReLU] of ``width`` channels, then the head.

    No pooling anywhere: every digits model yields a ``width x 8 x 8`` map, so teacher and student
    maps align without resizing (at 8x8 the extra cost is negligible).
    """

    def __init__(self, depth: int, width: int, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"depth and width must be >= 1, got {depth}, {width}")
        layers: List[nn.Module] = []
        c = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(width, num_classes)
        self.feature_channels, self.num_classes = width, num_classes
        he_init(self)

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


# digits_cnn{depth}x{width}: 4x64 is teacher-sized, 2x4 the default student.
for _depth, _width in [(4, 64), (2, 8), (2, 4), (1, 8)]:
    MODELS.provide(f"digits_cnn{_depth}x{_width}")(functools.partial(DigitsCNN, _depth, _width))
