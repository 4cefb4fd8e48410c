"""Dataset registry: fixed train/val/test splits, held in memory or streamed from files, and their loaders.

Small datasets are held in memory compactly (uint8 images, or float32 for digits/synthetic) and
augmented on tensors, so a trial needs no worker processes (``loader.TensorLoader``). Folders too big
for memory (ImageNet) are streamed: decoded per batch by DataLoader workers (``stream.StreamLoader``).
The data sets' names and facts are declared in ``tuner.core.catalog`` (``DATASETS``); ``splits`` holds
``load_dataset`` and the fixed split rule, ``sources`` and ``folders`` the declared data sets' loaders,
``image_files`` the walk and the check of image folders (before any trial reads them).
"""
from __future__ import annotations

from tuner.core.data import sources  # noqa: F401 - provides the loaders (list_datasets()' order is the catalog's)
from tuner.core.data import folders  # noqa: F401, I001
from tuner.core.catalog import DATASETS
from tuner.core.data.folders import DEFAULT_MEMORY_BUDGET_GB
from tuner.core.data.loader import TensorLoader, make_loaders
from tuner.core.data.normalize import Normalize
from tuner.core.data.stream import StreamLoader, StreamSplits
from tuner.core.data.splits import (
                               AUGMENTS,
                               CIFAR10_MEAN,
                               CIFAR10_STD,
                               CIFAR100_MEAN,
                               CIFAR100_STD,
                               CROP_PADDING,
                               SPLIT_SEED,
                               TEST_FRACTION,
                               DatasetNotFoundError,
                               DataSplits,
                               load_dataset,
)

DATASETS.check_provided()  # every data set the catalog declares has its loader here

__all__ = ["DataSplits", "StreamSplits", "StreamLoader", "DEFAULT_MEMORY_BUDGET_GB", "DatasetNotFoundError", "Normalize", "TensorLoader",
           "load_dataset", "make_loaders", "SPLIT_SEED", "TEST_FRACTION",
           "CROP_PADDING", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "AUGMENTS"]
