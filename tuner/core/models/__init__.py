"""Model registry: every model is a :class:`DistillableModel` (``forward_features`` + ``head``).

Registry metadata per architecture: ``family``, native ``input_size`` and ``in_channels``, and
``feature_channels`` (C of the penultimate features, what a connector joins), so nothing builds a
model to learn them. Families:
``cifar`` (32 px, the CRD benchmark zoo), ``digits`` (8 px, 1 channel), ``imagenet`` (224 px, torchvision).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

# isort: off
# Importing a model file registers its models; this order (docs/method.md's zoo table first) is list_models()'s.
from tuner.core.models import cifar_resnet, wrn, vgg, shufflenetv1, shufflenetv2, mobilenetv2, cifar_resnet50  # noqa: F401
from tuner.core.models import digits, imagenet  # noqa: F401
# isort: on
from tuner.core.models._base import MODELS, DistillableModel, he_init, load_weights
from tuner.core.models.profile import count_macs, count_params

__all__ = [
    "MODELS",
    "DistillableModel",
    "build_model",
    "list_models",
    "model_info",
    "feature_channels",
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


def list_models(input_size: Optional[int] = None) -> List[str]:
    """All registered names, or those whose native ``input_size`` metadata equals ``input_size``."""
    return MODELS.names() if input_size is None else MODELS.names(input_size=input_size)


def model_info(name: str) -> Dict[str, Any]:
    """Registry metadata of ``name``: ``input_size``, ``family``, ``in_channels``, ``feature_channels``."""
    return MODELS.meta(name)


def feature_channels(name: str) -> int:
    """C of model ``name``'s penultimate features (registry metadata; the same for any class count)."""
    return int(MODELS.meta(name)["feature_channels"])
