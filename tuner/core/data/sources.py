"""The registered in-memory datasets: digits (scikit-learn), CIFAR-10/100 (the python batches on disk) and
synthetic tensors. Each returns ``DataSplits``; folders of image files are in ``folders``."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from tuner.core.catalog import DATASETS
from tuner.core.data.splits import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DatasetNotFoundError,
    DataSplits,
    build_splits,
    fixed_split,
    pool_splits,
)

__all__: List[str] = []  # the loaders of names the catalog declares (DATASETS); nothing to import from here

@DATASETS.provide("digits")
def _digits(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.25) -> DataSplits:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16), fixed stratified 60/20/20 split.

    Read straight from the file ``sklearn.datasets.load_digits`` reads (its ``digits.csv.gz``:
    64 pixels + label per row), without importing scikit-learn (seconds of start-up).
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError("digits: scikit-learn is not installed (pip install scikit-learn)")
    table = np.loadtxt(Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz", delimiter=",")
    x = torch.from_numpy(table[:, :-1].astype(np.float32)).reshape(-1, 1, 8, 8)
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    return build_splits("digits", pool_splits(x, y, val_fraction), 10, scale=16.0, augment="none")


def _cifar_root(name: str, data_dir: str | Path | None, folder: str, files: Sequence[str], how: str) -> Path:
    """The extracted CIFAR folder: ``data_dir/folder`` or ``data_dir`` itself; raises naming the path looked for."""
    if data_dir is None:
        raise DatasetNotFoundError(f"{name}: data_dir is required (the folder holding {folder}/); {how}")
    root = Path(data_dir).expanduser()
    base = next((c for c in (root / folder, root) if (c / files[0]).is_file()), root / folder)
    for f in files:
        if not (base / f).is_file():
            raise DatasetNotFoundError(f"{name}: data_dir={str(data_dir)!r}: missing {base / f}; {how}")
    return base


class _BatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR python batch as data, never code: a dict of bytes, lists, numbers and numpy arrays.

    ``pickle.load`` would call whatever a crafted file names (``os.system`` ...); this admits only
    the globals a numpy array needs to be rebuilt, and refuses every other one.
    """

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"),
                ("_codecs", "encode")}  # protocol-2 pickles written by Python 3 spell bytes so; a pure function

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")


def _read_cifar(paths: Sequence[Path], label_key: bytes) -> Tuple[Tensor, Tensor]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 from torchvision's python-pickle CIFAR batches."""
    xs, ys = [], []
    for p in paths:
        try:
            with open(p, "rb") as f:
                d = _BatchUnpickler(f, encoding="bytes").load()
            xs.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[label_key], dtype=np.int64))
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise DatasetNotFoundError(f"data_dir: {p} is not a CIFAR python batch ({type(e).__name__}: "
                                       f"{str(e)[:200]})") from None
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def _cifar(name: str, data_dir: str | Path | None, val_fraction: float, folder: str, train_files: Sequence[str],
           test_file: str, label_key: bytes, num_classes: int, how: str, mean: Sequence[float], std: Sequence[float]) -> DataSplits:
    """Official train batches minus a fixed stratified val share; the official test batch as test."""
    base = _cifar_root(name, data_dir, folder, [*train_files, test_file], how)
    x, y = _read_cifar([base / f for f in train_files], label_key)
    test_x, test_y = _read_cifar([base / test_file], label_key)
    train, val = fixed_split(y.numpy(), val_fraction)
    parts = (x[train], y[train], x[val], y[val], test_x, test_y)
    return build_splits(name, parts, num_classes, scale=255.0, augment="crop_flip", mean=mean, std=std)


@DATASETS.provide("cifar10")
def _cifar10(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.1) -> DataSplits:
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` (no download); val = fixed stratified share of train."""
    how = "download the CIFAR-10 python version (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) and extract it there"
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar("cifar10", data_dir, val_fraction, "cifar-10-batches-py", train, "test_batch", b"labels", 10, how,
                  CIFAR10_MEAN, CIFAR10_STD)


@DATASETS.provide("cifar100")
def _cifar100(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.1) -> DataSplits:
    """CIFAR-100 (fine labels) from ``data_dir/cifar-100-python`` (no download); val = fixed stratified share of train."""
    how = "download the CIFAR-100 python version (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz) and extract it there"
    return _cifar("cifar100", data_dir, val_fraction, "cifar-100-python", ["train"], "test", b"fine_labels", 100, how,
                  CIFAR100_MEAN, CIFAR100_STD)


@DATASETS.provide("synthetic")
def _synthetic(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float | None = None, num_classes: int = 10,
               image_size: int = 32, in_channels: int = 3, train_size: int = 1024, val_size: int = 256,
               test_size: int = 256, augment: str = "none") -> DataSplits:
    """Random float32 images (noise + a per-class pattern, so it is learnable), deterministic given seed.

    ``val_fraction`` is ignored: the split sizes are the ``*_size`` options.
    """
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(num_classes, in_channels, image_size, image_size, generator=g)
    parts = []
    for n in (train_size, val_size, test_size):
        y = torch.randint(num_classes, (n,), generator=g)
        parts += [prototypes[y] + torch.randn(n, in_channels, image_size, image_size, generator=g), y]
    return build_splits("synthetic", parts, num_classes, scale=1.0, augment=augment)
