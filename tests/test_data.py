"""Tests for tuner.core.data: every dataset on real or real-format files (the loader: tests/test_loader.py)."""
from __future__ import annotations

import inspect
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tuner.core.catalog import DATASETS, LOADER_ARGS, dataset_info, dataset_options, list_datasets
from tuner.core.data import CIFAR10_MEAN, CIFAR100_STD, DatasetNotFoundError, load_dataset
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


def test_every_data_set_of_the_catalog_has_a_loader_taking_the_options_the_catalog_declares(monkeypatch):
    """Names and facts live in tuner/core/catalog.py (a config is checked against them without torch); sources.py
    and folders.py provide only loaders, each taking data_dir, seed, val_fraction and the catalog's options."""
    assert DATASETS.provided() == DATASETS.names() == list_datasets()
    for name in list_datasets():
        assert tuple(inspect.signature(DATASETS.get(name)).parameters) == LOADER_ARGS + tuple(dataset_options(name))
    monkeypatch.setattr(DATASETS, "_meta", dict(DATASETS._meta))
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))
    DATASETS.declare("mine", input_size=8, family="any", in_channels=1, num_classes=2, options=("image_size",))
    with pytest.raises(ValueError, match="dataset 'mine': its loader takes data_dir, seed, val_fraction, image_sise; "
                                         "the catalog declares data_dir, seed, val_fraction, image_size"):
        DATASETS.provide("mine")(lambda data_dir=None, seed=0, val_fraction=None, image_sise=8: None)


# ----------------------------------------------------------------------------- digits


def test_digits_fixed_stratified_split():
    s = load_dataset("digits")
    assert (s.num_classes, s.in_channels, s.image_size, s.scale, s.augment) == (10, 1, 8, 16.0, "none")
    info = dataset_info("digits")  # the catalog's facts are the loaded data's
    assert (info["num_classes"], info["in_channels"], info["input_size"]) == (s.num_classes, s.in_channels, s.image_size)
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
