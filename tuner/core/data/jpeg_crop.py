"""JPEGs decoded only as far as their crop needs: libjpeg-turbo's DCT scaling through simplejpeg.

The streamed loader draws each crop from the size in the file's header, then decodes the JPEG at the smallest
DCT scale (1/2, 1/4, 1/8) at which the crop window keeps at least the output's pixels a side, into rows of
RGB (height, width, 3) that the resize reads as a channels-last image. At scale 1 the pixels are
torchvision.io's, bit for bit (the same libjpeg-turbo); a scaled decode replaces the decode-then-shrink of a
window at least twice the output by libjpeg-turbo's own shrink, within the tolerance docs/architecture.md
("Data") states, with the measurement behind the choice of simplejpeg: as fast as torchvision.io's decode,
the only installable one that scales at its caller's word, and no private API. It cannot stop before the
last row (Pillow can only through its internals).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["DCT_SCALES", "dct_scale", "decode_rgb", "scaled_box"]

DCT_SCALES = (8, 4, 2)  # libjpeg-turbo's SIMD reductions (its 3/8 .. 7/8 scales run in plain C)
_COLOURS = ("YCbCr", "RGB")  # 3-component JPEGs; grayscale, CMYK and YCCK ones go through the general decoder


def dct_scale(height: int, width: int, need: int) -> int:
    """The largest of 8, 4, 2 (else 1) that a window of ``height`` x ``width`` may be divided by and keep ``need``
    pixels a side."""
    return next((s for s in DCT_SCALES if min(height, width) >= need * s), 1)


def decode_rgb(data: bytes, height: int, width: int, scale: int) -> Optional[Tensor]:
    """(3, ceil(H / scale), ceil(W / scale)) uint8 RGB of a 3-component JPEG of ``height`` x ``width``, a
    channels-last view of the decoded rows; None for any other JPEG or one libjpeg-turbo warns about (strict: a
    file cut short would decode as grey rows without a word; the general decoder then decodes it as before, or
    names it in one line)."""
    import simplejpeg

    try:
        if simplejpeg.decode_jpeg_header(data, strict=False)[2] not in _COLOURS:
            return None
        if scale == 1:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
        else:  # min_factor rules out the larger factors, the minimum size the smaller: exactly 1/scale
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB", min_factor=scale,
                                            min_height=-(-height // scale), min_width=-(-width // scale))
    except Exception:  # ValueError (libjpeg-turbo's warnings too, strict), KeyError from some damaged headers
        return None
    return torch.from_numpy(pixels).permute(2, 0, 1)


def scaled_box(box: Tuple[int, int, int, int], scale: int) -> Tuple[int, int, int, int]:
    """(top, left, h, w) on an image decoded at 1/``scale`` of a crop box drawn on the original: reduced pixel i
    covers original pixels [scale * i, scale * (i + 1)), so the edges are divided and rounded (scale 1: the box)."""
    if scale == 1:
        return box
    top, left, h, w = box
    t0, t1, l0, l1 = (int(v / scale + 0.5) for v in (top, top + h, left, left + w))
    return t0, l0, t1 - t0, l1 - l0
