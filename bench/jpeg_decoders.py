"""Which JPEG decoder the streamed loader uses: each candidate's time for a photo's training crop, one thread.

``python -m bench.jpeg_decoders [--files N] [--rounds R]`` (apart from the suite, like ``distill_quality``): on
``N`` ImageNet-sized photos (``bench/_photos.py``), milliseconds a file (median over ``R`` rounds, the
candidates taking turns in each) to decode it alone, and to decode it and make its 224 px and 112 px
RandomResizedCrop (the same boxes and flips for every candidate: ``stream.train_crop``), uint8 out:

- torchvision: ``decode_image`` of the whole file into (3, H, W) planes, resized there (the loader before);
- torchvision, channels-last: the same decode, the crop made channels-last before the resize;
- simplejpeg: decode into (H, W, 3) rows at the DCT scale the crop allows, resized channels-last (the loader now);
- Pillow: ``draft`` (its DCT scale) and the whole decode, the crop's rows to a tensor, resized channels-last;
- Pillow, stopped: the same, the decode stopped after the crop's last row (``LOAD_TRUNCATED_IMAGES``, the only way
  Pillow allows, which also swallows a real error);
- PyTurboJPEG where it loads (its 2.x needs the system's libturbojpeg 3; Debian 12 ships 2.1).

Then the steps around the decode, ms an image: the resize from planes and from rows, stacking a batch as
planes and as rows, normalising it held as planes and channels-last (along rows, and by channel).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

Box = Tuple[Tuple[int, int, int, int], bool]


def _resize(image: Any, box: Tuple[int, int, int, int], flip: bool, size: int, scale: int = 1) -> Any:
    """The loader's crop of ``image`` (decoded at 1/``scale``), channels-last, as ``stream._resized`` makes it."""
    from tuner.core.data.jpeg_crop import scaled_box
    from tuner.core.data.stream import _resized

    return _resized(image, size, scaled_box(box, scale), flip)


def _candidates() -> Dict[str, Callable[[bytes, Box, int], Any]]:
    """name -> f(file bytes, (box, flip), size): the uint8 crop (size 0: decode alone)."""
    import simplejpeg
    import torch
    import torchvision.transforms.v2.functional as TF
    from PIL import Image, ImageFile
    from torchvision.io import ImageReadMode, decode_image

    from tuner.core.data.jpeg_crop import dct_scale, decode_rgb, scaled_box

    def tv(data: bytes, draw: Box, size: int) -> Any:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        if not size:
            return image
        image = TF.resized_crop(image, *draw[0], [size, size], antialias=True)
        return TF.horizontal_flip(image) if draw[1] else image

    def tv_cl(data: bytes, draw: Box, size: int) -> Any:
        image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        return _resize(image, *draw, size) if size else image

    def sj(data: bytes, draw: Box, size: int) -> Any:
        height, width = simplejpeg.decode_jpeg_header(data)[:2]
        scale = dct_scale(draw[0][2], draw[0][3], size) if size else 1
        image = decode_rgb(data, height, width, scale)
        return _resize(image, *draw, size, scale) if size else image

    def pil(data: bytes, draw: Box, size: int, stop: bool = False) -> Any:
        (top, left, h, w), flip = draw
        im = Image.open(io.BytesIO(data))
        scale = dct_scale(h, w, size) if size else 1
        im.draft("RGB", (im.size[0] // scale, im.size[1] // scale))
        t0, l0, h0, w0 = scaled_box((top, left, h, w), scale)
        if stop:
            tile = im.tile[0]
            im.tile = [ImageFile._Tile(tile[0], (0, 0, im.size[0], t0 + h0), tile[2], tile[3])]
            im._size = (im.size[0], t0 + h0)
            ImageFile.LOAD_TRUNCATED_IMAGES = True
        try:
            im.load()
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        if not size:
            return np.asarray(im)
        rows = torch.from_numpy(np.array(im.crop((l0, t0, l0 + w0, t0 + h0)))).permute(2, 0, 1)
        return _resize(rows, (0, 0, h0, w0), flip, size)

    out: Dict[str, Callable[[bytes, Box, int], Any]] = {
        "torchvision (before)": tv, "torchvision, channels-last": tv_cl, "simplejpeg (now)": sj, "Pillow": pil,
        "Pillow, stopped": lambda data, draw, size: pil(data, draw, size, stop=True)}
    turbo = _turbojpeg()
    if turbo is not None:
        def pyturbojpeg(data: bytes, draw: Box, size: int) -> Any:
            from turbojpeg import TJPF_RGB

            height, width = simplejpeg.decode_jpeg_header(data)[:2]
            scale = dct_scale(draw[0][2], draw[0][3], size) if size else 1
            image = torch.from_numpy(turbo.decode(data, pixel_format=TJPF_RGB, scaling_factor=(1, scale))).permute(2, 0, 1)
            return _resize(image, *draw, size, scale) if size else image

        out["PyTurboJPEG"] = pyturbojpeg
    return out


def _turbojpeg() -> Optional[Any]:
    """A ``TurboJPEG`` decoder, or None (with why on stderr) where PyTurboJPEG or its library is missing."""
    try:
        from turbojpeg import TurboJPEG

        return TurboJPEG()
    except Exception as e:
        print(f"PyTurboJPEG: not measured ({type(e).__name__}: {str(e).strip().splitlines()[0][:120]})", file=sys.stderr)
        return None


def measure(paths: List[str], rounds: int) -> Dict[str, Dict[int, float]]:
    """name -> {0 (decode alone), 224, 112: median ms a file}; checks every candidate's 224 px crop against the
    loader's first (the same pixels, or within a level where it decodes otherwise)."""
    from PIL import Image

    from tuner.core.data.stream import load, train_crop

    datas = [Path(p).read_bytes() for p in paths]
    draws: List[Box] = []
    for i, data in enumerate(datas):
        with Image.open(io.BytesIO(data)) as im:
            draws.append(train_crop(im.size[1], im.size[0], i))
    candidates = _candidates()
    reference = load(paths[0], 224, True, 0).float()
    for name, f in candidates.items():
        gap = (f(datas[0], draws[0], 224).float() - reference).abs().mean().item()
        assert gap < 1.0, (name, gap)
    times: Dict[str, Dict[int, List[float]]] = {name: {0: [], 224: [], 112: []} for name in candidates}
    with _one_thread():
        for _ in range(rounds):
            for size in (0, 224, 112):
                for name, f in candidates.items():
                    start = time.process_time()
                    for data, draw in zip(datas, draws):
                        f(data, draw, size)
                    times[name][size].append((time.process_time() - start) / len(datas) * 1e3)
    return {name: {size: float(np.median(v)) for size, v in by.items()} for name, by in times.items()}


def layouts(paths: List[str], rounds: int) -> Dict[str, float]:
    """Milliseconds an image, one thread: the 224 px resize of each photo's training crop from (3, H, W) planes
    and from (H, W, 3) rows (the crop copied channels-last first, as the loader does), stacking 64 such crops as
    planes and as rows, and normalising that batch held as planes and held channels-last (as ``Normalize`` does, along
    rows, and by broadcasting each channel's constants)."""
    import torch
    import torchvision.transforms.v2.functional as TF

    from tuner.core.data.normalize import Normalize
    from tuner.core.data.stream import IMAGENET_MEAN, IMAGENET_STD, _decode, _image_batch, _resized, train_crop

    planes = [_decode(p) for p in paths]
    rows = [im.permute(1, 2, 0).contiguous().permute(2, 0, 1) for im in planes]
    draws = [train_crop(im.shape[-2], im.shape[-1], i) for i, im in enumerate(planes)]
    crops = [_resized(im, 224, *draw) for im, draw in zip(rows[:64], draws)]
    batch = _image_batch([(c, 0) for c in crops])[0]
    planar = batch.contiguous()
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, 255.0)
    cases: Dict[str, Tuple[Callable[[], Any], int]] = {
        "resize from planes": (lambda: [TF.resized_crop(im, *d[0], [224, 224], antialias=True) for im, d in zip(planes, draws)],
                               len(planes)),
        "resize from rows": (lambda: [_resized(im, 224, d[0]) for im, d in zip(rows, draws)], len(rows)),
        "stack as planes": (lambda: torch.stack(crops), len(crops)),
        "stack as rows": (lambda: _image_batch([(c, 0) for c in crops]), len(crops)),
        "normalise planes": (lambda: normalize(planar), len(crops)),
        "normalise channels-last": (lambda: normalize(batch), len(crops)),
        "normalise channels-last by channel": (lambda: batch.to(torch.float32, copy=True).mul_(normalize.mul).sub_(normalize.add),
                                               len(crops))}
    times: Dict[str, List[float]] = {name: [] for name in cases}
    with _one_thread():
        for _ in range(rounds):
            for name, (f, n) in cases.items():
                start = time.process_time()
                f()
                times[name].append((time.process_time() - start) / n * 1e3)
    return {name: float(np.median(v)) for name, v in times.items()}


class _one_thread:
    def __enter__(self) -> None:
        import torch

        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *_: Any) -> None:
        import torch

        torch.set_num_threads(self.before)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.jpeg_decoders", description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=200)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    from bench._common import scratch_dir
    from bench._photos import write_photos

    with scratch_dir("decoders") as tmp:
        write_photos(Path(tmp), args.files)
        paths = sorted(str(f) for f in Path(tmp).rglob("*.JPEG"))
        figures = measure(paths, args.rounds)
        steps = layouts(paths, args.rounds)
    base = figures["torchvision (before)"]
    print(f"{len(paths)} photos ~500x375 q90, one thread, ms a file (median of {args.rounds} rounds); "
          "ratio = torchvision (before) / this")
    print(f"{'decoder':28s} {'decode':>8s} {'crop 224':>9s} {'crop 112':>9s} {'ratio 224':>10s} {'ratio 112':>10s}")
    for name, by in figures.items():
        print(f"{name:28s} {by[0]:8.3f} {by[224]:9.3f} {by[112]:9.3f} {base[224] / by[224]:10.2f} {base[112] / by[112]:10.2f}")
    print("ms an image (224 px crops): " + ", ".join(f"{name} {v:.3f}" for name, v in steps.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
