"""Datasets as fixed, in-memory train/val/test tensors: ``load_dataset``, ``DataSplits`` and the split rule.

The data sets' names and facts (the options each loader takes among them) are declared in ``tuner.core.catalog``
(``DATASETS``); ``sources`` and ``folders`` provide their loaders.

Splits are FIXED (a constant ``SPLIT_SEED``, never the trial seed): every trial of every sweep
optimises the same val split and reports the same test split.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from tuner.core.catalog import DATASETS, dataset_options

__all__ = ["DataSplits", "DatasetNotFoundError",
           "load_dataset", "fixed_split", "fresh_val", "channel_stats", "pool_splits", "build_splits", "SPLIT_SEED", "TEST_FRACTION",
           "CROP_PADDING", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "AUGMENTS"]

SPLIT_SEED = 20210503  # fixed split seed: the split never depends on the trial seed
TEST_FRACTION = 0.2  # held-out test share when a dataset has no official test set
CROP_PADDING = 4
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
AUGMENTS = ("crop_flip", "none")


class DatasetNotFoundError(FileNotFoundError):
    """Dataset files are missing; the one-line message names the path and how to get them."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Fixed train/val/test tensors of one dataset plus what is needed to normalise them.

    Images are N x C x H x W (uint8 with ``scale`` 255, or float32), labels are int64 of shape N.
    ``mean``/``std`` are per channel, in the space of ``x / scale``.
    """

    train_x: Tensor = field(repr=False)
    train_y: Tensor = field(repr=False)
    val_x: Tensor = field(repr=False)
    val_y: Tensor = field(repr=False)
    test_x: Tensor = field(repr=False)
    test_y: Tensor = field(repr=False)
    num_classes: int
    in_channels: int
    image_size: int
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    scale: float
    augment: str
    name: str
    class_index: Optional[Tuple[int, ...]] = None  # source labels of the classes a class_subset kept

    def with_val_seed(self, seed: int) -> "DataSplits":
        """The same data with train + val re-split by ``seed`` (``fresh_val``); test, normalisation unchanged."""
        train, val = fresh_val(self.train_y, self.val_y, seed)
        x, y = torch.cat([self.train_x, self.val_x]), torch.cat([self.train_y, self.val_y])
        return dataclasses.replace(self, train_x=x[train], train_y=y[train], val_x=x[val], val_y=y[val])

    def fingerprint(self) -> str:
        """Blake2b hex digest of the name, metadata, shapes, dtypes and bytes of all six tensors."""
        h = hashlib.blake2b(digest_size=16)
        meta = (self.name, self.num_classes, self.in_channels, self.image_size, self.mean, self.std, self.scale, self.augment)
        if self.class_index is not None:  # appended only when set: caches keyed by older fingerprints stay valid
            meta += (self.class_index,)
        h.update(repr(meta).encode())
        for key in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            t = getattr(self, key).detach().cpu().contiguous()
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.numpy().reshape(-1).view(np.uint8))
        return h.hexdigest()


def load_dataset(
    name: str, data_dir: str | Path | None = None, seed: int = 0, val_fraction: float | None = None, **options: Any
) -> DataSplits:
    """Load a registered dataset into memory.

    Args:
        name: a name from ``list_datasets()``.
        data_dir: folder holding the files (cifar10, cifar100, imagefolder); ignored by the others.
        seed: only datasets that are random by nature (synthetic) use it; splits never do.
        val_fraction: share of the training pool held out for validation; None = the dataset's
            default (0.25 for digits/imagefolder, i.e. 60/20/20 with the test share; 0.1 for CIFAR).
        **options: dataset-specific options (e.g. ``image_size`` for imagefolder); unknown ones raise.
    """
    loader = DATASETS.get(name)
    allowed = dataset_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(allowed) or 'none'}")
    if val_fraction is not None:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        options["val_fraction"] = val_fraction
    return loader(data_dir=data_dir, seed=seed, **options)


def fixed_split(y: np.ndarray, fraction: float, seed: int = SPLIT_SEED) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) of a fixed split of ``y`` (N,), stratified when every class can give one.

    Each class gives its share of the ``ceil(fraction * N)`` held-out samples (largest remainders
    round), drawn from a permutation seeded with ``seed`` (``SPLIT_SEED``: the data set's own split). Plain numpy on purpose: importing
    scikit-learn's model_selection costs about a second of every CLI start, bad input included.
    """
    n = len(y)
    n_held = math.ceil(fraction * n)
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(y, return_counts=True)
    if counts.min() < 2 or min(n_held, n - n_held) < len(classes):  # too small to stratify
        held = rng.permutation(n)[:n_held]
    else:
        quota = counts * n_held / n
        take = np.floor(quota).astype(int)
        extra = n_held - take.sum()
        take[np.argsort(-(quota - take), kind="stable")[:extra]] += 1
        take = np.clip(take, 1, counts - 1)
        held = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)])
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def channel_stats(x: Tensor, scale: float, chunk: int = 8192) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """Per-channel mean and std of ``x / scale`` for x (N, C, H, W), in float64 chunks."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        c = x[i : i + chunk].to(torch.float64) / scale
        total += c.sum((0, 2, 3))
        total_sq += (c * c).sum((0, 2, 3))
    n = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / n
    std = (total_sq / n - mean**2).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def pool_splits(x: Tensor, y: Tensor, val_fraction: float) -> Tuple[Tensor, ...]:
    """(train_x, train_y, val_x, val_y, test_x, test_y): test = TEST_FRACTION of all, val = val_fraction of the rest."""
    rest, test = fixed_split(y.numpy(), TEST_FRACTION)
    train, val = fixed_split(y[rest].numpy(), val_fraction)
    train, val = rest[train], rest[val]
    return x[train], y[train], x[val], y[val], x[test], y[test]


def fresh_val(train_y: Tensor, val_y: Tensor, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices into train + val pooled: a new stratified (train, val) split of the same val size, drawn with
    ``seed`` (the confirmation's per-seed validation split, docs/method.md "Trusting the winner")."""
    y = torch.cat([train_y, val_y]).numpy()
    return fixed_split(y, len(val_y) / len(y), seed=seed)


def build_splits(name: str, parts: Sequence[Tensor], num_classes: int, scale: float, augment: str,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
            class_index: Optional[Tuple[int, ...]] = None) -> DataSplits:
    """Build a DataSplits from the six tensors; mean/std default to the train split's channel stats."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment: unknown {augment!r}; choose from: {', '.join(AUGMENTS)}")
    train_x = parts[0]
    if mean is None:
        mean, std = channel_stats(train_x, scale)
    return DataSplits(*parts, num_classes=num_classes, in_channels=train_x.shape[1], image_size=train_x.shape[-1],
                      mean=tuple(mean), std=tuple(std), scale=float(scale), augment=augment, name=name,
                      class_index=class_index)
