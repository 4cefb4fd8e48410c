"""Image folders are checked before a sweep spends anything (issue 27, items 2-4): the folder walk enters each
real folder once and lists each file once, every file's header and end are read before Ray starts (a clean
result remembered), one pixel limit holds for every decoder, and a sweep whose every trial errored exits 3."""
from __future__ import annotations

import io
import os
import re
import struct
import time
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests._helpers import run_search, trial_runs
from tuner.core.config import ConfigError, TrialConfig
from tuner.core.data import DataSplits, DatasetNotFoundError, StreamSplits, load_dataset, make_loaders
from tuner.core.data.folders import _scan
from tuner.core.data.image_files import IMG_SUFFIXES, FolderWalk, header_size, main
from tuner.core.data.stream import _decode, _Decoded

COLORS = {"apple": (200, 30, 30), "leaf": (30, 200, 30), "sky": (30, 30, 200)}
W, H = 48, 40


def _images(root: Path, per_class: int = 4, suffix: str = ".png", classes=COLORS) -> Path:
    """``root/<class>/<i><suffix>``: real PNG or JPEG files (by suffix) of W x H px, a colour a class plus noise."""
    g = torch.Generator().manual_seed(0)
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = torch.randint(-40, 41, (H, W, 3), generator=g)
            pixels = (torch.tensor(COLORS.get(cls, (90, 90, 90))) + noise).clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels).save(root / cls / f"{i}{suffix}")
    return root


def _png_of_zeros(path: Path, width: int, height: int) -> None:
    """A whole 1-bit PNG of ``width`` x ``height`` black pixels: 30000 x 30000 is 109 KB on disk, 2.7 GB as RGB."""
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def _refused(match: str, **options) -> str:
    with pytest.raises(ValueError) as err:
        load_dataset("imagefolder", image_size=8, **options)
    text = str(err.value)
    assert "\n" not in text and text.startswith(match), text
    return text


# ----------------------------------------------------------------------------- item 4: the folder walk


def test_a_symlink_loop_or_a_second_way_into_a_folder_is_refused_naming_the_link(tmp_path):
    root = _images(tmp_path / "img", per_class=12)  # the 36 files
    (root / "apple" / "up").symlink_to("..")  # was: 1,476 samples, 960 with the wrong label
    _refused(f"data_dir: {root / 'apple' / 'up'} leads to {root}, listed already as {root} (a symlink loop",
             data_dir=root)
    (root / "apple" / "up").unlink()
    outside = _images(tmp_path / "outside", per_class=3, classes=["pics"]) / "pics"
    (root / "zed").symlink_to(outside)  # a class folder that is a link: followed, once
    (root / "zeta").symlink_to(outside)
    _refused(f"data_dir: {root / 'zeta'} leads to {outside}, listed already as {root / 'zed'}", data_dir=root)
    (root / "zeta").unlink()
    s = load_dataset("imagefolder", data_dir=root, image_size=8)
    assert len(s.train_y) + len(s.val_y) + len(s.test_y) == 39 and s.num_classes == 4
    (root / "apple" / "again.png").symlink_to(root / "leaf" / "0.png")  # one file under two labels
    _refused(f"data_dir: {root / 'apple' / 'again.png'} is a link to {root / 'leaf' / '0.png'}, listed already",
             data_dir=root)
    (root / "apple" / "again.png").unlink()
    (root / "apple" / "pic.png").symlink_to(outside / "0.png")  # a file reached by a link and through a linked folder
    _refused(f"data_dir: {root / 'apple' / 'pic.png'} is a link to {root / 'zed' / '0.png'}, listed already", data_dir=root)
    (root / "zed").unlink()
    (root / "leaf" / "pic.png").symlink_to(outside / "0.png")  # two links to one file
    _refused(f"data_dir: {root / 'leaf' / 'pic.png'} and {root / 'apple' / 'pic.png'} are links to one file, "
             f"{outside / '0.png'}", data_dir=root)


def test_the_walk_lists_a_tree_without_links_twice_as_torchvisions_image_folder_does(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    root = _images(tmp_path / "img", per_class=3)
    _images(root / "apple" / "deeper", per_class=2, classes=["x", "Y"])
    (root / "sky" / "notes.txt").write_text("not an image")
    (root / "sky" / "UPPER.PNG").write_bytes((root / "sky" / "0.png").read_bytes())
    classes, samples = _scan(root, FolderWalk())
    assert classes == sorted(COLORS) and IMG_SUFFIXES == IMG_EXTENSIONS
    assert samples == make_dataset(str(root), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS)


def test_the_imagenet_lister_refuses_a_link_from_its_val_folder_into_train(tmp_path):
    for split in ("train", "val"):
        _images(tmp_path / split, per_class=4)
    os.rename(tmp_path / "val" / "sky", tmp_path / "sky-val")
    (tmp_path / "val" / "sky").symlink_to(tmp_path / "train" / "sky")  # the test split would be trained on
    with pytest.raises(ValueError, match=rf"^data_dir: {tmp_path / 'val' / 'sky'} leads to {tmp_path / 'train' / 'sky'}, "):
        load_dataset("imagenet", data_dir=tmp_path, image_size=16)


# ----------------------------------------------------------------------------- item 2: files checked up front


def test_unreadable_image_files_are_refused_in_one_line_before_anything_reads_them(tmp_path, capsys):
    root = _images(tmp_path / "img", suffix=".JPEG")
    whole = (root / "sky" / "0.JPEG").read_bytes()
    cases = {
        "cut short": (whole[: len(whole) // 2], "is cut short (no JPEG end marker, and it does not decode: "),
        "empty": (b"", "is empty"),
        "not an image": (b"not a jpeg", "is in no image format PIL or torchvision reads"),
        "cut in its header": (whole[:100], "cannot be read as an image ("),
    }
    bad = root / "leaf" / "1.JPEG"
    for name, (data, says) in cases.items():
        bad.write_bytes(data)
        for mode in ("memory", "stream"):
            text = _refused(f"data_dir: {bad} {says}", data_dir=root, data_mode=mode)
            assert "; 1 of 12 image files cannot be used: fix or remove them (list them: python -m " \
                   f"tuner.core.data.image_files {root}" in text, (name, text)
    (root / "apple" / "2.JPEG").write_bytes(b"")
    assert main([str(root)]) == 1  # every refused file, one a line
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"{root / 'apple' / '2.JPEG'} is empty", f"{bad} {cases['cut in its header'][1]}"
                                    "Truncated File Read)"] and "2 of 12 image files cannot be used" in out.err

    # what decodes is kept: bytes after a whole JPEG, a PNG named .JPEG (ImageNet has one), a BMP in memory
    bad.write_bytes(whole + b"\0" * 100)
    buf = io.BytesIO()
    Image.new("RGB", (12, 10), (1, 2, 3)).save(buf, "PNG")
    (root / "apple" / "2.JPEG").write_bytes(buf.getvalue())
    assert isinstance(load_dataset("imagefolder", data_dir=root, image_size=8, data_mode="stream"), StreamSplits)
    Image.new("RGB", (12, 10), (1, 2, 3)).save(root / "sky" / "3.JPEG", "BMP")
    assert isinstance(load_dataset("imagefolder", data_dir=root, image_size=8, data_mode="memory"), DataSplits)
    _refused(f"data_dir: {root / 'sky' / '3.JPEG'} is a BMP file named .jpeg, which the streamed decoder reads only "
             "as JPEG, PNG, WebP or GIF", data_dir=root, data_mode="stream")


def test_a_clean_check_is_remembered_by_the_files_paths_sizes_and_mtimes(tmp_path, monkeypatch):
    monkeypatch.setenv("SRRL_CACHE_DIR", str(tmp_path / "cache"))
    root = _images(tmp_path / "img", suffix=".JPEG")
    load_dataset("imagefolder", data_dir=root, image_size=8, data_mode="stream")
    assert len(list((tmp_path / "cache" / "image-checks").iterdir())) == 1
    path = root / "leaf" / "1.JPEG"
    st = path.stat()
    path.write_bytes(b"\0" * st.st_size)  # the same size and mtime: taken as checked, not read again
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    load_dataset("imagefolder", data_dir=root, image_size=8, data_mode="stream")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # a new mtime: checked again
    _refused(f"data_dir: {path} is in no image format", data_dir=root, data_mode="stream")


@pytest.mark.slow
def test_a_bad_image_is_one_line_and_exit_2_before_ray_starts(tmp_path, env):
    root = _images(tmp_path / "img", suffix=".jpg")
    bad = root / "sky" / "2.jpg"
    bad.write_bytes(bad.read_bytes()[:-40])  # was: a PIL traceback, exit 1, after the data was half decoded
    (tmp_path / "run").mkdir()
    proc = run_search(tmp_path / "run", env, "--dataset", "imagefolder", "--data-dir", str(root), "--teacher", "resnet20",
                      "--student", "wrn_16_1", "--image-size", "8", timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: data_dir: {bad} is cut short (no JPEG end marker")
    assert list((tmp_path / "run").iterdir()) == [] and not os.listdir(env["RAY_TMPDIR"])  # nothing written, no Ray


# ----------------------------------------------------------------------------- item 3: one pixel limit


def test_one_pixel_limit_for_every_decoder_read_from_the_header(tmp_path):
    root = _images(tmp_path / "img")
    huge = root / "sky" / "huge.png"
    _png_of_zeros(huge, 30000, 30000)  # was: refused by PIL in memory (a traceback), decoded when streamed
    says = f"data_dir: {huge} is 30000 x 30000 = 900,000,000 pixels, over max_image_pixels 89,478,485 (to read it: " \
           "--set max_image_pixels=900000000)"
    for mode in ("memory", "stream"):
        _refused(says, data_dir=root, data_mode=mode)
    start = time.monotonic()
    with pytest.raises(DatasetNotFoundError) as err:
        _decode(str(huge))  # the streamed decoder itself (a file changed after the check): from the header alone
    assert str(err.value) == says and time.monotonic() - start < 10  # a whole decode: ~3 GB and far longer
    with pytest.raises(DatasetNotFoundError, match="^" + re.escape(says) + "$"):
        _decoded_bytes(huge)  # the GPU-decode path's workers read the bytes: the same check
    huge.unlink()

    # the field: W x H = 1,920 pixels each
    small = {"data_dir": root, "max_image_pixels": 1919}
    _refused(f"data_dir: {root / 'apple' / '0.png'} is 48 x 40 = 1,920 pixels, over max_image_pixels 1,919 ", **small)
    _refused(f"data_dir: {root / 'apple' / '0.png'} is 48 x 40 = 1,920 pixels", data_mode="stream", **small)
    streamed = load_dataset("imagefolder", data_dir=root, image_size=8, data_mode="stream", max_image_pixels=1920)
    assert streamed.max_pixels == 1920
    Image.new("RGB", (49, 40)).save(root / "leaf" / "3.png")  # grown after the check: the loader's decoder refuses it
    with pytest.raises(DatasetNotFoundError, match=rf"^data_dir: {root}/leaf/3\.png is 49 x 40 = 1,960 pixels, over "):
        for split in make_loaders(streamed, 4, seed=0):
            list(split)
    assert isinstance(load_dataset("imagefolder", data_dir=root, image_size=8, max_image_pixels=1960), DataSplits)

    with pytest.raises(ConfigError, match=r"^max_image_pixels: 0 is out of range; allowed: \[1, inf\]$"):
        TrialConfig.from_dict({"dataset": "imagefolder", "max_image_pixels": 0})
    with pytest.raises(ConfigError, match=r"^max_image_pixels: dataset 'digits' does not take it; only imagefolder, "
                                          r"imagenet do$"):
        TrialConfig.from_dict({"max_image_pixels": 10**9})
    assert TrialConfig.from_dict({"dataset": "imagenet", "max_image_pixels": "1e9"}).data_options() == \
        {"max_image_pixels": 10**9}


def _decoded_bytes(path: Path):
    """What the GPU-decode path's workers do with one file: read its bytes (after the header check)."""
    from tuner.core.data.stream import FileSplit

    split = FileSplit.of(path.parent, [(str(path), 0)])
    return _Decoded(split, 8, False, encoded=True)[0, 0]


@pytest.mark.parametrize("fmt, options", [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("GIF", {}),
                                          ("WEBP", {}), ("WEBP", {"lossless": True}), ("WEBP", {"alpha": True})],
                         ids=["jpeg", "progressive-jpeg", "png", "gif", "webp-lossy", "webp-lossless", "webp-alpha"])
def test_the_header_reader_gives_pils_size(fmt, options):
    image = Image.new("RGBA" if options.pop("alpha", False) else "RGB", (333, 77), (10, 20, 30))
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        assert im.size == (333, 77)
    assert header_size(buf.getvalue()[:8192]) == (fmt, 333, 77)
    assert header_size(buf.getvalue()[:5]) is None
    Image.new("RGB", (5, 4)).save(buf := io.BytesIO(), "BMP")
    assert header_size(buf.getvalue()) is None  # another format: PIL reads it


# ----------------------------------------------------------------------------- item 2: a sweep that cannot run


@pytest.mark.slow
def test_a_sweep_whose_every_trial_errored_exits_3_naming_why(tmp_path, env):
    """A JPEG whose Huffman table is damaged has a whole header and end, so the check cannot see it (its limit);
    every trial then errors on it: the summary, then one line naming the first trial's error, exit 3 (was 0)."""
    from tuner.core.models import build_model

    for split in ("train", "val", "test"):  # the bad files in train/ only: the driver evaluates the teacher on val/test
        _images(tmp_path / "img" / split, per_class=6 if split == "train" else 2, suffix=".jpg")
    bad = tmp_path / "img" / "train" / "sky" / "0.jpg"
    good = bad.read_bytes()
    data = bytearray(good)
    at = data.find(b"\xff\xc4")
    data[at + 5 : at + 21] = b"\xff" * 16  # code counts summing past 256: "Bogus Huffman table definition"
    bad.write_bytes(bytes(data))
    torch.save(build_model("resnet20", 3).state_dict(), tmp_path / "resnet20.pth")
    proc = run_search(tmp_path, env, "--dataset", "imagefolder", "--data-dir", str(tmp_path / "img"), "--teacher",
                      "resnet20", "--teacher-checkpoint", str(tmp_path / "resnet20.pth"), "--student", "wrn_16_1",
                      "--image-size", "8", "--smoke", "--num-samples", "2", "--confirm", "0", "--max-failures", "0", "--name", "bad",
                      "--cpus-per-trial", "1", "--set", "data_mode=stream", timeout=300)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Sweep bad: 2 trials, 0 finished, 0 stopped_early, 2 errored" in proc.stdout
    line = proc.stderr.rstrip("\n").splitlines()[-1]
    assert line.startswith("error: every one of the 2 trials of the search errored; the first: ") and \
        f"data_dir: cannot decode {bad} (" in line and "Bogus Huffman table definition" in line, line
    error_file = Path(line.rsplit("(its error file: ", 1)[1].rstrip(")"))
    assert error_file.is_file() and error_file.parent.parent == tmp_path / "ray_results" / "bad"

    # confirmed later, with the file mended: the confirmation is of the search as it ended, whose errored trials
    # the study has failed; they are not run again first (they were, and would now finish)
    bad.write_bytes(good)
    later = run_search(tmp_path, env, "--confirm-sweep", "bad", "--confirm", "1", "--confirm-seeds", "2",
                       "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", timeout=300)
    assert later.returncode == 0, later.stderr[-3000:]
    assert "none to confirm" in later.stdout, later.stdout[-2000:]
    search = [r for r in trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "bad") if r.data.tags["srrl.stage"] == "search"]
    assert sorted(r.data.tags["srrl.status"] for r in search) == ["errored", "errored"]
    assert error_file.read_text().count("Bogus Huffman table definition") == 1, error_file.read_text()[-2000:]
