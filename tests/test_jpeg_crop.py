"""The streamed loader decodes a JPEG only as far as its crop needs: the same boxes, the same pixels at scale 1, the
stated tolerance at a DCT scale, and every other file through the general decoder (docs/architecture.md, "Data")."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tuner.core.data import DatasetNotFoundError
from tuner.core.data.image_files import header_size
from tuner.core.data.jpeg_crop import dct_scale, decode_rgb, scaled_box
from tuner.core.data.normalize import Normalize
from tuner.core.data.stream import IMAGENET_MEAN, IMAGENET_STD, _decode, eval_resize, load, train_crop, transform

#: the stated tolerance of a DCT-scaled crop: mean absolute difference from the whole decode's, uint8 levels
SCALED_MEAN, SCALED_WORST = 5.0, 10.0


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two sample photographs (china.jpg, flower.jpg: 640 x 427 JPEGs), the files it ships."""
    from sklearn.datasets import load_sample_images

    return load_sample_images().filenames


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().mean().item()


def test_scale_rule_and_the_box_on_the_reduced_image():
    assert dct_scale(447, 500, 224) == 1 and dct_scale(448, 500, 224) == 2 and dct_scale(500, 448, 224) == 2
    assert dct_scale(896, 1000, 224) == 4 and dct_scale(1792, 1792, 224) == 8 and dct_scale(5000, 5000, 224) == 8
    assert dct_scale(375, 500, eval_resize(224)) == 1  # ImageNet's typical 500 x 375: decoded whole at 224
    assert scaled_box((10, 21, 300, 457), 1) == (10, 21, 300, 457)
    assert scaled_box((10, 21, 300, 457), 2) == (5, 11, 150, 228)  # reduced pixel i covers original 2i, 2i + 1
    assert scaled_box((3, 5, 448, 900), 4) == (1, 1, 112, 225)


def test_crops_are_the_whole_decodes_bit_for_bit_where_no_scale_applies_and_within_tolerance_where_one_does(photos):
    """The crop comes from the header's size: the box the decoded image's shape gives, the same pixels at scale 1;
    at a DCT scale (112 px crops of 640 x 427 photos: windows of 224 px or more) within the stated tolerance."""
    scaled = []
    for path in photos:
        with open(path, "rb") as f:
            fmt, width, height = header_size(f.read())  # flower.jpg's frame header is at 22 KB
        full = _decode(path)
        assert fmt == "JPEG" and tuple(full.shape) == (3, height, width)
        for size in (224, 112):
            for seed in range(25):
                box = train_crop(height, width, seed)[0]
                ours, whole = load(path, size, True, seed), transform(full, size, True, seed)
                assert ours.shape == whole.shape == (3, size, size)
                if dct_scale(box[2], box[3], size) == 1:
                    assert torch.equal(ours, whole), (path, size, seed)
                else:
                    scaled.append(_gap(ours, whole))
            ours, whole = load(path, size, False, 0), transform(full, size, False, 0)
            if dct_scale(height, width, eval_resize(size)) == 1:
                assert torch.equal(ours, whole), (path, size)
            else:
                scaled.append(_gap(ours, whole))
    assert len(scaled) >= 20
    assert np.mean(scaled) <= SCALED_MEAN and max(scaled) <= SCALED_WORST, (np.mean(scaled), max(scaled))


def test_a_wrong_box_would_show(photos):
    """The tolerance is tight enough to catch a misplaced window: the next seed's crop is far off."""
    path = photos[0]
    for seed in range(5):
        if dct_scale(*train_crop(427, 640, seed)[0][2:], 112) > 1:
            break
    assert _gap(load(path, 112, True, seed), transform(_decode(path), 112, True, seed + 1)) > 3 * SCALED_MEAN


@pytest.mark.parametrize("mode, fmt", [("L", "JPEG"), ("CMYK", "JPEG"), ("RGB", "PNG")], ids=["gray-jpeg", "cmyk-jpeg", "png"])
def test_png_cmyk_and_grayscale_go_through_the_general_decoder(tmp_path, mode, fmt):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)).convert(mode)
    path = tmp_path / f"image.{fmt.lower()}"
    image.save(path, fmt)
    if fmt == "JPEG":
        assert decode_rgb(path.read_bytes(), 200, 300, 1) is None  # not a 3-component JPEG: the general decoder
    whole = _decode(str(path))
    assert whole.shape == (3, 200, 300)
    for train, seed in ((True, 0), (True, 7), (False, 0)):
        assert torch.equal(load(str(path), 64, train, seed), transform(whole, 64, train, seed))


def test_a_jpeg_libjpeg_refuses_is_named_by_the_general_decoder(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 60)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    at = data.find(b"\xff\xc4")
    data[at + 5 : at + 21] = b"\xff" * 16  # code counts summing past 256
    path = tmp_path / "bad.jpg"
    path.write_bytes(bytes(data))
    assert decode_rgb(bytes(data), 48, 64, 1) is None
    with pytest.raises(DatasetNotFoundError, match=rf"^data_dir: cannot decode {path} \(.*Bogus Huffman table"):
        load(str(path), 32, True, 0)
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"x" * 100)  # a JPEG's first bytes, then none of its header
    assert decode_rgb(path.read_bytes(), 48, 64, 1) is None
    with pytest.raises(DatasetNotFoundError, match=rf"^data_dir: cannot decode {path} \(") as err:
        load(str(path), 32, False, 0)
    assert "\n" not in str(err.value)


def test_channels_last_batches_normalise_to_the_same_numbers():
    x = torch.randint(0, 256, (4, 3, 9, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD, 255.0)
    cl = normalize(x.contiguous(memory_format=torch.channels_last))
    assert torch.equal(cl, normalize(x)) and cl.is_contiguous(memory_format=torch.channels_last)


def test_a_jpeg_cut_short_is_not_decoded_as_grey_rows(tmp_path):
    """libjpeg-turbo fills a file cut short with grey and only warns: the fast path refuses it (strict), so the general
    decoder names the file instead of a trial training on grey rows."""
    import io

    import numpy as np
    from PIL import Image

    from tuner.core.data.jpeg_crop import decode_rgb

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    whole = buf.getvalue()
    assert decode_rgb(whole, 96, 128, 1).shape == (3, 96, 128)
    assert decode_rgb(whole[: len(whole) // 2], 96, 128, 1) is None and decode_rgb(whole[: len(whole) // 2], 96, 128, 2) is None
