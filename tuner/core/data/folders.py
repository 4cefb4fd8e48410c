"""Data sets that are folders of image files: ``imagefolder`` (one sub-folder per class, decoded into memory
or streamed) and ``imagenet`` (the ILSVRC layout, always streamed).

Both list their files the same way: a fixed stratified split of the training pool, then the optional
``class_subset`` (K classes chosen by the fixed split seed, so every sweep and its confirmation use the
same K) and ``train_fraction`` (a fixed stratified share of the training split). Val and test are carved
before the subset is taken, so a subset's val images are exactly the full set's val images of its classes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from tuner.core.data.splits import DATASETS, SPLIT_SEED, TEST_FRACTION, DatasetNotFoundError, DataSplits, build_splits, fixed_split
from tuner.core.data.stream import FileSplit, StreamSplits

__all__ = ["DATA_MODES", "DEFAULT_MEMORY_BUDGET_GB", "decoded_bytes"]

Samples = List[Tuple[str, int]]
DATA_MODES = ("memory", "stream")
DEFAULT_MEMORY_BUDGET_GB = 4.0  # decoded uint8 size above which an imagefolder is streamed unless told otherwise


def _scan(folder: Path, class_to_idx: Dict[str, int] | None = None) -> Tuple[List[str], Samples]:
    """(classes, [(path, label)]) of a folder of class sub-folders; raises one line when it has no images."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, found = find_classes(folder)
        samples = make_dataset(folder, class_to_idx or found, IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError:
        classes, samples = [], []
    if not samples:
        raise DatasetNotFoundError(f"data_dir: no images in class sub-folders of {folder} (expected {folder}/<class>/<image>)")
    extra = sorted(set(classes) - set(class_to_idx or found))
    if extra:
        raise ValueError(f"data_dir: {folder} has classes missing from the training folder: {', '.join(extra[:5])}")
    return classes, samples


def _take(samples: Samples, index: np.ndarray) -> Samples:
    return [samples[i] for i in index]


def _carve(samples: Samples, fraction: float) -> Tuple[Samples, Samples]:
    """(kept, held out): the fixed stratified split of ``samples`` (``splits.fixed_split``)."""
    keep, held = fixed_split(np.array([y for _, y in samples]), fraction)
    return _take(samples, keep), _take(samples, held)


@dataclass
class _Listing:
    """The three splits' files after the subset rules, labels 0..K-1; ``class_index`` their source labels."""

    root: Path
    train: Samples
    val: Samples
    test: Samples
    num_classes: int
    class_index: Optional[Tuple[int, ...]]


def _list(name: str, root: Path, pool: Path, held: Dict[str, Path], val_fraction: float,
          class_subset: Optional[int], train_fraction: float) -> _Listing:
    """List the pool and any held-out folders, carve the missing test/val splits, then apply the subset rules."""
    classes, samples = _scan(pool)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    splits = {s: _scan(folder, class_to_idx)[1] for s, folder in held.items()}
    if "test" not in splits:
        samples, splits["test"] = _carve(samples, TEST_FRACTION)
    if "val" not in splits:
        samples, splits["val"] = _carve(samples, val_fraction)
    class_index = None
    if class_subset is not None:
        if not 2 <= class_subset <= len(classes):
            raise ValueError(f"class_subset: {name} at {root} has {len(classes)} classes; give 2 .. {len(classes)}")
        if class_subset < len(classes):
            class_index = tuple(sorted(np.random.RandomState(SPLIT_SEED).permutation(len(classes))[:class_subset].tolist()))
            relabel = {c: i for i, c in enumerate(class_index)}
            samples = [(p, relabel[y]) for p, y in samples if y in relabel]
            splits = {s: [(p, relabel[y]) for p, y in rows if y in relabel] for s, rows in splits.items()}
    if train_fraction < 1.0:
        samples = _carve(samples, train_fraction)[1]
    return _Listing(root, samples, splits["val"], splits["test"], len(class_index or classes), class_index)


def _load_images(samples: Samples, image_size: int) -> Tuple[Tensor, Tensor]:
    """Decode (path, label) samples to RGB, centre-fit to image_size: (N, 3, S, S) uint8 and (N,) int64."""
    from PIL import Image, ImageOps

    x = np.empty((len(samples), image_size, image_size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as im:
            x[i] = np.asarray(ImageOps.fit(im.convert("RGB"), (image_size, image_size), Image.BILINEAR))
    y = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y


def decoded_bytes(images: int, image_size: int) -> int:
    """Bytes ``images`` RGB uint8 images of image_size px take decoded in memory."""
    return images * 3 * image_size * image_size


def _streamed(name: str, listing: _Listing, image_size: int) -> StreamSplits:
    files = [FileSplit.of(listing.root, rows) for rows in (listing.train, listing.val, listing.test)]
    return StreamSplits(*files, num_classes=listing.num_classes, image_size=image_size, name=name,
                        class_index=listing.class_index)


def _root(name: str, data_dir: str | Path | None, layout: str) -> Path:
    if data_dir is None or not Path(data_dir).expanduser().is_dir():
        raise DatasetNotFoundError(f"data_dir: {str(data_dir)!r} is not a folder; {name} expects {layout}")
    return Path(data_dir).expanduser().resolve()  # absolute: trials run elsewhere (Ray's trial folder, another node)


@DATASETS.register("imagefolder", input_size=None, family="any", in_channels=3, num_classes=None)
def _imagefolder(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.25, image_size: int = 32,
                 data_mode: Optional[str] = None, memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
                 class_subset: Optional[int] = None, train_fraction: float = 1.0) -> DataSplits | StreamSplits:
    """A folder of class sub-folders (optionally split into train/ val/ test/) at image_size px.

    Missing val/ or test/ are carved from the training pool by a fixed stratified split (test:
    TEST_FRACTION of the pool, val: val_fraction of the rest). ``data_mode`` memory: decoded once, fitted
    to image_size, CIFAR-style pad-and-crop + flip, the train split's mean/std. stream: files decoded per
    batch, ImageNet-style transforms and mean/std. None: memory while the decoded set fits in
    ``memory_budget_gb``, else stream.
    """
    root = _root("imagefolder", data_dir, "a folder of class sub-folders (<data_dir>/<class>/<image>)")
    pool = root / "train" if (root / "train").is_dir() else root
    held = {s: root / s for s in ("val", "test") if pool != root and (root / s).is_dir()}
    listing = _list("imagefolder", root, pool, held, val_fraction, class_subset, train_fraction)
    images = len(listing.train) + len(listing.val) + len(listing.test)
    if data_mode is None:
        data_mode = "memory" if decoded_bytes(images, image_size) <= memory_budget_gb * 2**30 else "stream"
    if data_mode == "stream":
        return _streamed("imagefolder", listing, image_size)
    parts = [t for rows in (listing.train, listing.val, listing.test) for t in _load_images(rows, image_size)]
    return build_splits("imagefolder", parts, listing.num_classes, scale=255.0, augment="crop_flip",
                        class_index=listing.class_index)


@DATASETS.register("imagenet", input_size=224, family="imagenet", in_channels=3, num_classes=None)
def _imagenet(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.01, image_size: int = 224,
              class_subset: Optional[int] = None, train_fraction: float = 1.0) -> StreamSplits:
    """ILSVRC-2012 in torchvision ImageFolder's layout (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG``), streamed.

    The official ``val/`` is the test split, never searched on; the search's val split is a fixed
    stratified ``val_fraction`` of ``train/`` (0.01: ~12.8 k images, 10 a class). Labels are the
    sorted wnids' positions, torchvision's convention, so torchvision-format weights line up.
    """
    layout = "<data_dir>/train/<wnid>/*.JPEG and <data_dir>/val/<wnid>/*.JPEG"
    root = _root("imagenet", data_dir, layout)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetNotFoundError(f"data_dir: imagenet: missing {root / split}; expected {layout}")
    listing = _list("imagenet", root, root / "train", {"test": root / "val"}, val_fraction, class_subset, train_fraction)
    return _streamed("imagenet", listing, image_size)
