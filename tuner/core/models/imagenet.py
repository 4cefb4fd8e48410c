"""torchvision's ResNet18/34/50 and MobileNetV2 behind our interface (random init; never downloads).

The wrappers adopt torchvision's submodules under torchvision's own names, so a plain torchvision
state_dict loads with :func:`~tuner.core.models.load_weights` (for MobileNetV2, ``classifier.1`` -> ``fc``).
torchvision is imported only when one of these models is built.
"""
from __future__ import annotations

import functools

from torch import Tensor, nn

from tuner.core.catalog import MODELS
from tuner.core.models._base import DistillableModel, he_init

__all__ = ["TorchvisionResNet", "TorchvisionMobileNetV2"]

_RESNET_PARTS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "fc")


class TorchvisionResNet(DistillableModel):
    """torchvision ``arch`` (resnet18/34/50); features = layer4's output (post-ReLU, 7x7 at 224 px)."""

    def __init__(self, arch: str, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        import torchvision

        tv = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            tv.conv1 = he_init(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False))
        for name in _RESNET_PARTS:
            setattr(self, name, getattr(tv, name))
        self.feature_channels, self.num_classes = tv.fc.in_features, num_classes

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TorchvisionMobileNetV2(DistillableModel):
    """torchvision mobilenet_v2; features = ``features`` output (1280 ch after Conv-BN-ReLU6, 7x7 at 224 px).

    torchvision's classifier dropout (p=0.2) is not kept: the head is pooling + ``fc`` only.
    """

    key_aliases = {"classifier.1.": "fc."}

    def __init__(self, num_classes: int = 1000, in_channels: int = 3) -> None:
        super().__init__()
        import torchvision

        tv = torchvision.models.mobilenet_v2(weights=None, num_classes=num_classes)
        if in_channels != 3:
            tv.features[0][0] = he_init(nn.Conv2d(in_channels, 32, 3, 2, 1, bias=False))
        self.features = tv.features
        self.fc = tv.classifier[1]
        self.feature_channels, self.num_classes = self.fc.in_features, num_classes

    def forward_features(self, x: Tensor) -> Tensor:
        return self.features(x)


for _arch in ("resnet18", "resnet34", "resnet50"):
    MODELS.provide(_arch)(functools.partial(TorchvisionResNet, _arch))
MODELS.provide("mobilenet_v2")(TorchvisionMobileNetV2)
