"""Data sets that are folders of image files: ``imagefolder`` (one sub-folder per class, decoded into memory
or streamed) and ``imagenet`` (the ILSVRC layout, always streamed).

Both list their files the same way: a fixed stratified split of the training pool, then the optional
``class_subset`` (K classes chosen by the fixed split seed, so every sweep and its confirmation use the
same K) and ``train_fraction`` (a fixed stratified share of the training split). Val and test are carved
before the subset is taken, so a subset's val images are exactly the full set's val images of its classes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from tuner.core.catalog import DATASETS
from tuner.core.data.image_files import DEFAULT_MAX_IMAGE_PIXELS, FolderWalk, check_images, pil_image, pixel_refusal
from tuner.core.data.splits import SPLIT_SEED, TEST_FRACTION, DatasetNotFoundError, DataSplits, build_splits, fixed_split
from tuner.core.data.stream import FileSplit, StreamSplits

__all__ = ["DEFAULT_MEMORY_BUDGET_GB", "DEFAULT_MAX_IMAGE_PIXELS", "decoded_bytes"]

Samples = List[Tuple[str, int]]
DEFAULT_MEMORY_BUDGET_GB = 4.0  # decoded uint8 size above which an imagefolder is streamed unless told otherwise


def _scan(folder: Path, walk: FolderWalk, class_to_idx: Dict[str, int] | None = None) -> Tuple[List[str], Samples]:
    """(classes, [(path, label)]) of a folder of class sub-folders, listed by ``walk`` (each real folder once, as
    torchvision's ImageFolder orders them); raises one line when it has no images."""
    try:
        walk.enter(str(folder))
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir())
    except FileNotFoundError:
        classes = []
    found = {c: i for i, c in enumerate(classes)}
    samples = [(p, label) for c, label in sorted((class_to_idx or found).items()) if c in found
               for p in walk.images(os.path.join(folder, c))]
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
    walk = FolderWalk()  # one for the whole data set: a link from val/ into train/ is a second way in too
    walk.enter(str(root))
    classes, samples = _scan(pool, walk)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    splits = {s: _scan(folder, walk, class_to_idx)[1] for s, folder in held.items()}
    walk.check_once([p for rows in (samples, *splits.values()) for p, _ in rows])
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


def _load_images(samples: Samples, image_size: int, max_pixels: int) -> Tuple[Tensor, Tensor]:
    """Decode (path, label) samples to RGB, centre-fit to image_size: (N, 3, S, S) uint8 and (N,) int64; a file
    that cannot be is one line naming it (``check_images`` sees most before: this is for what changed since)."""
    from PIL import ImageOps

    Image = pil_image()
    x = np.empty((len(samples), image_size, image_size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        try:
            im = Image.open(path)
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ...
            raise _cannot_decode(path, e) from None
        with im:
            why = pixel_refusal(*im.size, max_pixels)  # from the header, before a byte is decoded
            if why:
                raise ValueError(f"data_dir: {path} {why}")
            try:
                x[i] = np.asarray(ImageOps.fit(im.convert("RGB"), (image_size, image_size), Image.BILINEAR))
            except Exception as e:
                raise _cannot_decode(path, e) from None
    y = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y


def _cannot_decode(path: str, e: Exception) -> ValueError:
    """The one-line refusal of a file PIL cannot open or decode, naming it (exit 2 at the CLIs)."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return ValueError(f"data_dir: cannot decode {path} ({first})")


def decoded_bytes(images: int, image_size: int) -> int:
    """Bytes ``images`` RGB uint8 images of image_size px take decoded in memory."""
    return images * 3 * image_size * image_size


def _checked(listing: _Listing, max_pixels: int, streamed: bool) -> None:
    """Every file of the three splits readable, before a trial pays for one that is not (``image_files``)."""
    check_images([p for rows in (listing.train, listing.val, listing.test) for p, _ in rows], str(listing.root),
                 max_pixels, streamed)


def _streamed(name: str, listing: _Listing, image_size: int, max_pixels: int) -> StreamSplits:
    _checked(listing, max_pixels, streamed=True)
    files = [FileSplit.of(listing.root, rows) for rows in (listing.train, listing.val, listing.test)]
    return StreamSplits(*files, num_classes=listing.num_classes, image_size=image_size, name=name,
                        class_index=listing.class_index, max_pixels=max_pixels)


def _root(name: str, data_dir: str | Path | None, layout: str) -> Path:
    if data_dir is None or not Path(data_dir).expanduser().is_dir():
        raise DatasetNotFoundError(f"data_dir: {str(data_dir)!r} is not a folder; {name} expects {layout}")
    return Path(data_dir).expanduser().resolve()  # absolute: trials run elsewhere (Ray's trial folder, another node)


@DATASETS.provide("imagefolder")
def _imagefolder(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.25, image_size: int = 32,
                 data_mode: Optional[str] = None, memory_budget_gb: float = DEFAULT_MEMORY_BUDGET_GB,
                 class_subset: Optional[int] = None, train_fraction: float = 1.0,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> DataSplits | StreamSplits:
    """A folder of class sub-folders (optionally split into train/ val/ test/) at image_size px.

    Missing val/ or test/ are carved from the training pool by a fixed stratified split (test:
    TEST_FRACTION of the pool, val: val_fraction of the rest). ``data_mode`` memory: decoded once, fitted
    to image_size, CIFAR-style pad-and-crop + flip, the train split's mean/std. stream: files decoded per
    batch, ImageNet-style transforms and mean/std. None: memory while the decoded set fits in
    ``memory_budget_gb``, else stream. Every file is checked first (``image_files.check_images``), and an image
    of more than ``max_image_pixels`` is refused from its header, whichever way it is read.
    """
    root = _root("imagefolder", data_dir, "a folder of class sub-folders (<data_dir>/<class>/<image>)")
    pool = root / "train" if (root / "train").is_dir() else root
    held = {s: root / s for s in ("val", "test") if pool != root and (root / s).is_dir()}
    listing = _list("imagefolder", root, pool, held, val_fraction, class_subset, train_fraction)
    images = len(listing.train) + len(listing.val) + len(listing.test)
    if data_mode is None:
        data_mode = "memory" if decoded_bytes(images, image_size) <= memory_budget_gb * 2**30 else "stream"
    if data_mode == "stream":
        return _streamed("imagefolder", listing, image_size, max_image_pixels)
    _checked(listing, max_image_pixels, streamed=False)
    parts = [t for rows in (listing.train, listing.val, listing.test) for t in _load_images(rows, image_size, max_image_pixels)]
    return build_splits("imagefolder", parts, listing.num_classes, scale=255.0, augment="crop_flip",
                        class_index=listing.class_index)


@DATASETS.provide("imagenet")
def _imagenet(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.01, image_size: int = 224,
              class_subset: Optional[int] = None, train_fraction: float = 1.0,
              max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> StreamSplits:
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
    return _streamed("imagenet", listing, image_size, max_image_pixels)
