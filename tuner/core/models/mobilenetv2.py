"""MobileNetV2 for CIFAR as in the CRD benchmark (expansion 6, width 0.5): 1280 x 2x2 map after the
final 1x1 conv. Module names follow RepDistiller's ``mobilenetv2.py`` (``conv1``, ``blocks``, ``conv2``).
"""
from __future__ import annotations

from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel, he_init

__all__ = ["MobileNetV2"]

# (width before width_mult, blocks, first stride) per stage; the first stage has expansion 1
_STAGES = [(16, 1, 1), (24, 2, 1), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)]


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand - BN - ReLU - depthwise 3x3 - BN - ReLU - 1x1 project - BN (+ identity if shapes match)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(DistillableModel):
    """Stride-2 3x3 stem, seven inverted-residual stages, 1x1 conv to ``last_channel``."""

    key_aliases = {"classifier.0.": "fc."}

    def __init__(
        self, num_classes: int = 100, in_channels: int = 3, expand: int = 6, width_mult: float = 0.5
    ) -> None:
        super().__init__()
        c = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_channels, c, 3, 2)
        self.blocks = nn.ModuleList()
        for i, (width, n, stride) in enumerate(_STAGES):
            out = int(width * width_mult)
            stage = []
            for j in range(n):
                stage.append(InvertedResidual(c, out, stride if j == 0 else 1, 1 if i == 0 else expand))
                c = out
            self.blocks.append(nn.Sequential(*stage))
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(c, last, 1)
        self.fc = nn.Linear(last, num_classes)
        self.feature_channels, self.num_classes = last, num_classes
        he_init(self)
        nn.init.normal_(self.fc.weight, 0.0, 0.01)
        nn.init.zeros_(self.fc.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        return self.conv2(x)


MODELS.provide("MobileNetV2")(MobileNetV2)
