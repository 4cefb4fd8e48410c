"""Dataset registry: in-memory train/val/test tensors and a fast, resumable tensor batch loader.

Every dataset is held in memory compactly (uint8 images, or float32 for digits/synthetic) and
augmented on tensors, so a trial needs no worker processes. ``splits`` holds the registry and the
fixed split rule, ``sources`` the registered datasets, ``loader`` the batch loader.
"""
from __future__ import annotations

from tuner.data import sources  # noqa: F401 - registers the datasets
from tuner.data.loader import Normalize, TensorLoader, make_loaders
from tuner.data.splits import (
                               AUGMENTS,
                               CIFAR10_MEAN,
                               CIFAR10_STD,
                               CIFAR100_MEAN,
                               CIFAR100_STD,
                               CROP_PADDING,
                               DATASETS,
                               SPLIT_SEED,
                               TEST_FRACTION,
                               DatasetNotFoundError,
                               DataSplits,
                               dataset_info,
                               dataset_options,
                               list_datasets,
                               load_dataset,
)

__all__ = ["DATASETS", "DataSplits", "DatasetNotFoundError", "Normalize", "TensorLoader", "dataset_info",
           "dataset_options", "list_datasets", "load_dataset", "make_loaders", "SPLIT_SEED", "TEST_FRACTION",
           "CROP_PADDING", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "AUGMENTS"]
