"""The interface every registered model implements, and weight loading (the model registry: ``tuner.core.catalog``)."""
from __future__ import annotations

import os
from typing import Any, ClassVar, Dict, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DistillableModel", "load_weights", "he_init"]


class DistillableModel(nn.Module):
    """A classifier split into a feature extractor and a head (global average pooling + ``fc``).

    Attributes:
        feature_channels: C of the map returned by :meth:`forward_features`.
        num_classes: width of the logits.
        fc: the final ``nn.Linear(feature_channels, num_classes)``.
        key_aliases: state_dict key prefixes of a foreign layout (e.g. RepDistiller's ``linear.``,
            torchvision's ``classifier.1.``) mapped to ours; used by :func:`load_weights`.
    """

    feature_channels: int
    num_classes: int
    fc: nn.Linear
    key_aliases: ClassVar[Dict[str, str]] = {}

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map before pooling, after the final BN + ReLU: ``B x C x H x W``."""
        raise NotImplementedError

    def head(self, f: Tensor) -> Tensor:
        """Global average pooling then ``fc``: ``B x C x H x W`` (any H, W) -> ``B x num_classes``."""
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


def he_init(module: nn.Module) -> nn.Module:
    """Conv: He normal, std sqrt(2 / (k*k*C_out)) (= kaiming fan_out), bias 0; BatchNorm: weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def _unwrap(state: Any) -> Mapping[str, Tensor]:
    """The state_dict inside a checkpoint saved as ``{"model": sd}`` / ``{"state_dict": sd}`` or bare."""
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            return state[key]
    if not isinstance(state, Mapping):
        raise TypeError(f"expected a state_dict (a mapping), got {type(state).__name__}")
    return state


def load_weights(model: DistillableModel, path: str | os.PathLike, strict: bool = True,
                 classes: Optional[Sequence[int]] = None) -> DistillableModel:
    """Load a local state_dict file into ``model`` (never downloads) and return the model.

    Accepts our keys, the keys of the layout the model was ported from (``model.key_aliases``,
    e.g. plain torchvision or RepDistiller keys), a ``module.`` (DataParallel) prefix, and
    checkpoints that wrap the state_dict under ``"model"`` or ``"state_dict"``.

    Args:
        classes: keep only these rows of the classifier ``fc`` (K,): weights trained on all of ImageNet's
            classes serve a model of a K-class subset, each logit the same as the full model's.

    Raises:
        RuntimeError: missing or unexpected keys (when ``strict``) or shape mismatches.
    """
    state = _unwrap(torch.load(path, map_location="cpu", weights_only=True))
    renamed: Dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        for old, new in model.key_aliases.items():
            if key.startswith(old):
                key = new + key[len(old):]
                break
        renamed[key] = value
    if classes is not None:
        rows = torch.as_tensor(list(classes), dtype=torch.long)
        for key in ("fc.weight", "fc.bias"):
            if key in renamed:
                if int(rows.max()) >= renamed[key].shape[0]:
                    raise ValueError(f"the classifier has {renamed[key].shape[0]} classes; the subset needs class {int(rows.max())}")
                renamed[key] = renamed[key][rows]
    model.load_state_dict(renamed, strict=strict)
    return model
