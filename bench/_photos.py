"""Real photographs for the streaming bench, and how far the streamed loader's pixels are from a full decode's.

The photos are those packages ship: scikit-learn's two sample images (china.jpg, flower.jpg, 640 x 427), and
scikit-image's astronaut, coffee, chelsea and rocket where scikit-image is installed. ``write_photos`` makes
ImageNet-sized files of them (~500 x 375, quality 90, a random crop and flip of one photo each), since
smooth-noise JPEGs compress unlike photos; ``pixel_gap`` measures the loader against today's reference path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["sample_photos", "write_photos", "native_photos", "pixel_gap"]

_SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket")


def sample_photos() -> List[Tuple[str, np.ndarray]]:
    """(name, (H, W, 3) uint8) of every sample photograph an installed package ships."""
    from sklearn.datasets import load_sample_images

    found = load_sample_images()
    photos = [(Path(f).stem, image) for f, image in zip(found.filenames, found.images)]
    try:
        from skimage import data
    except ImportError:
        return photos
    for name in _SKIMAGE:
        try:
            image = np.asarray(getattr(data, name)())
        except Exception:  # a photo this scikit-image would download first: not here
            continue
        if image.ndim == 3 and image.shape[2] >= 3:
            photos.append((name, np.ascontiguousarray(image[..., :3])))
    return photos


def write_photos(root: Path, n: int, classes: int = 10, seed: int = 0, split: str = "train") -> None:
    """``n`` ImageNet-sized JPEGs in ``root/<split>/<wnid>/``: each a random crop (60-100% of each side) of one
    sample photo, flipped half the time, resized to 500 x 375 (a quarter 375 x 500), saved at quality 90."""
    from PIL import Image

    photos = [image for _, image in sample_photos()]
    rng = np.random.default_rng(seed)
    for i in range(n):
        source = photos[i % len(photos)]
        height, width = source.shape[:2]
        h, w = (int(side * rng.uniform(0.6, 1.0)) for side in (height, width))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        image = Image.fromarray(source[top : top + h, left : left + w])
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        folder = root / split / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        image.resize((500, 375) if rng.random() < 0.75 else (375, 500), Image.Resampling.BICUBIC).save(
            folder / f"{i}.JPEG", quality=90)


def native_photos(folder: Path) -> List[str]:
    """The sample photos at their own size as JPEG files (quality 90) in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in sample_photos():
        Image.fromarray(image).save(folder / f"{name}.jpg", quality=90)
        paths.append(str(folder / f"{name}.jpg"))
    return paths


def pixel_gap(paths: Sequence[str], size: int, seeds: int) -> Dict[str, float]:
    """Mean absolute difference (uint8 levels) of the streamed loader's images (``stream.load``) from the full
    decode's (``transform(_decode(...))``, the path before), over ``seeds`` training crops a file and its eval crop:
    ``train``/``eval`` over every sample, ``*_scaled`` over those decoded at a DCT scale (``n_*`` of them), and the
    largest ``max_image`` of one image."""
    from tuner.core.data.jpeg_crop import dct_scale
    from tuner.core.data.stream import _decode, eval_resize, load, train_crop, transform

    gaps: Dict[str, List[float]] = {"train": [], "train_scaled": [], "eval": [], "eval_scaled": []}
    for path in paths:
        full = _decode(path)
        height, width = full.shape[-2:]
        for seed in range(seeds + 1):
            train = seed < seeds
            gap = (load(path, size, train, seed).float() - transform(full, size, train, seed).float()).abs().mean().item()
            box = train_crop(height, width, seed)[0] if train else (0, 0, height, width)
            scaled = dct_scale(box[2], box[3], size if train else eval_resize(size)) > 1
            kind = "train" if train else "eval"
            gaps[kind].append(gap)
            if scaled:
                gaps[f"{kind}_scaled"].append(gap)
    out = {key: float(np.mean(v)) if v else 0.0 for key, v in gaps.items()}
    out.update({f"n_{key}": float(len(v)) for key, v in gaps.items()})
    out["max_image"] = float(max(gaps["train"] + gaps["eval"]))
    return out
