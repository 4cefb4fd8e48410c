"""Streaming pipeline: our ``StreamLoader`` on photographs against its floor, torchvision's usual pipeline and DALI.

All read the same JPEGs (real photographs resized to ImageNet's ~500 x 375, quality 90: ``bench/_photos.py``, in
the ILSVRC layout) with the same DataLoader workers (the machine's CPUs) and batch 64; each is timed over its
second epoch (the first starts the workers and warms the page cache), the loaders taking turns, best of the
repeats:

- ours: ``tuner.core.data.stream.StreamLoader`` training batches: each crop drawn from the header's size, the JPEG
  decoded (simplejpeg, at a DCT scale where the crop allows) into channels-last pixels, RandomResizedCrop(224) +
  flip, then normalisation of the whole batch; float32 (64, 3, 224, 224) out.
- floor: the same files read and decoded whole by torchvision.io, nothing else (ratio target >= 1.0).
- baseline: ``torchvision.datasets.ImageFolder`` + PIL ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize`` (ratio target >= 2.0).
- beside them: ours without the normalisation (the uint8 batches a GPU trial copies to its GPU, which
  normalises there); the path before decoding only what the crop needs (torchvision.io's whole decode into
  (3, H, W) planes, resized there); DALI's CPU pipeline with the same crops (``decoders.image_slice``, resize,
  ``crop_mirror_normalize``) where ``nvidia.dali`` is installed; and how far our pixels are from the full
  decode's (mean absolute difference) on these files and on the photos at their own size, at 224 and at 112
  (where a crop window is often twice the output, so decoded at 1/2 or less).
- on a GPU, beside them: ``gpu_decode`` (the workers only read, each batch is decoded by nvJPEG and cropped on
  the GPU) against the same loader decoding on the CPU workers, both delivering to the GPU.

``python -m bench.stream_pipeline [--quick]``
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from bench._common import Row, scratch_dir, torch_threads

SCENARIO = "stream pipeline"
BATCH = 64


class _DecodeOnly:
    """The floor: read and decode each file, return its pixel count (nothing to collate)."""

    def __init__(self, paths: Any) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        from torchvision.io import ImageReadMode, decode_image, read_file

        return decode_image(read_file(self.paths[i]), mode=ImageReadMode.RGB).numel()


class _FullDecode:
    """The path before: torchvision.io decodes each file whole into (3, H, W) planes, cropped and resized there."""

    def __init__(self, paths: Any, size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, item: Tuple[int, int]) -> Tuple[Any, int]:
        import torchvision.transforms.v2.functional as TF
        from torchvision.io import ImageReadMode, decode_image, read_file

        from tuner.core.data.stream import train_crop

        index, seed = item
        image = decode_image(read_file(self.paths[index]), mode=ImageReadMode.RGB)
        box, flip = train_crop(image.shape[-2], image.shape[-1], seed)
        image = TF.resized_crop(image, *box, [self.size, self.size], antialias=True)
        return (TF.horizontal_flip(image) if flip else image), 0


class _Normalised:
    """Batches of a DataLoader of uint8 images, normalised in this process as ``StreamLoader`` does."""

    def __init__(self, loader: Any) -> None:
        from tuner.core.data.normalize import Normalize
        from tuner.core.data.stream import IMAGENET_MEAN, IMAGENET_STD

        self.loader, self.normalize = loader, Normalize(IMAGENET_MEAN, IMAGENET_STD, 255.0)

    def __iter__(self) -> Iterable:
        for x, y in self.loader:
            yield self.normalize(x), y


def _dali(paths: Any, size: int, workers: int) -> Optional[Callable[[], int]]:
    """One epoch of DALI's CPU pipeline (``num_threads`` = ``workers``) over ``paths`` with our crops and flips (the
    epoch-0 draws of seed 0), returning the images it made; None where ``nvidia.dali`` is not installed."""
    try:
        from nvidia.dali import fn, pipeline_def, types
    except ImportError:
        return None
    import numpy as np
    from PIL import Image

    from tuner.core.data.stream import IMAGENET_MEAN, IMAGENET_STD, sample_seeds, train_crop

    seeds = sample_seeds(len(paths), 0, 0)
    draws = []
    for path, seed in zip(paths, seeds):
        with Image.open(path) as im:
            draws.append(train_crop(im.size[1], im.size[0], int(seed)))

    def crops(info: Any) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        batch = [draws[(info.iteration * BATCH + k) % len(draws)] for k in range(BATCH)]
        return (np.array([b[:2] for b, _ in batch], dtype=np.float32), np.array([b[2:] for b, _ in batch], dtype=np.float32),
                np.array([int(f) for _, f in batch], dtype=np.int32))

    @pipeline_def(batch_size=BATCH, num_threads=workers, device_id=None, seed=0)
    def pipe() -> Any:
        jpegs, _ = fn.readers.file(files=list(paths), random_shuffle=False, name="files")
        anchor, shape, mirror = fn.external_source(source=crops, num_outputs=3, batch=True, batch_info=True)
        image = fn.decoders.image_slice(jpegs, anchor, shape, axis_names="HW", normalized_anchor=False,
                                        normalized_shape=False, output_type=types.RGB)
        image = fn.resize(image, size=[size, size], antialias=True)
        return fn.crop_mirror_normalize(image, mirror=mirror, mean=[m * 255 for m in IMAGENET_MEAN],
                                        std=[s * 255 for s in IMAGENET_STD], output_layout="CHW", dtype=types.FLOAT)

    pipeline = pipe()
    pipeline.build()

    def epoch() -> int:
        for _ in range(len(paths) // BATCH):
            pipeline.run()
        return len(paths) // BATCH * BATCH

    return epoch


def _second_epoch(make: Any) -> float:
    """Images/s of the second epoch of the loader ``make()`` builds (persistent workers), or of ``make`` itself
    where it is an epoch function (DALI)."""
    loader = make()
    if callable(loader):
        loader()
        start = time.perf_counter()
        return loader() / (time.perf_counter() - start)
    for _ in loader:
        pass
    seen, start = 0, time.perf_counter()
    for batch in loader:
        seen += len(batch[1]) if isinstance(batch, (tuple, list)) else len(batch)  # (x, y) or the floor's counts
    return seen / (time.perf_counter() - start)


def _timed(makers: Dict[str, Any], repeat: int) -> Dict[str, float]:
    """The best images/s of each loader over ``repeat`` rounds, the loaders taking turns in each round."""
    best: Dict[str, float] = {}
    for _ in range(repeat):
        for name, make in makers.items():
            best[name] = max(best.get(name, 0.0), _second_epoch(make))
    return best


def _gap_note(name: str, gaps: Dict[str, float]) -> str:
    return (f"{name}: train {gaps['train']:.2f} (scaled {gaps['train_scaled']:.2f}, {gaps['n_train_scaled']:.0f} of "
            f"{gaps['n_train']:.0f}), eval {gaps['eval']:.2f} (scaled {gaps['eval_scaled']:.2f}, "
            f"{gaps['n_eval_scaled']:.0f} of {gaps['n_eval']:.0f}), worst image {gaps['max_image']:.2f}")


def run(quick: bool) -> Row:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from bench._photos import native_photos, pixel_gap, write_photos
    from tuner.core.data import load_dataset
    from tuner.core.data.stream import IMAGENET_MEAN, IMAGENET_STD, StreamLoader, _EpochBatches

    n, repeat = (256, 1) if quick else (1024, 3)
    workers = max(1, len(os.sched_getaffinity(0)))
    with scratch_dir("stream") as tmp, torch_threads(1):
        root = Path(tmp)
        write_photos(root, n)
        write_photos(root, 10, seed=1, split="val")  # the layout wants a val/; not read here
        splits = load_dataset("imagenet", data_dir=root, val_fraction=0.01)
        files = splits.train
        paths = [files.path(i) for i in range(len(files))]

        def ours() -> Iterable:
            return StreamLoader(files, BATCH, 224, IMAGENET_MEAN, IMAGENET_STD, 255.0, train=True, seed=0, workers=workers)

        def ours_uint8() -> Iterable:  # the workers' batches alone: what a GPU trial copies before normalising there
            return ours()._loader

        def floor() -> Iterable:
            return DataLoader(_DecodeOnly(paths), batch_size=BATCH, shuffle=True, num_workers=workers,
                              persistent_workers=True, collate_fn=torch.tensor)

        def before() -> Iterable:
            return _Normalised(DataLoader(_FullDecode(paths, 224), batch_sampler=_EpochBatches(len(paths), BATCH, 0, True, 0, 1),
                                          num_workers=workers, persistent_workers=True, prefetch_factor=4))

        tv_transform = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                           transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

        def baseline() -> Iterable:
            return DataLoader(datasets.ImageFolder(str(root / "train"), tv_transform), batch_size=BATCH, shuffle=True,
                              num_workers=workers, persistent_workers=True)

        def ours_gpu_decode() -> Iterable:  # gpu_decode: the workers read, the GPU decodes the batch and crops
            return StreamLoader(files, BATCH, 224, IMAGENET_MEAN, IMAGENET_STD, 255.0, train=True, seed=0, workers=workers,
                                device="cuda", batch_decode=True)

        def ours_on_gpu() -> Iterable:  # the same GPU trial decoding on the CPU workers (gpu_decode: false)
            return StreamLoader(files, BATCH, 224, IMAGENET_MEAN, IMAGENET_STD, 255.0, train=True, seed=0, workers=workers,
                                device="cuda")

        x, _ = next(iter(ours()))
        assert x.shape == (BATCH, 3, 224, 224) and x.dtype == torch.float32, x.shape
        makers: Dict[str, Any] = {"ours": ours, "ours_uint8": ours_uint8, "floor": floor, "baseline": baseline, "before": before}
        dali = _dali(paths[: len(paths) // BATCH * BATCH], 224, workers)  # whole batches: its reader and our draws agree
        if dali is not None:
            makers["dali"] = lambda: dali
        if torch.cuda.is_available():
            makers.update(gpu_decode=ours_gpu_decode, cpu_decode_to_gpu=ours_on_gpu)
        figures = _timed(makers, repeat)
        photos = native_photos(root / "native")
        some = paths[:: max(1, len(paths) // (16 if quick else 64))]
        gaps = {(name, size): pixel_gap(where, size, seeds) for name, where, seeds in
                (("bench files", some, 4), ("photos at their size", photos, 16 if quick else 64)) for size in (224, 112)}
    per = {name: f"{v / workers:,.0f}" for name, v in figures.items()}
    note = (f"{len(files):,} photos ~500x375 q90, batch {BATCH}, {workers} DataLoader workers, 1 torch thread, "
            f"second epoch, best of {repeat}; img/s per worker: ours {per['ours']}, floor {per['floor']}, "
            f"baseline {per['baseline']}" + (f", DALI {per['dali']}" if "dali" in per else ""))
    row = Row(SCENARIO, figures["ours"], figures["baseline"], "img/s", ">= 2.0",
              note=f"{note}; baseline = torchvision ImageFolder + PIL RandomResizedCrop/flip/ToTensor/Normalize")
    row.beside.append(Row(f"{SCENARIO} vs decode only", figures["ours"], figures["floor"], "img/s", ">= 1.0",
                          note="floor = the same files through torchvision.io read_file + decode_image, no transform"))
    row.beside.append(Row(f"{SCENARIO}, uint8 batches vs decode only", figures["ours_uint8"], figures["floor"], "img/s", None,
                          note="the workers' batches before normalising (a GPU trial normalises on its GPU)"))
    row.beside.append(Row(f"{SCENARIO} vs before (whole decode)", figures["ours"], figures["before"], "img/s", None,
                          note="before = torchvision.io's whole decode into (3, H, W) planes, resized there, same crops"))
    if "dali" in figures:
        row.beside.append(Row(f"{SCENARIO} vs DALI CPU", figures["ours"], figures["dali"], "img/s", None,
                              note=f"DALI {_dali_version()}: decoders.image_slice with our crops, resize, "
                                   f"crop_mirror_normalize, {workers} threads"))
    else:
        row.beside.append(Row(f"{SCENARIO} vs DALI CPU", None, None, "img/s", None, skipped=True,
                              note="nvidia.dali is not installed (pip install nvidia-dali-cuda130): no anchor row"))
    for (name, size), g in gaps.items():
        row.beside.append(Row(f"{SCENARIO}, pixels vs whole decode, {size} px, {name}", g["train"], None, "levels", None,
                              note="mean absolute difference (uint8 levels) from the whole decode's images; "
                                   + _gap_note(name, g)))
    if "gpu_decode" in figures:
        row.beside.append(Row(f"{SCENARIO}, gpu_decode", figures["gpu_decode"], figures["cpu_decode_to_gpu"], "img/s", None,
                              note=f"{torch.cuda.get_device_name(0)}: batches decoded by nvJPEG and cropped on the GPU "
                                   "against the CPU workers' decode, both landing on the GPU; > 1: set gpu_decode: true"))
    return row


def _dali_version() -> str:
    from nvidia import dali

    return getattr(dali, "__version__", "?")


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "stream_pipeline", *sys.argv[1:]]))
