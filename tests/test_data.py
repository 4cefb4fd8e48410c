"""Tests for tuner.core.data: every dataset on real or real-format files, the loader, the fingerprint."""
from __future__ import annotations

import dataclasses
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tuner.core.data import (
    CIFAR10_MEAN,
    CIFAR100_STD,
    DatasetNotFoundError,
    DataSplits,
    TensorLoader,
    dataset_info,
    list_datasets,
    load_dataset,
    make_loaders,
)
from tuner.core.registry import UnknownNameError


# ----------------------------------------------------------------------------- registry


def test_registry_lists_and_rejects():
    assert {"digits", "cifar10", "cifar100", "imagefolder", "synthetic"} <= set(list_datasets())
    assert dataset_info("cifar100")["family"] == "cifar" and dataset_info("cifar100")["input_size"] == 32
    assert dataset_info("digits")["input_size"] == 8
    with pytest.raises(UnknownNameError, match="choose from: digits, cifar10"):
        load_dataset("cifar")
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset("synthetic", image_sise=8)
    with pytest.raises(ValueError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)


# ----------------------------------------------------------------------------- digits


def test_digits_fixed_stratified_split():
    s = load_dataset("digits")
    assert (s.num_classes, s.in_channels, s.image_size, s.scale, s.augment) == (10, 1, 8, 16.0, "none")
    assert s.train_x.shape[1:] == (1, 8, 8) and s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    sizes = [len(s.train_y), len(s.val_y), len(s.test_y)]
    assert sum(sizes) == 1797 and sizes == [1077, 360, 360]
    # stratified: each split's class counts are within 1 of the overall proportion
    all_y = torch.cat([s.train_y, s.val_y, s.test_y])
    share = torch.bincount(all_y, minlength=10) / len(all_y)
    for y in (s.train_y, s.val_y, s.test_y):
        assert (torch.bincount(y, minlength=10) - share * len(y)).abs().max() <= 1.0
    # the three splits are a partition of the original images
    from sklearn.datasets import load_digits

    rows = sorted(r.tobytes() for r in torch.cat([s.train_x, s.val_x, s.test_x]).numpy().reshape(1797, -1))
    assert rows == sorted(r.tobytes() for r in load_digits().images.astype(np.float32).reshape(1797, -1))
    # train statistics in x / scale space
    assert s.mean[0] == pytest.approx((s.train_x / 16).mean().item(), abs=1e-5)
    assert s.std[0] == pytest.approx((s.train_x / 16).std().item(), rel=1e-3)
    # identical across calls and independent of the trial seed
    for other in (load_dataset("digits"), load_dataset("digits", seed=123)):
        assert torch.equal(other.val_x, s.val_x) and torch.equal(other.test_y, s.test_y)
        assert other.fingerprint() == s.fingerprint()


# ----------------------------------------------------------------------------- CIFAR, in the real on-disk format


def _cifar_images(ids: np.ndarray) -> np.ndarray:
    """N x 3072 uint8 rows (R, G, B planes, row-major) that encode their id and have known pixels."""
    data = np.zeros((len(ids), 3, 32, 32), dtype=np.uint8)
    data[:, 0, 0, 0] = ids // 256
    data[:, 0, 0, 1] = ids % 256
    data[:, 1, 5, 7] = 200  # a known green pixel at row 5, column 7
    data[:, 2, 31, 30] = (ids * 7) % 256  # a known blue pixel at row 31, column 30
    return data.reshape(len(ids), 3072)


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar10(root: Path, per_batch: int = 20) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    labels = {}
    for b in range(1, 6):
        ids = np.arange((b - 1) * per_batch, b * per_batch)
        y = [int(i % 10) for i in ids]
        labels.update(zip(ids.tolist(), y))
        _pickle(folder / f"data_batch_{b}", {b"batch_label": f"training batch {b} of 5".encode(), b"labels": y,
                                            b"data": _cifar_images(ids), b"filenames": [b"x.png"] * len(ids)})
    test_ids = np.arange(1000, 1010)
    _pickle(folder / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": [int(9 - i % 10) for i in test_ids],
                                    b"data": _cifar_images(test_ids), b"filenames": [b"t.png"] * 10})
    _pickle(folder / "batches.meta", {b"num_cases_per_batch": per_batch, b"label_names": [b"c%d" % i for i in range(10)],
                                      b"num_vis": 3072})
    return labels


def _write_cifar100(root: Path, n_train: int = 400) -> dict:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    ids = np.arange(n_train)
    y = [int(i % 100) for i in ids]
    _pickle(folder / "train", {b"filenames": [b"x.png"] * n_train, b"batch_label": b"training batch 1 of 1",
                               b"fine_labels": y, b"coarse_labels": [v // 5 for v in y], b"data": _cifar_images(ids)})
    test_ids = np.arange(300, 305)
    _pickle(folder / "test", {b"filenames": [b"t.png"] * 5, b"batch_label": b"testing batch 1 of 1",
                              b"fine_labels": [3, 1, 4, 1, 5], b"coarse_labels": [0] * 5, b"data": _cifar_images(test_ids)})
    _pickle(folder / "meta", {b"fine_label_names": [b"f%d" % i for i in range(100)],
                              b"coarse_label_names": [b"c%d" % i for i in range(20)]})
    return dict(zip(ids.tolist(), y))


def _ids(x: torch.Tensor) -> np.ndarray:
    return (x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()).numpy()


def _check_pixels(x: torch.Tensor) -> None:
    ids = torch.from_numpy(_ids(x))
    assert x.dtype == torch.uint8 and x.shape[1:] == (3, 32, 32)
    assert (x[:, 1, 5, 7] == 200).all() and (x[:, 1, 7, 5] == 0).all()
    assert torch.equal(x[:, 2, 31, 30].long(), (ids * 7) % 256)


@pytest.mark.parametrize("direct", [False, True], ids=["parent-dir", "extracted-dir"])
def test_cifar10_real_format(tmp_path, direct):
    labels = _write_cifar10(tmp_path)
    s = load_dataset("cifar10", data_dir=tmp_path / "cifar-10-batches-py" if direct else tmp_path)
    assert (s.num_classes, s.scale, s.augment, s.mean) == (10, 255.0, "crop_flip", CIFAR10_MEAN)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (90, 10, 10)
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y)):
        _check_pixels(x)
        assert [labels[i] for i in _ids(x)] == y.tolist()
    assert sorted(s.val_y.tolist()) == list(range(10))  # stratified: one of each class
    assert sorted(np.concatenate([_ids(s.train_x), _ids(s.val_x)]).tolist()) == list(range(100))
    _check_pixels(s.test_x)
    assert _ids(s.test_x).tolist() == list(range(1000, 1010))  # official test order is kept
    assert s.test_y.tolist() == [9 - i % 10 for i in range(1000, 1010)]


@pytest.mark.parametrize("direct", [False, True], ids=["parent-dir", "extracted-dir"])
def test_cifar100_real_format(tmp_path, direct):
    labels = _write_cifar100(tmp_path)
    s = load_dataset("cifar100", data_dir=tmp_path / "cifar-100-python" if direct else tmp_path, val_fraction=0.25)
    assert (s.num_classes, s.std) == (100, CIFAR100_STD)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (300, 100, 5)
    assert sorted(s.val_y.tolist()) == list(range(100))  # stratified
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y)):
        _check_pixels(x)
        assert [labels[i] for i in _ids(x)] == y.tolist()
    assert _ids(s.test_x).tolist() == [300, 301, 302, 303, 304] and s.test_y.tolist() == [3, 1, 4, 1, 5]
    again = load_dataset("cifar100", data_dir=tmp_path, val_fraction=0.25, seed=7)
    assert again.fingerprint() == s.fingerprint()


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing_dir_is_one_line(tmp_path, name, folder):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, data_dir=tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "nowhere" / folder) in msg and "download" in msg
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_dataset(name)


def test_cifar10_missing_batch_names_file(tmp_path):
    _write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        load_dataset("cifar10", data_dir=tmp_path)


class _Shell:
    """Unpickles to ``os.system(command)``: what a crafted batch would run under plain ``pickle.load``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path):
    _write_cifar10(tmp_path)
    ran = tmp_path / "ran"
    _pickle(tmp_path / "cifar-10-batches-py" / "data_batch_2", {b"data": _Shell(f"touch {ran}"), b"labels": [0]})
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "data_batch_2 is not a CIFAR python batch" in msg and "posix.system" in msg
    assert not ran.exists()
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(b"\x80\x02}q")  # cut short
    with pytest.raises(DatasetNotFoundError, match="data_batch_2 is not a CIFAR python batch"):
        load_dataset("cifar10", data_dir=tmp_path)


# ----------------------------------------------------------------------------- imagefolder

COLORS = {"apple": (255, 0, 0), "sky": (0, 0, 255), "leaf": (0, 255, 0)}


def _write_pngs(folder: Path, per_class: int) -> None:
    for cls, rgb in COLORS.items():
        (folder / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 10), rgb).save(folder / cls / f"{i}.png")


def _check_colors(x: torch.Tensor, y: torch.Tensor) -> None:
    classes = sorted(COLORS)  # ImageFolder's class order
    expected = torch.tensor([COLORS[classes[i]] for i in y.tolist()], dtype=torch.uint8)
    assert torch.equal(x[:, :, 3, 3], expected)


def test_imagefolder_flat(tmp_path):
    _write_pngs(tmp_path, per_class=10)
    s = load_dataset("imagefolder", data_dir=tmp_path, image_size=8)
    assert (s.num_classes, s.in_channels, s.image_size, s.augment) == (3, 3, 8, "crop_flip")
    assert s.train_x.shape[1:] == (3, 8, 8) and s.train_x.dtype == torch.uint8
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (18, 6, 6)
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)):
        _check_colors(x, y)
    assert sorted(s.test_y.tolist()) == [0, 0, 1, 1, 2, 2]
    assert s.mean == pytest.approx((s.train_x.float() / 255).mean((0, 2, 3)).tolist(), abs=1e-6)


def test_imagefolder_train_val_subfolders(tmp_path):
    _write_pngs(tmp_path / "train", per_class=5)
    _write_pngs(tmp_path / "val", per_class=2)
    s = load_dataset("imagefolder", data_dir=tmp_path, image_size=6)
    assert len(s.val_y) == 6 and sorted(s.val_y.tolist()) == [0, 0, 1, 1, 2, 2]
    assert len(s.train_y) + len(s.test_y) == 15 and len(s.test_y) == 3  # test carved from train/
    for x, y in ((s.train_x, s.train_y), (s.val_x, s.val_y), (s.test_x, s.test_y)):
        _check_colors(x, y)
    _write_pngs(tmp_path / "test", per_class=1)
    s = load_dataset("imagefolder", data_dir=tmp_path, image_size=6)
    assert (len(s.train_y), len(s.val_y), len(s.test_y)) == (15, 6, 3)


def test_imagefolder_missing_or_empty(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        load_dataset("imagefolder", data_dir=tmp_path / "nope")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no images") as err:
        load_dataset("imagefolder", data_dir=tmp_path / "empty")
    assert "\n" not in str(err.value)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_any_shape():
    a = load_dataset("synthetic", seed=3, num_classes=7, image_size=5, in_channels=2, train_size=40, val_size=9, test_size=11)
    b = load_dataset("synthetic", seed=3, num_classes=7, image_size=5, in_channels=2, train_size=40, val_size=9, test_size=11)
    c = load_dataset("synthetic", seed=4, num_classes=7, image_size=5, in_channels=2, train_size=40, val_size=9, test_size=11)
    assert a.train_x.shape == (40, 2, 5, 5) and a.val_x.shape[0] == 9 and a.test_y.shape == (11,)
    assert a.train_x.dtype == torch.float32 and a.train_y.max() < 7 and a.augment == "none"
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)


# ----------------------------------------------------------------------------- TensorLoader


def _epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def _data(n=50, c=3, s=8):
    x = torch.randint(0, 256, (n, c, s, s), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return x, torch.arange(n)


def test_loader_seeded_batches_and_length():
    x, y = _data()
    make = lambda seed, **kw: TensorLoader(x, y, 16, shuffle=True, augment="crop_flip", scale=255.0, seed=seed, **kw)
    a, b, c = make(1), make(1), make(2)
    ea = _epoch(a)
    assert _same(ea, _epoch(b)) and not _same(ea, _epoch(c))
    assert len(a) == 4 and [len(yb) for _, yb in ea] == [16, 16, 16, 2]
    assert sorted(torch.cat([yb for _, yb in ea]).tolist()) == list(range(50))
    assert not _same(ea, _epoch(a))  # each iter() reshuffles
    assert len(make(1, drop_last=True)) == 3 and len(_epoch(make(1, drop_last=True))) == 3


def test_loader_normalises_per_channel():
    x = torch.empty(4, 3, 5, 5, dtype=torch.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 0, 128, 255
    mean, std = (0.5, 0.25, 0.1), (0.2, 0.5, 1.0)
    (xb, _), = TensorLoader(x, torch.zeros(4, dtype=torch.int64), 8, mean=mean, std=std, scale=255.0)
    expected = [(v / 255 - m) / s for v, m, s in zip((0, 128, 255), mean, std)]
    assert xb.dtype == torch.float32
    assert torch.allclose(xb.mean((0, 2, 3)), torch.tensor(expected), atol=1e-6)
    assert torch.allclose(xb.std((0, 2, 3)), torch.zeros(3), atol=1e-6)


def test_crop_flip_is_a_padded_crop_or_its_mirror():
    x, y = _data(n=64, c=2, s=6)
    (xb, yb), = TensorLoader(x, y, 64, shuffle=True, augment="crop_flip", mean=(0.0, 0.0), std=(1.0, 1.0), seed=5)
    assert xb.shape == (64, 2, 6, 6)
    padded = F.pad(x.float(), (4, 4, 4, 4))  # zero padding in raw pixel space
    flipped = 0
    for img, i in zip(xb, yb.tolist()):
        crops = padded[i].unfold(1, 6, 1).unfold(2, 6, 1).permute(1, 2, 0, 3, 4).reshape(-1, 2, 6, 6)  # 81 crops
        plain = (crops == img).flatten(1).all(1).any().item()
        mirror = (crops.flip(-1) == img).flatten(1).all(1).any().item()
        assert plain or mirror
        flipped += mirror and not plain
    assert 10 < flipped < 54  # about half are mirrored


def test_crop_padding_normalises_to_minus_mean_over_std():
    x = torch.full((32, 1, 4, 4), 255, dtype=torch.uint8)
    (xb, _), = TensorLoader(x, torch.zeros(32, dtype=torch.int64), 32, augment="crop_flip", mean=(0.5,), std=(0.25,),
                            scale=255.0)
    assert set(xb.unique().tolist()) <= {-2.0, 2.0} and (xb == -2.0).any()  # padding = raw 0


def test_state_dict_resumes_identical_next_epoch():
    x, y = _data()
    a = TensorLoader(x, y, 16, shuffle=True, augment="crop_flip", scale=255.0, seed=11)
    _epoch(a)
    state = a.state_dict()
    assert state["epoch"] == 1 and isinstance(state["generator"], torch.Tensor)
    expected = _epoch(a)
    b = TensorLoader(x, y, 16, shuffle=True, augment="crop_flip", scale=255.0, seed=0)
    b.load_state_dict(state)
    assert _same(_epoch(b), expected) and b.state_dict()["epoch"] == 2


def test_make_loaders_digits():
    s = load_dataset("digits")
    train, val, test = make_loaders(s, batch_size=64, seed=0, eval_batch_size=500)
    assert train.shuffle and train.augment == "none" and not val.shuffle and len(val) == 1
    xb, yb = next(iter(train))
    assert xb.shape == (64, 1, 8, 8) and yb.dtype == torch.int64
    (vx, vy), = val
    assert torch.equal(vy, s.val_y) and torch.allclose(vx, (s.val_x / 16 - s.mean[0]) / s.std[0], atol=1e-5)
    train, _, _ = make_loaders(dataclasses.replace(s, train_x=s.train_x[:65], train_y=s.train_y[:65]), 64, seed=0)
    assert len(train) == 1  # a lone last sample would break BatchNorm: dropped


# ----------------------------------------------------------------------------- fingerprint


def test_fingerprint_stable_and_sensitive():
    s = load_dataset("synthetic", train_size=64, val_size=16, test_size=16, image_size=8)
    assert s.fingerprint() == s.fingerprint() and len(s.fingerprint()) == 32
    y = s.train_y.clone()
    y[0] = (y[0] + 1) % s.num_classes
    assert dataclasses.replace(s, train_y=y).fingerprint() != s.fingerprint()
    assert dataclasses.replace(s, name="other").fingerprint() != s.fingerprint()


def test_fingerprint_fast_for_cifar_size():
    x = torch.zeros(50000, 3, 32, 32, dtype=torch.uint8)
    y = torch.zeros(50000, dtype=torch.int64)
    s = DataSplits(x, y, x[:5000], y[:5000], x[:10000], y[:10000], num_classes=100, in_channels=3, image_size=32,
                   mean=(0.5,) * 3, std=(0.25,) * 3, scale=255.0, augment="crop_flip", name="cifar100")
    start = time.perf_counter()
    s.fingerprint()
    assert time.perf_counter() - start < 2.0  # ~0.25 s on a laptop core; loose bound for busy CI


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loader_cuda_matches_cpu():
    x, y = _data()
    kw = dict(shuffle=True, augment="crop_flip", mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), scale=255.0, seed=3)
    cpu, gpu = _epoch(TensorLoader(x, y, 16, **kw)), _epoch(TensorLoader(x, y, 16, device="cuda", **kw))
    assert gpu[0][0].is_cuda and gpu[0][1].is_cuda
    assert all(torch.allclose(a.cpu(), b, atol=1e-6) and torch.equal(ya.cpu(), yb) for (a, ya), (b, yb) in zip(gpu, cpu))


def test_a_fresh_validation_split_per_seed_keeps_sizes_classes_and_test():
    """The confirmation's per-seed split: train + val pooled and re-split, stratified, same sizes; test untouched."""
    from tuner.core.config import TrialConfig
    from tuner.core.trainer import Trainer, load_splits

    splits = load_splits(TrialConfig())
    a, b, again = splits.with_val_seed(1), splits.with_val_seed(2), splits.with_val_seed(1)
    assert len(a.val_y) == len(splits.val_y) and len(a.train_y) == len(splits.train_y)
    assert torch.equal(torch.bincount(a.val_y), torch.bincount(splits.val_y))  # stratified: the same class counts
    assert torch.equal(a.test_x, splits.test_x) and a.mean == splits.mean and a.std == splits.std
    pooled = lambda s: sorted(map(bytes, torch.cat([s.train_x, s.val_x]).flatten(1).numpy()))  # noqa: E731
    assert pooled(a) == pooled(splits)  # the same images, dealt again
    assert torch.equal(a.val_x, again.val_x) and not torch.equal(a.val_x, b.val_x)
    assert not torch.equal(a.val_x, splits.val_x)
    trainer = Trainer(TrialConfig(alpha=0.0, beta=0.0, val_split_seed=1, epochs=1, threads=1), None, splits)
    assert torch.equal(trainer.splits.val_x, a.val_x)
