"""Model registry: every model is a :class:`DistillableModel` (``forward_features`` + ``head``).

Each name and its facts (``family``, native ``input_size`` and ``in_channels``, ``feature_channels``: C of
the penultimate features, what a connector joins) are declared in ``tuner.core.catalog``, so nothing
builds a model, or imports torch, to learn them; the files here provide each declared name's builder.
Families: ``cifar`` (32 px, the CRD benchmark zoo), ``digits`` (8 px, 1 channel), ``imagenet`` (224 px, torchvision).
"""
from __future__ import annotations

from typing import Optional

from tuner.core.catalog import MODELS

# isort: off
# Importing a model file provides its models' builders (list_models()' order is the catalog's).
from tuner.core.models import cifar_resnet, wrn, vgg, shufflenetv1, shufflenetv2, mobilenetv2, cifar_resnet50  # noqa: F401
from tuner.core.models import digits, imagenet  # noqa: F401
# isort: on
from tuner.core.models._base import DistillableModel, he_init, load_weights
from tuner.core.models.profile import count_macs, count_params

MODELS.check_provided()  # every model the catalog declares has its builder here

__all__ = [  # names and facts (list_models, model_info, feature_channels): tuner.core.catalog
    "DistillableModel",
    "build_model",
    "load_weights",
    "he_init",
    "count_params",
    "count_macs",
]


def build_model(name: str, num_classes: int, in_channels: Optional[int] = None) -> DistillableModel:
    """Build registered model ``name`` with random weights.

    Args:
        num_classes: width of the logits.
        in_channels: input channels of the first conv; ``None`` takes the model's native value
            (metadata ``in_channels``: 3, or 1 for the digits family).

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
    """
    factory = MODELS.get(name)
    if in_channels is None:
        in_channels = MODELS.meta(name)["in_channels"]
    return factory(num_classes=num_classes, in_channels=in_channels)
