"""Dataset registry: in-memory train/val/test tensors and a fast, resumable tensor batch loader.

Every dataset is held in memory compactly (uint8 images, or float32 for digits/synthetic) and
augmented on tensors, so a trial needs no worker processes. Splits are FIXED (a constant
``SPLIT_SEED``, never the trial seed): every trial of every sweep optimises the same val split
and reports the same test split.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .registry import Registry

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetNotFoundError",
    "Normalize",
    "TensorLoader",
    "dataset_info",
    "dataset_options",
    "list_datasets",
    "load_dataset",
    "make_loaders",
]

DATASETS: Registry[Callable[..., "DataSplits"]] = Registry("dataset")

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

    def fingerprint(self) -> str:
        """Blake2b hex digest of the name, metadata, shapes, dtypes and bytes of all six tensors."""
        h = hashlib.blake2b(digest_size=16)
        meta = (self.name, self.num_classes, self.in_channels, self.image_size, self.mean, self.std, self.scale, self.augment)
        h.update(repr(meta).encode())
        for key in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
            t = getattr(self, key).detach().cpu().contiguous()
            h.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
            h.update(t.numpy().reshape(-1).view(np.uint8))
        return h.hexdigest()


def list_datasets() -> List[str]:
    """Registered dataset names."""
    return DATASETS.names()


def dataset_info(name: str) -> Dict[str, Any]:
    """Registry metadata of a dataset: ``input_size``, ``family``, ``in_channels``, ``num_classes``."""
    return DATASETS.meta(name)


def dataset_options(name: str) -> List[str]:
    """The options ``load_dataset(name, ...)`` takes beyond data_dir, seed and val_fraction (``image_size``)."""
    return [p for p in inspect.signature(DATASETS.get(name)).parameters if p not in ("data_dir", "seed", "val_fraction")]


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


# ----------------------------------------------------------------------------- helpers


def _fixed_split(y: np.ndarray, fraction: float) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) of a fixed split of ``y`` (N,), stratified when every class can give one.

    Each class gives its share of the ``ceil(fraction * N)`` held-out samples (largest remainders
    round), drawn from a permutation seeded with ``SPLIT_SEED``. Plain numpy on purpose: importing
    scikit-learn's model_selection costs about a second of every CLI start, bad input included.
    """
    n = len(y)
    n_held = math.ceil(fraction * n)
    rng = np.random.RandomState(SPLIT_SEED)
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


def _channel_stats(x: Tensor, scale: float, chunk: int = 8192) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
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


def _pool_splits(x: Tensor, y: Tensor, val_fraction: float) -> Tuple[Tensor, ...]:
    """(train_x, train_y, val_x, val_y, test_x, test_y): test = TEST_FRACTION of all, val = val_fraction of the rest."""
    rest, test = _fixed_split(y.numpy(), TEST_FRACTION)
    train, val = _fixed_split(y[rest].numpy(), val_fraction)
    train, val = rest[train], rest[val]
    return x[train], y[train], x[val], y[val], x[test], y[test]


def _splits(name: str, parts: Sequence[Tensor], num_classes: int, scale: float, augment: str,
            mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> DataSplits:
    """Build a DataSplits from the six tensors; mean/std default to the train split's channel stats."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment: unknown {augment!r}; choose from: {', '.join(AUGMENTS)}")
    train_x = parts[0]
    if mean is None:
        mean, std = _channel_stats(train_x, scale)
    return DataSplits(*parts, num_classes=num_classes, in_channels=train_x.shape[1], image_size=train_x.shape[-1],
                      mean=tuple(mean), std=tuple(std), scale=float(scale), augment=augment, name=name)


# ----------------------------------------------------------------------------- datasets


@DATASETS.register("digits", input_size=8, family="digits", in_channels=1, num_classes=10)
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
    return _splits("digits", _pool_splits(x, y, val_fraction), 10, scale=16.0, augment="none")


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
    train, val = _fixed_split(y.numpy(), val_fraction)
    parts = (x[train], y[train], x[val], y[val], test_x, test_y)
    return _splits(name, parts, num_classes, scale=255.0, augment="crop_flip", mean=mean, std=std)


@DATASETS.register("cifar10", input_size=32, family="cifar", in_channels=3, num_classes=10)
def _cifar10(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.1) -> DataSplits:
    """CIFAR-10 from ``data_dir/cifar-10-batches-py`` (no download); val = fixed stratified share of train."""
    how = "download the CIFAR-10 python version (https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz) and extract it there"
    train = [f"data_batch_{i}" for i in range(1, 6)]
    return _cifar("cifar10", data_dir, val_fraction, "cifar-10-batches-py", train, "test_batch", b"labels", 10, how,
                  CIFAR10_MEAN, CIFAR10_STD)


@DATASETS.register("cifar100", input_size=32, family="cifar", in_channels=3, num_classes=100)
def _cifar100(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.1) -> DataSplits:
    """CIFAR-100 (fine labels) from ``data_dir/cifar-100-python`` (no download); val = fixed stratified share of train."""
    how = "download the CIFAR-100 python version (https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz) and extract it there"
    return _cifar("cifar100", data_dir, val_fraction, "cifar-100-python", ["train"], "test", b"fine_labels", 100, how,
                  CIFAR100_MEAN, CIFAR100_STD)


def _load_images(samples: Sequence[Tuple[str, int]], image_size: int) -> Tuple[Tensor, Tensor]:
    """Decode (path, label) samples to RGB, centre-fit to image_size: (N, 3, S, S) uint8 and (N,) int64."""
    from PIL import Image, ImageOps

    x = np.empty((len(samples), image_size, image_size, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as im:
            x[i] = np.asarray(ImageOps.fit(im.convert("RGB"), (image_size, image_size), Image.BILINEAR))
    y = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), y


def _scan(folder: Path, class_to_idx: Dict[str, int] | None = None) -> Tuple[List[str], List[Tuple[str, int]]]:
    """(classes, [(path, label)]) of a folder of class sub-folders; raises one line when it has no images."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, found = find_classes(folder)
        samples = make_dataset(folder, class_to_idx or found, IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError:
        samples = []
    if not samples:
        raise DatasetNotFoundError(f"imagefolder: no images in class sub-folders of {folder} (expected {folder}/<class>/<image>.png)")
    extra = sorted(set(classes) - set(class_to_idx or found))
    if extra:
        raise ValueError(f"imagefolder: {folder} has classes missing from the training folder: {', '.join(extra)}")
    return classes, samples


@DATASETS.register("imagefolder", input_size=None, family="any", in_channels=3, num_classes=None)
def _imagefolder(data_dir: str | Path | None = None, seed: int = 0, val_fraction: float = 0.25, image_size: int = 32) -> DataSplits:
    """A folder of class sub-folders (optionally split into train/ val/ test/), resized to image_size, held as uint8.

    Missing val/ or test/ are carved from the training pool by a fixed stratified split
    (test: TEST_FRACTION of the pool, val: val_fraction of the rest).
    """
    if data_dir is None or not Path(data_dir).expanduser().is_dir():
        raise DatasetNotFoundError(f"imagefolder: data_dir={data_dir!r} is not a folder; point it at a folder of class sub-folders")
    root = Path(data_dir).expanduser()
    pool_dir = root / "train" if (root / "train").is_dir() else root
    classes, samples = _scan(pool_dir)
    class_to_idx = {c: i for i, c in enumerate(classes)}
    x, y = _load_images(samples, image_size)
    held: Dict[str, Tuple[Tensor, Tensor]] = {}
    for split in ("val", "test"):
        if pool_dir != root and (root / split).is_dir():
            held[split] = _load_images(_scan(root / split, class_to_idx)[1], image_size)
    if "test" not in held:
        keep, test = _fixed_split(y.numpy(), TEST_FRACTION)
        held["test"], (x, y) = (x[test], y[test]), (x[keep], y[keep])
    if "val" not in held:
        keep, val = _fixed_split(y.numpy(), val_fraction)
        held["val"], (x, y) = (x[val], y[val]), (x[keep], y[keep])
    parts = (x, y, *held["val"], *held["test"])
    return _splits("imagefolder", parts, len(classes), scale=255.0, augment="crop_flip")


@DATASETS.register("synthetic", input_size=None, family="any", in_channels=None, num_classes=None)
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
    return _splits("synthetic", parts, num_classes, scale=1.0, augment=augment)


# ----------------------------------------------------------------------------- loading batches


class Normalize(torch.nn.Module):
    """Raw images (uint8 or float, in the data set's range) -> the model's input: ``(x / scale - mean) / std``
    per channel, as ``x * mul - add`` in float32. The one normalisation of training, evaluation and an
    exported student's ``predict``, so all three see the same numbers bit for bit."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], scale: float) -> None:
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("mul", 1.0 / (scale * std_t))
        self.register_buffer("add", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t)

    def forward(self, x: Tensor) -> Tensor:
        return x.to(torch.float32) * self.mul - self.add


class TensorLoader:
    """Iterates (images, labels) batches of in-memory tensors: float32 normalised (B, C, H, W), int64 (B,).

    Each ``iter()`` is one epoch. Epoch ``e`` draws its order and augmentation from a generator
    seeded by (seed, e), so the same seed gives the same batches, and ``state_dict()`` (seed,
    epoch and that generator's state) restored into a fresh loader continues the identical next epoch.
    ``augment="crop_flip"``: RandomCrop(pad 4, zeros in raw pixel space) + horizontal flip, done for
    the whole batch by one gather.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, augment: str = "none",
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), scale: float = 1.0, seed: int = 0,
                 drop_last: bool = False, device: str | torch.device = "cpu") -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment: unknown {augment!r}; choose from: {', '.join(AUGMENTS)}")
        if batch_size < 1 or len(x) != len(y):
            raise ValueError(f"need batch_size >= 1 and len(x) == len(y); got {batch_size}, {len(x)}, {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.device = torch.device(device)
        self.seed, self.epoch = int(seed), 0
        self.generator = self._epoch_generator()
        self._normalize = Normalize(mean, std, scale).to(self.device)

    def _epoch_generator(self) -> torch.Generator:
        """A CPU generator for the current epoch, seeded from (seed, epoch)."""
        words = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        g = self.generator
        self.epoch += 1
        self.generator = self._epoch_generator()
        n = len(self.x)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        return self._batches(order, g)

    def _batches(self, order: Tensor, g: torch.Generator) -> Iterator[Tuple[Tensor, Tensor]]:
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb = self.x[idx].to(self.device, non_blocking=True)
            yb = self.y[idx].to(self.device, non_blocking=True)
            if self.augment == "crop_flip":
                xb = self._crop_flip(xb, g)
            yield self._normalize(xb), yb

    def _crop_flip(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Random crop of the zero-padded batch plus random horizontal flip, as one gather: (B, C, H, W) -> same."""
        b, c, h, w = x.shape
        p = CROP_PADDING
        offsets = torch.randint(2 * p + 1, (2, b), generator=g).to(x.device)
        flip = (torch.rand(b, generator=g) < 0.5).to(x.device)
        rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
        cols_idx = torch.arange(w, device=x.device)
        cols = offsets[1, :, None] + torch.where(flip[:, None], cols_idx.flip(0), cols_idx)  # (B, W)
        padded = F.pad(x, (p, p, p, p))
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]

    def state_dict(self) -> Dict[str, Any]:
        """Seed, epoch counter and the next epoch's generator state."""
        return {"seed": self.seed, "epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a ``state_dict()``: the next ``iter()`` yields the epoch the saved loader would have."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self.generator = self._epoch_generator()
        self.generator.set_state(state["generator"])


def make_loaders(splits: DataSplits, batch_size: int, seed: int, device: str | torch.device = "cpu",
                 eval_batch_size: int | None = None) -> Tuple[TensorLoader, TensorLoader, TensorLoader]:
    """(train, val, test) loaders: train shuffled and augmented as ``splits.augment``, eval ones plain and ordered.

    The train loader drops a last batch of a single sample (BatchNorm cannot train on it).
    """
    norm = dict(mean=splits.mean, std=splits.std, scale=splits.scale, device=device)
    train = TensorLoader(splits.train_x, splits.train_y, batch_size, shuffle=True, augment=splits.augment, seed=seed,
                         drop_last=len(splits.train_x) % batch_size == 1, **norm)
    eval_bs = eval_batch_size or batch_size
    val = TensorLoader(splits.val_x, splits.val_y, eval_bs, **norm)
    test = TensorLoader(splits.test_x, splits.test_y, eval_bs, **norm)
    return train, val, test
