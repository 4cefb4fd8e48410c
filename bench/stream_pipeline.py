"""Streaming pipeline: our ``StreamLoader`` on JPEG files against its floor and against torchvision's usual pipeline.

All three read the same JPEGs (ImageNet-sized, ~500 x 375, quality 90, in the ILSVRC layout) with the same
DataLoader workers (the machine's CPUs) and batch 64, and each is timed over its second epoch (the
first starts the workers and warms the page cache):

- ours: ``tuner.core.data.stream.StreamLoader`` training batches: torchvision.io decode, RandomResizedCrop(224) +
  flip per image, then normalisation of the whole batch; float32 (64, 3, 224, 224) out.
- floor: the same files read and decoded by torchvision.io, nothing else (ratio target >= 0.85).
- baseline: ``torchvision.datasets.ImageFolder`` + PIL ``RandomResizedCrop(224)``, ``RandomHorizontalFlip``,
  ``ToTensor``, ``Normalize`` (ratio target >= 1.2).
- on a GPU, beside them: ``gpu_decode`` (the workers only read, each batch is decoded by nvJPEG and cropped on
  the GPU) against the same loader decoding on the CPU workers, both delivering to the GPU.

``python -m bench.stream_pipeline [--quick]``
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Tuple

from bench._common import Row, scratch_dir, torch_threads

SCENARIO = "stream pipeline"
BATCH = 64


def write_jpegs(root: Path, n: int, classes: int = 10) -> None:
    """``n`` ImageNet-sized JPEGs of smooth noise (so they compress like photos) in ``root/train/<wnid>/``."""
    import torch
    import torch.nn.functional as F
    from torchvision.io import write_jpeg

    g = torch.Generator().manual_seed(0)
    for i in range(n):
        folder = root / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in torch.randint(300, 501, (2,), generator=g))
        coarse = torch.rand(1, 3, h // 16 + 1, w // 16 + 1, generator=g)
        image = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
        image = (image * 200 + torch.rand(3, h, w, generator=g) * 55).to(torch.uint8)
        write_jpeg(image, str(folder / f"{i}.JPEG"), quality=90)


class _DecodeOnly:
    """The floor: read and decode each file, return its pixel count (nothing to collate)."""

    def __init__(self, paths: Any) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        from torchvision.io import ImageReadMode, decode_image, read_file

        return decode_image(read_file(self.paths[i]), mode=ImageReadMode.RGB).numel()


def _second_epoch(make: Any) -> Tuple[float, Any]:
    """(images/s of the second epoch, the loader): ``make()`` builds a loader with persistent workers."""
    loader = make()
    for _ in loader:
        pass
    seen, start = 0, time.perf_counter()
    for batch in loader:
        seen += len(batch[1]) if isinstance(batch, (tuple, list)) else len(batch)  # (x, y) or the floor's counts
    return seen / (time.perf_counter() - start), loader


def _best(make: Any, repeat: int) -> float:
    return max(_second_epoch(make)[0] for _ in range(repeat))


def run(quick: bool) -> Row:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from tuner.core.data import load_dataset
    from tuner.core.data.stream import IMAGENET_MEAN, IMAGENET_STD, StreamLoader

    n, repeat = (256, 1) if quick else (2048, 2)
    workers = max(1, len(os.sched_getaffinity(0)))
    with scratch_dir("stream") as tmp, torch_threads(1):
        root = Path(tmp)
        write_jpegs(root, n)
        (root / "val").symlink_to(root / "train")  # the layout wants a val/; not read here
        splits = load_dataset("imagenet", data_dir=root, val_fraction=0.01)
        files = splits.train
        paths = [files.path(i) for i in range(len(files))]

        def ours() -> Iterable:
            return StreamLoader(files, BATCH, 224, IMAGENET_MEAN, IMAGENET_STD, 255.0, train=True, seed=0, workers=workers)

        def floor() -> Iterable:
            return DataLoader(_DecodeOnly(paths), batch_size=BATCH, shuffle=True, num_workers=workers,
                              persistent_workers=True, collate_fn=torch.tensor)

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
        makers = [("ours", ours), ("floor", floor), ("baseline", baseline)]
        if torch.cuda.is_available():
            makers += [("gpu_decode", ours_gpu_decode), ("cpu_decode_to_gpu", ours_on_gpu)]
        figures = {name: _best(make, repeat) for name, make in makers}
    note = (f"{len(files):,} JPEGs ~400x400 q90, batch {BATCH}, {workers} DataLoader workers, 1 torch thread, "
            f"second epoch, best of {repeat}")
    row = Row(SCENARIO, figures["ours"], figures["baseline"], "img/s", ">= 1.2",
              note=f"{note}; baseline = torchvision ImageFolder + PIL RandomResizedCrop/flip/ToTensor/Normalize")
    row.beside.append(Row(f"{SCENARIO} vs decode only", figures["ours"], figures["floor"], "img/s", ">= 0.85",
                          note="floor = the same files through torchvision.io read_file + decode_image, no transform"))
    if "gpu_decode" in figures:
        row.beside.append(Row(f"{SCENARIO}, gpu_decode", figures["gpu_decode"], figures["cpu_decode_to_gpu"], "img/s", None,
                              note=f"{torch.cuda.get_device_name(0)}: batches decoded by nvJPEG and cropped on the GPU "
                                   "against the CPU workers' decode, both landing on the GPU; > 1: set gpu_decode: true"))
    return row


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "stream_pipeline", *sys.argv[1:]]))
