"""The catalog: every shipped model, connector and data set by name, with its facts, read without torch.

A name's facts are written here once. The module that builds a name (``tuner/core/models/``,
``tuner/core/connectors.py``, ``tuner/core/data/``: torch) only provides its factory
(``REGISTRY.provide(name)``), and fails on import if a name here has no factory or a factory no name
here (``Registry.check_provided``). So a config names and checks a model, connector or data set, and a
search space lists its choices, without torch: a bad name is refused in a fraction of a second
(docs/architecture.md, "Layers"). Your own model or connector can declare and provide itself in one call:
``@MODELS.register(name, input_size=..., family=..., in_channels=..., feature_channels=...)``.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Mapping, Optional

from tuner.core.registry import Registry

__all__ = ["MODELS", "CONNECTORS", "DATASETS", "DATA_MODES", "LOADER_ARGS", "list_models", "model_info",
           "feature_channels", "list_connectors", "connector_fits", "list_datasets", "dataset_info",
           "dataset_options"]

# ---- models -------------------------------------------------------------------------------------
#: a model's facts: native ``input_size`` (pixels) and ``in_channels``, ``family`` (cifar: the CRD benchmark
#: zoo; digits: 8 px, 1 channel; imagenet: torchvision's), ``feature_channels`` (C of its penultimate map,
#: what a connector joins; the same for any class count)
MODELS: Registry[Callable[..., Any]] = Registry(
    "model", facts=("input_size", "family", "in_channels", "feature_channels"), provider="tuner.core.models")

_FAMILIES: Dict[str, Dict[str, Any]] = {
    "cifar": {"input_size": 32, "family": "cifar", "in_channels": 3},
    "digits": {"input_size": 8, "family": "digits", "in_channels": 1},
    "imagenet": {"input_size": 224, "family": "imagenet", "in_channels": 3},
}
#: family -> {name: feature_channels}; this order (docs/method.md's zoo table first) is list_models()'
_ZOO: Dict[str, Dict[str, int]] = {
    "cifar": {"resnet20": 64, "resnet32": 64, "resnet56": 64, "resnet110": 64, "resnet8x4": 256, "resnet32x4": 256,
              "wrn_16_1": 64, "wrn_16_2": 128, "wrn_40_1": 64, "wrn_40_2": 128, "vgg8": 512, "vgg13": 512,
              "ShuffleNetV1": 960, "ShuffleNetV2": 1024, "MobileNetV2": 1280, "ResNet50": 2048},
    "digits": {"digits_cnn4x64": 64, "digits_cnn2x8": 8, "digits_cnn2x4": 4, "digits_cnn1x8": 8},
    "imagenet": {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "mobilenet_v2": 1280},
}
for _family, _models in _ZOO.items():
    for _name, _channels in _models.items():
        MODELS.declare(_name, **_FAMILIES[_family], feature_channels=_channels)


def list_models(input_size: Optional[int] = None) -> List[str]:
    """All registered names, or those whose native ``input_size`` metadata equals ``input_size``."""
    return MODELS.names() if input_size is None else MODELS.names(input_size=input_size)


def model_info(name: str) -> Dict[str, Any]:
    """Registry metadata of ``name``: ``input_size``, ``family``, ``in_channels``, ``feature_channels``."""
    return MODELS.meta(name)


def feature_channels(name: str) -> int:
    """C of model ``name``'s penultimate features (registry metadata; the same for any class count)."""
    return int(MODELS.meta(name)["feature_channels"])


# ---- connectors ---------------------------------------------------------------------------------
#: a connector's fact: ``equal_channels``, whether it joins only a student and a teacher of equal channel counts
CONNECTORS: Registry[Callable[[int, int], Any]] = Registry("connector", facts=("equal_channels",),
                                                           provider="tuner.core.connectors")
for _name in ("conv1x1_bn_relu", "conv1x1_bn", "conv3x3_bn_relu", "bottleneck", "linear", "identity"):
    CONNECTORS.declare(_name, equal_channels=_name == "identity")


def list_connectors() -> List[str]:
    return CONNECTORS.names()


def connector_fits(name: str, in_channels: int, out_channels: int) -> bool:
    """Whether connector ``name`` can join these channel counts (only ``identity`` is restricted)."""
    return not CONNECTORS.meta(name)["equal_channels"] or in_channels == out_channels


# ---- data sets ----------------------------------------------------------------------------------
#: what every loader takes besides its options (``splits.load_dataset``)
LOADER_ARGS = ("data_dir", "seed", "val_fraction")
#: imagefolder's ``data_mode``: decoded into memory, or streamed from its files
DATA_MODES = ("memory", "stream")


def _takes_its_options(name: str, loader: Callable[..., Any], facts: Mapping[str, Any]) -> None:
    """A loader's parameters are ``LOADER_ARGS`` and its declared ``options``, in that order."""
    takes = tuple(inspect.signature(loader).parameters)
    if takes != LOADER_ARGS + tuple(facts["options"]):
        raise ValueError(f"dataset {name!r}: its loader takes {', '.join(takes)}; the catalog declares "
                         f"{', '.join(LOADER_ARGS + tuple(facts['options']))}")


#: a data set's facts: native ``input_size``, ``family``, ``in_channels``, ``num_classes`` (None: set by its files
#: or options), and the ``options`` its loader takes beyond LOADER_ARGS (its defaults are the loader's)
DATASETS: Registry[Callable[..., Any]] = Registry(
    "dataset", facts=("input_size", "family", "in_channels", "num_classes", "options"), provider="tuner.core.data",
    check=_takes_its_options)
DATASETS.declare("digits", input_size=8, family="digits", in_channels=1, num_classes=10, options=())
DATASETS.declare("cifar10", input_size=32, family="cifar", in_channels=3, num_classes=10, options=())
DATASETS.declare("cifar100", input_size=32, family="cifar", in_channels=3, num_classes=100, options=())
DATASETS.declare("synthetic", input_size=None, family="any", in_channels=None, num_classes=None,
                 options=("num_classes", "image_size", "in_channels", "train_size", "val_size", "test_size", "augment"))
DATASETS.declare("imagefolder", input_size=None, family="any", in_channels=3, num_classes=None,
                 options=("image_size", "data_mode", "memory_budget_gb", "class_subset", "train_fraction",
                          "max_image_pixels"))
DATASETS.declare("imagenet", input_size=224, family="imagenet", in_channels=3, num_classes=None,
                 options=("image_size", "class_subset", "train_fraction", "max_image_pixels"))


def list_datasets() -> List[str]:
    """Registered dataset names."""
    return DATASETS.names()


def dataset_info(name: str) -> Dict[str, Any]:
    """Registry metadata of a dataset: ``input_size``, ``family``, ``in_channels``, ``num_classes``, ``options``."""
    return DATASETS.meta(name)


def dataset_options(name: str) -> List[str]:
    """The options ``load_dataset(name, ...)`` takes beyond data_dir, seed and val_fraction (``image_size``)."""
    return list(DATASETS.meta(name)["options"])
