"""Tests for tuner.core.data's in-memory loader (seeded batches, normalisation, crops, resume), the data
fingerprint and the per-seed validation split."""
from __future__ import annotations

import dataclasses
import time

import pytest
import torch
import torch.nn.functional as F

from tuner.core.data import (
    DataSplits,
    TensorLoader,
    load_dataset,
    make_loaders,
)


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
