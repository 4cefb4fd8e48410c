"""Image files decoded as they are read: for data sets too big to hold decoded (ImageNet: ~190 GB at 224 px).

A ``StreamSplits`` holds file lists, not pixels. ``StreamLoader`` feeds a torch ``DataLoader`` whose
worker processes read each file and apply the ImageNet transforms: ``RandomResizedCrop`` + horizontal flip
for training, ``Resize`` + ``CenterCrop`` for evaluation. A 3-component JPEG is decoded only as far as its
crop needs (``jpeg_crop``: the crop drawn from the header's size, the decode at libjpeg-turbo's smallest DCT
scale that keeps the output's resolution), other files by torchvision.io or PIL. Normalisation runs on the
batch, on the trial's device, through the same ``Normalize`` as the in-memory path. The epoch's order and
every sample's crop are pure functions of (seed, epoch, sample), so a resumed trial sees the same batches,
and N ranks see disjoint shards of one epoch whose samples are transformed exactly as one rank would
(docs/architecture.md, "Data").
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from tuner.core.data.image_files import DEFAULT_MAX_IMAGE_PIXELS, TORCHVISION_SUFFIXES, header_size, pil_image, pixel_refusal
from tuner.core.data.jpeg_crop import dct_scale, decode_rgb, scaled_box
from tuner.core.data.normalize import Normalize
from tuner.core.data.splits import DatasetNotFoundError, fresh_val

__all__ = ["FileSplit", "StreamSplits", "StreamLoader", "epoch_order", "sample_seeds", "crop_box", "train_crop", "eval_resize",
           "transform", "load", "make_stream_loaders", "IMAGENET_MEAN", "IMAGENET_STD", "RRC_SCALE", "RRC_RATIO"]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RRC_SCALE, RRC_RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)  # torchvision's RandomResizedCrop defaults
EVAL_CROP = 0.875  # Resize(256) + CenterCrop(224): the crop is 7/8 of the resized shorter side
# torchvision 0.29 deprecates its decoders for TorchCodec, which has no wheel this project can require yet; the
# decoders work and are libjpeg-turbo's, so say it once in the docs, not once per image in every trial's log
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision are deprecated",
                        category=DeprecationWarning)
_TORCHVISION_DECODES = TORCHVISION_SUFFIXES  # the rest (bmp, tif, ppm ...) go through PIL


@dataclass(frozen=True, eq=False)
class FileSplit:
    """One split's files: paths relative to ``root`` as a compact bytes array (N,), labels int64 (N,).

    Bytes, not Python strings: 1.28 M ImageNet paths pickle into Ray's object store as ~40 MB, not ~100 MB.
    """

    root: str
    paths: np.ndarray = field(repr=False)
    labels: Tensor = field(repr=False)

    @classmethod
    def of(cls, root: str | Path, samples: Sequence[Tuple[str, int]]) -> "FileSplit":
        """From ``(absolute path, label)`` pairs under ``root``."""
        root = Path(root)
        rel = [str(Path(p).relative_to(root)).encode() for p, _ in samples]
        return cls(str(root), np.array(rel, dtype=bytes), torch.tensor([y for _, y in samples], dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        return str(Path(self.root) / self.paths[i].decode())


@dataclass(frozen=True, eq=False)
class StreamSplits:
    """Fixed train/val/test file lists of one data set plus what its loaders and an export need.

    The metadata fields mean what ``DataSplits``' do: images come out (3, image_size, image_size),
    normalised as ``(x / scale - mean) / std``. ``class_index`` (K,) are the source labels of the
    classes kept when a ``class_subset`` was asked (a teacher trained on all classes keeps those rows).
    ``max_pixels``: the decoders refuse an image whose header gives more (``max_image_pixels``).
    """

    train: FileSplit
    val: FileSplit
    test: FileSplit
    num_classes: int
    image_size: int
    name: str
    mean: Tuple[float, ...] = IMAGENET_MEAN
    std: Tuple[float, ...] = IMAGENET_STD
    class_index: Optional[Tuple[int, ...]] = None
    in_channels: int = 3
    scale: float = 255.0
    augment: str = "resized_crop_flip"
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def with_val_seed(self, seed: int) -> "StreamSplits":
        """The same files with train + val re-split by ``seed`` (``splits.fresh_val``); test unchanged."""
        if self.train.root != self.val.root:  # ImageNet's official val folder: a split of its own, kept
            return self
        train, val = fresh_val(self.train.labels, self.val.labels, seed)
        paths = np.concatenate([self.train.paths, self.val.paths])
        labels = torch.cat([self.train.labels, self.val.labels])
        return dataclasses.replace(self, train=FileSplit(self.train.root, paths[train], labels[train]),
                                   val=FileSplit(self.train.root, paths[val], labels[val]))

    def fingerprint(self) -> str:
        """Blake2b hex digest of the metadata and the three splits' paths and labels (not their pixels:
        reading 1.28 M files to key a teacher cache would cost minutes)."""
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((self.name, self.num_classes, self.image_size, self.mean, self.std, self.class_index)).encode())
        for key in ("train", "val", "test"):
            split = getattr(self, key)
            h.update(f"{key}:{split.root}:{len(split)};".encode())
            h.update(b"\0".join(split.paths.tolist()))
            h.update(split.labels.numpy().tobytes())
        return h.hexdigest()


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool, rank: int = 0, world: int = 1, pad: bool = True) -> np.ndarray:
    """The sample indices rank ``rank`` of ``world`` reads in epoch ``epoch``, a pure function of its arguments.

    The epoch's permutation (identity when not ``shuffle``) is dealt round-robin to the ranks, as torch's
    DistributedSampler does; with ``pad`` it first wraps round to a multiple of ``world`` so every rank
    takes the same number of steps (training), without it the shards cover the epoch once (evaluation).
    """
    if shuffle:
        order = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, epoch]))).permutation(n)
    else:
        order = np.arange(n)
    if pad and world > 1 and n % world:
        order = np.concatenate([order, order[: world - n % world]])
    return order[rank::world]


def sample_seeds(n: int, seed: int, epoch: int) -> np.ndarray:
    """(n,) uint32: the augmentation seed of each sample in epoch ``epoch``, whoever reads it."""
    return np.random.SeedSequence([seed, epoch, 1]).generate_state(n)


def crop_box(height: int, width: int, g: torch.Generator,
             scale: Tuple[float, float] = RRC_SCALE, ratio: Tuple[float, float] = RRC_RATIO) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of a random resized crop: torchvision's ``RandomResizedCrop.get_params`` rule (10 tries
    at a random area and log-uniform aspect ratio, then the centred crop of the clamped ratio), drawn from
    ``g`` instead of the global RNG so that a sample's crop depends on its seed alone."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))  # float32 like torchvision's, so the same draws give the same box
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale[0], scale[1], generator=g).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)).item()
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=g).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=g).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def eval_resize(image_size: int) -> int:
    """Shorter side an eval image is resized to before its centre crop: 256 for 224."""
    return int(round(image_size / EVAL_CROP))


def train_crop(height: int, width: int, seed: int) -> Tuple[Tuple[int, int, int, int], bool]:
    """(crop box, flip?) of a training sample of an image of ``height`` x ``width``: drawn from ``seed`` alone, the
    box first, so a header's size gives the box a decoded image's shape would."""
    g = torch.Generator().manual_seed(int(seed))  # on the CPU wherever the image is: the same draws
    box = crop_box(height, width, g)
    return box, torch.rand(1, generator=g).item() < 0.5


def _check_pixels(path: str, head: bytes, limit: int) -> Optional[Tuple[str, int, int]]:
    """The one pixel limit of every decoder (``max_image_pixels``, docs/architecture.md "Data"): the size from the
    header of ``head`` (the whole file: a frame header may follow 20 KB of EXIF), before decoding; past it, one line
    naming the file, size and field. Returns the header's (format, width, height), None if header_size cannot."""
    found = size = header_size(head)
    if size is None:  # a format or header header_size does not read: PIL's lazy open reads the header alone
        try:
            with pil_image().open(io.BytesIO(head)) as im:
                size = (im.format, *im.size)
        except Exception:
            return None  # not an image: the decoder's own one-line error names the file
    why = pixel_refusal(size[1], size[2], limit)
    if why:
        raise DatasetNotFoundError(f"data_dir: {path} {why}")
    return found


def _read(path: str, max_pixels: int) -> Tuple[bytes, Optional[Tuple[str, int, int]]]:
    """The bytes of one file within the pixel limit, and its header's (format, width, height) (``_check_pixels``);
    failing, one line naming it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetNotFoundError(f"data_dir: cannot decode {path} ({e.strerror or type(e).__name__})") from None
    return data, _check_pixels(path, data, max_pixels)


def _decode(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, data: Optional[bytes] = None) -> Tensor:
    """(3, H, W) uint8 RGB of one image file (its bytes ``data`` when read already, checked); any failure is one
    line naming the file."""
    from torchvision.io import ImageReadMode, decode_image

    try:
        if data is None:
            data, _ = _read(path, max_pixels)
        if Path(path).suffix.lower() in _TORCHVISION_DECODES:
            return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        from torchvision.transforms.v2.functional import pil_to_tensor

        with pil_image().open(io.BytesIO(data)) as im:
            return pil_to_tensor(im.convert("RGB"))
    except DatasetNotFoundError:
        raise
    except Exception as e:  # torchvision raises RuntimeError, PIL OSError/ValueError: all mean "not an image"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DatasetNotFoundError(f"data_dir: cannot decode {path} ({first})") from None


def _resized(image: Tensor, size: int, box: Optional[Tuple[int, int, int, int]] = None, flip: bool = False) -> Tensor:
    """(3, S, S) of ``image``: the crop ``box`` resized to S and flipped if ``flip``, or with no box the eval crop.
    On the CPU the pixels resized are made channels-last first: torch's uint8 antialiased resize reads those
    1.3-1.6x faster than (3, H, W) planes, the same numbers (docs/architecture.md, "Data"); the result stays so."""
    import torchvision.transforms.v2.functional as TF

    if box is not None:
        top, left, h, w = box
        image = image[..., top : top + h, left : left + w]
    if image.device.type == "cpu":
        image = image[None].contiguous(memory_format=torch.channels_last)[0]
    if box is None:
        return TF.center_crop(TF.resize(image, [eval_resize(size)], antialias=True), [size, size])
    image = TF.resize(image, [size, size], antialias=True)
    return TF.horizontal_flip(image) if flip else image


def transform(image: Tensor, size: int, train: bool, seed: int) -> Tensor:
    """(3, S, S) uint8 of one decoded (3, H, W) uint8 image, on its device: train crops from ``seed``, eval
    crops centred."""
    return _resized(image, size, *train_crop(image.shape[-2], image.shape[-1], seed)) if train else _resized(image, size)


def load(path: str, size: int, train: bool, seed: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Tensor:
    """``transform(_decode(path), size, train, seed)`` read only as far as it needs: a 3-component JPEG's crop comes
    from its header's size and is decoded at the smallest DCT scale that keeps ``size`` pixels a side over the
    window (``jpeg_crop``); every other file, and one libjpeg-turbo refuses, through ``_decode``."""
    data, found = _read(path, max_pixels)
    if found is not None and found[0] == "JPEG":
        _, width, height = found
        box, flip = train_crop(height, width, seed) if train else (None, False)
        scale = dct_scale(box[2], box[3], size) if box else dct_scale(height, width, eval_resize(size))
        image = decode_rgb(data, height, width, scale)
        if image is not None:
            return _resized(image, size, box and scaled_box(box, scale), flip)
    return transform(_decode(path, max_pixels, data), size, train, seed)


class _Decoded(torch.utils.data.Dataset):
    """Item ``(index, seed)`` -> ``(image (3, S, S) uint8, label)``, decoded and transformed in the worker; with
    ``encoded``, ``(the file's bytes (L,) uint8, seed, label)``, for the loader to decode the batch itself."""

    def __init__(self, split: FileSplit, image_size: int, train: bool, encoded: bool = False,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        self.split, self.size, self.train, self.encoded, self.max_pixels = split, image_size, train, encoded, max_pixels

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, item: Tuple[int, int]) -> Tuple[Any, ...]:
        index, seed = item
        label = int(self.split.labels[index])
        if self.encoded:  # plain bytes: pickled whole to the loader (one shared-memory file per tensor hung it)
            data, _ = _read(self.split.path(index), self.max_pixels)
            return bytearray(data), seed, label
        return load(self.split.path(index), self.size, self.train, seed, self.max_pixels), label


def _image_batch(items: List[Tuple[Tensor, int]]) -> Tuple[Tensor, Tensor]:
    """(B, 3, S, S) uint8 channels-last and (B,) int64 of a batch of images: stacked as (S, S, 3) rows, a copy of
    each channels-last image's memory (as planes, a transpose: up to twice the time, docs/architecture.md "Data")."""
    images, labels = zip(*items)
    pixels = torch.utils.data.default_collate([im.permute(1, 2, 0) for im in images])  # shared memory in a worker
    return pixels.permute(0, 3, 1, 2), torch.tensor(labels, dtype=torch.int64)


def _encoded_batch(items: List[Tuple[bytearray, int, int]]) -> Tuple[List[bytearray], List[int], Tensor]:
    """A batch of files' bytes kept as a list (their lengths differ), their seeds and labels."""
    data, seeds, labels = zip(*items)
    return list(data), list(seeds), torch.tensor(labels, dtype=torch.int64)


class _EpochBatches:
    """The DataLoader's batch sampler: lists of ``(index, seed)`` of the epoch ``epoch`` names (set per epoch).

    Training shards are padded to equal length, and a last batch of one sample is dropped (BatchNorm cannot
    train on it); evaluation shards cover the split once, every batch kept.
    """

    def __init__(self, n: int, batch_size: int, seed: int, train: bool, rank: int, world: int) -> None:
        self.n, self.batch_size, self.seed, self.train = n, batch_size, seed, train
        self.rank, self.world, self.epoch = rank, world, 0
        shard = -(-n // world) if train else len(range(rank, n, world))
        self.steps = -(-shard // batch_size) - (train and shard % batch_size == 1 and shard > 1)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        order = epoch_order(self.n, self.seed, self.epoch, self.train, self.rank, self.world, pad=self.train)
        seeds = sample_seeds(self.n, self.seed, self.epoch) if self.train else None  # eval crops draw nothing
        for i in range(self.steps):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield [(int(j), int(seeds[j]) if seeds is not None else 0) for j in idx]


class StreamLoader:
    """Iterates normalised float32 (B, 3, S, S) and int64 (B,) batches of files, decoded by ``workers`` processes
    (channels-last in memory where the workers decode: as the resize made them, as GPU convolutions take them).

    Each ``iter()`` is one epoch; ``state_dict()`` (seed and epoch) restored into a fresh loader continues
    with the next epoch's identical batches. ``rank``/``world`` read one shard of each epoch (DDP).
    Workers persist across epochs (``persistent``) for the splits read every epoch, and memory is pinned
    for a CUDA device so the copy overlaps the step.

    ``batch_decode``: the workers only read the files, and each batch of JPEGs is decoded at once on
    ``device`` (torchvision's nvJPEG decode on a GPU), then cropped there with the same draws.
    """

    def __init__(self, split: FileSplit, batch_size: int, image_size: int, mean: Sequence[float], std: Sequence[float],
                 scale: float, train: bool = False, seed: int = 0, workers: int = 0, device: str | torch.device = "cpu",
                 rank: int = 0, world: int = 1, persistent: bool = True, batch_decode: bool = False,
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if batch_size < 1 or not 0 <= rank < world:
            raise ValueError(f"need batch_size >= 1 and 0 <= rank < world; got {batch_size}, {rank}, {world}")
        if batch_decode and not all(Path(p.decode()).suffix.lower() in (".jpg", ".jpeg") for p in split.paths):
            raise DatasetNotFoundError(f"gpu_decode: {split.root} holds files other than JPEGs, which only the "
                                       "CPU decodes; set gpu_decode: false")
        self.device = torch.device(device)
        self.seed, self.epoch = int(seed), 0
        self.size, self.train, self.batch_decode = image_size, train, batch_decode
        self._batches = _EpochBatches(len(split), batch_size, self.seed, train, rank, world)
        self._loader = torch.utils.data.DataLoader(
            _Decoded(split, image_size, train, encoded=batch_decode, max_pixels=max_pixels), batch_sampler=self._batches,
            num_workers=workers, persistent_workers=persistent and workers > 0,
            pin_memory=self.device.type == "cuda" and not batch_decode,
            prefetch_factor=4 if workers > 0 else None, collate_fn=_encoded_batch if batch_decode else _image_batch)
        self._normalize = Normalize(mean, std, scale).to(self.device)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        self._batches.epoch = self.epoch  # read when the DataLoader's iterator starts, in this process
        self.epoch += 1
        for batch in self._loader:
            x, y = self._decode_batch(*batch) if self.batch_decode else batch
            yield self._normalize(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)

    def _decode_batch(self, data: List[bytearray], seeds: List[int], labels: Tensor) -> Tuple[Tensor, Tensor]:
        """(B, 3, S, S) uint8 on the device of a batch of JPEG bytes: one batched decode, then each image's crop."""
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            images = decode_jpeg([torch.frombuffer(b, dtype=torch.uint8) for b in data], mode=ImageReadMode.RGB,
                                 device=self.device)
        except RuntimeError as e:
            raise DatasetNotFoundError(f"data_dir: cannot decode a JPEG of this batch ({str(e).splitlines()[0][:200]})") from None
        return torch.stack([transform(im, self.size, self.train, seed) for im, seed in zip(images, seeds)]), labels

    def state_dict(self) -> Dict[str, Any]:
        """Seed and the number of epochs begun: all the next epoch's order and crops depend on."""
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self._batches.seed = self.seed


def make_stream_loaders(splits: StreamSplits, batch_size: int, seed: int, device: str | torch.device = "cpu",
                        eval_batch_size: int | None = None, workers: int = 0, rank: int = 0, world: int = 1,
                        batch_decode: bool = False) -> Tuple[StreamLoader, StreamLoader, StreamLoader]:
    """(train, val, test) loaders of a ``StreamSplits``; the test split's workers start only when it is read."""
    common = dict(image_size=splits.image_size, mean=splits.mean, std=splits.std, scale=splits.scale,
                  workers=workers, device=device, rank=rank, world=world, batch_decode=batch_decode,
                  max_pixels=splits.max_pixels)
    train = StreamLoader(splits.train, batch_size, train=True, seed=seed, **common)
    eval_bs = eval_batch_size or batch_size
    val = StreamLoader(splits.val, eval_bs, **common)
    test = StreamLoader(splits.test, eval_bs, persistent=False, **common)
    return train, val, test
