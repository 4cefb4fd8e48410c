"""Streamed image data: the ILSVRC layout, class subsets, the loader's determinism, shards and transforms."""
from __future__ import annotations

import pytest
import torch
from torchvision.io import decode_image
from torchvision.transforms import v2

from tests._helpers import write_ilsvrc
from tuner.core.config import ConfigError, TrialConfig
from tuner.core.data import DatasetNotFoundError, DataSplits, StreamSplits, load_dataset, make_loaders
from tuner.core.data.stream import IMAGENET_MEAN, IMAGENET_STD, StreamLoader, crop_box, epoch_order, eval_resize
from tuner.core.models import build_model, load_weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """4 classes, 12 train + 3 val JPEGs each, 36-60 px on a side."""
    return write_ilsvrc(tmp_path_factory.mktemp("ilsvrc"), classes=4, train_per_class=12, val_per_class=3)


def _epoch(loader):
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_imagenet_val_is_carved_from_train_and_the_official_val_is_test(tiny):
    s = load_dataset("imagenet", data_dir=tiny, image_size=24, val_fraction=0.25)
    assert isinstance(s, StreamSplits) and (s.num_classes, s.image_size, s.in_channels) == (4, 24, 3)
    assert (len(s.train), len(s.val), len(s.test)) == (36, 12, 12)
    assert sorted(s.val.labels.tolist()) == sorted([0, 1, 2, 3] * 3)  # stratified
    train, val, test = ({s.paths[i].decode() for i in range(len(s))} for s in (s.train, s.val, s.test))
    assert all(p.startswith("train/") for p in train | val) and all(p.startswith("val/") for p in test)
    assert not train & val
    assert (s.mean, s.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert s.fingerprint() == load_dataset("imagenet", data_dir=tiny, image_size=24, val_fraction=0.25).fingerprint()
    assert s.train.root == str(tiny.resolve())  # absolute: a trial reads it from another folder or node
    assert s.fingerprint() != load_dataset("imagenet", data_dir=tiny, image_size=24, val_fraction=0.5).fingerprint()


def test_class_subset_keeps_the_full_sets_val_images_of_its_classes_and_train_fraction_a_stratified_share(tiny):
    full = load_dataset("imagenet", data_dir=tiny, image_size=24, val_fraction=0.25)
    sub = load_dataset("imagenet", data_dir=tiny, image_size=24, val_fraction=0.25, class_subset=2, train_fraction=0.5)
    assert sub.num_classes == 2 and len(sub.class_index) == 2
    assert sub.class_index == load_dataset("imagenet", data_dir=tiny, image_size=24, class_subset=2).class_index

    def rows(split, index=None):
        return {(split.paths[i].decode(), (index[y] if index else y)) for i, y in enumerate(split.labels.tolist())}

    for name in ("val", "test"):
        assert rows(getattr(sub, name), sub.class_index) == \
            {r for r in rows(getattr(full, name)) if r[1] in sub.class_index}
    assert len(sub.train) == 9 and sorted(sub.train.labels.bincount().tolist()) == [4, 5]  # half of 2 x 9, stratified
    assert rows(sub.train, sub.class_index) <= rows(full.train)
    with pytest.raises(ValueError, match=r"^class_subset: imagenet at .* has 4 classes; give 2 \.\. 4$"):
        load_dataset("imagenet", data_dir=tiny, class_subset=5)


def test_the_layout_and_bad_files_are_one_line_errors_naming_the_path(tiny, tmp_path):
    (tmp_path / "train" / "n0").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=rf"^data_dir: imagenet: missing {tmp_path / 'val'}; expected "):
        load_dataset("imagenet", data_dir=tmp_path)
    bad = write_ilsvrc(tmp_path / "bad", classes=1, train_per_class=2, val_per_class=2)
    jpeg = bad / "train" / "n00000000" / "n00000000_1.JPEG"
    whole = jpeg.read_bytes()
    jpeg.write_bytes(b"not a jpeg")  # refused before any loader reads it (tests/test_image_files.py)
    with pytest.raises(ValueError, match=rf"^data_dir: {jpeg} is in no image format PIL or torchvision reads; 1 of 4 "):
        load_dataset("imagenet", data_dir=bad, image_size=16, val_fraction=0.5)
    jpeg.write_bytes(whole)
    s = load_dataset("imagenet", data_dir=bad, image_size=16, val_fraction=0.5)
    jpeg.write_bytes(b"not a jpeg")  # spoilt after the check: the decoder names it
    with pytest.raises(DatasetNotFoundError, match=rf"^data_dir: cannot decode {jpeg} \(") as err:
        for loader in make_loaders(s, 2, seed=0):
            _epoch(loader)
    assert "\n" not in str(err.value)


def test_an_epoch_is_a_pure_function_of_seed_and_epoch_whatever_the_workers(tiny):
    s = load_dataset("imagenet", data_dir=tiny, image_size=24, val_fraction=0.25)
    a = make_loaders(s, 8, seed=3, workers=0)[0]
    b = make_loaders(s, 8, seed=3, workers=2)[0]
    a1, b1 = _epoch(a), _epoch(b)
    assert len(a) == 5 and a1[0].shape == (36, 3, 24, 24) and a1[0].dtype == torch.float32
    assert torch.equal(a1[0], b1[0]) and torch.equal(a1[1], b1[1])
    a2 = _epoch(a)
    assert not torch.equal(a1[1], a2[1])  # a new epoch, a new order
    resumed = make_loaders(s, 8, seed=3, workers=0)[0]
    resumed.load_state_dict(a.state_dict())
    a3, r3 = _epoch(a), _epoch(resumed)
    assert torch.equal(a3[0], r3[0]) and torch.equal(a3[1], r3[1])
    other = _epoch(make_loaders(s, 8, seed=4, workers=0)[0])
    assert not torch.equal(a1[0], other[0])
    assert sorted(a1[1].tolist()) == sorted(s.train.labels.tolist())  # every train image once


def test_two_ranks_read_disjoint_shards_that_cover_the_epoch_transformed_as_one_rank_would(tiny):
    for n in (36, 37):
        shards = [epoch_order(n, seed=1, epoch=2, shuffle=True, rank=r, world=2) for r in range(2)]
        assert len(shards[0]) == len(shards[1]) == -(-n // 2)
        assert set(shards[0].tolist()) | set(shards[1].tolist()) == set(range(n))
        assert len(set(shards[0].tolist()) & set(shards[1].tolist())) == n % 2  # only the wrap-round pad repeats
    evals = [epoch_order(37, 0, 0, shuffle=False, rank=r, world=2, pad=False) for r in range(2)]
    assert sorted(evals[0].tolist() + evals[1].tolist()) == list(range(37))

    s = load_dataset("imagenet", data_dir=tiny, image_size=24, val_fraction=0.25)
    one = StreamLoader(s.train, 36, 24, s.mean, s.std, s.scale, train=True, seed=5)
    ranks = [StreamLoader(s.train, 18, 24, s.mean, s.std, s.scale, train=True, seed=5, rank=r, world=2) for r in range(2)]
    (x, y), = list(one)
    for r, loader in enumerate(ranks):
        (xr, yr), = list(loader)
        assert torch.equal(xr, x[r::2]) and torch.equal(yr, y[r::2])


def test_batch_decode_gives_the_worker_decodes_batches_and_is_refused_for_other_files(tiny, tmp_path):
    """``gpu_decode``'s path (workers read bytes, the loader decodes each batch on its device and crops there)
    run on the CPU, where the decoder is the same: the very tensors of decoding in the workers. At 32 px no crop of
    these <= 60 px images is decoded at a DCT scale (the workers' only other pixels: tests/test_jpeg_crop.py)."""
    s = load_dataset("imagenet", data_dir=tiny, image_size=32, val_fraction=0.25)
    for workers in (0, 2):
        for usual, batched in zip(make_loaders(s, 8, seed=3, workers=workers),
                                  make_loaders(s, 8, seed=3, workers=workers, batch_decode=True)):
            for _ in range(2):  # two epochs: new orders and crops, the same on both paths
                (xa, ya), (xb, yb) = _epoch(usual), _epoch(batched)
                assert torch.equal(xa, xb) and torch.equal(ya, yb)
    png = write_ilsvrc(tmp_path / "png", classes=2, train_per_class=4, val_per_class=1, suffix=".png")
    p = load_dataset("imagenet", data_dir=png, image_size=24, val_fraction=0.25)
    with pytest.raises(DatasetNotFoundError, match=r"^gpu_decode: .* holds files other than JPEGs"):
        make_loaders(p, 4, seed=0, batch_decode=True)
    with pytest.raises(ConfigError, match=r"^gpu_decode: decodes on the trial's GPU, and this trial runs on cpu"):
        from tuner.core.trainer import Trainer

        Trainer(TrialConfig(dataset="imagenet", data_dir=str(tiny), image_size=24, device="cpu", gpu_decode=True,
                            student="resnet8x4", teacher="resnet8x4", alpha=0.0, beta=0.0))


def test_eval_images_are_resize_then_centre_crop_exactly(tiny):
    """torchvision's Resize + CenterCrop of the whole decode, exactly: none of these val images is twice the resize,
    so none is decoded at a DCT scale (tests/test_jpeg_crop.py holds those to their tolerance)."""
    s = load_dataset("imagenet", data_dir=tiny, image_size=24, val_fraction=0.25)
    _, val, _ = make_loaders(s, 5, seed=0)
    x, y = _epoch(val)
    reference = v2.Compose([v2.Resize(eval_resize(24), antialias=True), v2.CenterCrop(24),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    expected = torch.stack([reference(decode_image(s.val.path(i))) for i in range(len(s.val))])
    assert all(min(decode_image(s.val.path(i)).shape[-2:]) < 2 * eval_resize(24) for i in range(len(s.val)))
    assert eval_resize(224) == 256
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
    assert torch.equal(y, s.val.labels)


def test_train_crops_follow_torchvisions_random_resized_crop_rule():
    image = torch.zeros(3, 37, 53)
    for seed in range(300):
        torch.manual_seed(seed)
        expected = v2.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        assert crop_box(37, 53, torch.Generator().manual_seed(seed)) == tuple(expected)


def test_imagefolder_streams_past_its_memory_budget(tiny):
    assert isinstance(load_dataset("imagefolder", data_dir=tiny / "train", image_size=16), DataSplits)
    streamed = load_dataset("imagefolder", data_dir=tiny / "train", image_size=16, memory_budget_gb=1e-6)
    assert isinstance(streamed, StreamSplits) and streamed.image_size == 16
    assert isinstance(load_dataset("imagefolder", data_dir=tiny / "train", image_size=16, data_mode="stream"), StreamSplits)
    kept = load_dataset("imagefolder", data_dir=tiny / "train", image_size=16, data_mode="memory", class_subset=3)
    assert isinstance(kept, DataSplits) and kept.num_classes == 3 and len(kept.class_index) == 3


def test_data_options_are_refused_by_data_sets_that_lack_them():
    with pytest.raises(ConfigError, match=r"^class_subset: dataset 'digits' does not take it; only imagefolder, imagenet do$"):
        TrialConfig.from_dict({"class_subset": 10})
    with pytest.raises(ConfigError, match=r"^data_mode: dataset 'imagenet' does not take it; only imagefolder do$"):
        TrialConfig.from_dict({"dataset": "imagenet", "data_mode": "memory"})
    with pytest.raises(ConfigError, match=r"^data_mode: "):
        TrialConfig.from_dict({"dataset": "imagefolder", "data_mode": "disk"})
    with pytest.raises(ConfigError, match=r"^train_fraction: "):
        TrialConfig.from_dict({"dataset": "imagenet", "train_fraction": 0})
    cfg = TrialConfig.from_dict({"dataset": "imagenet", "class_subset": 100, "train_fraction": 0.1})
    assert cfg.data_options() == {"class_subset": 100, "train_fraction": 0.1}


def test_weights_of_all_classes_serve_a_class_subset_with_the_same_logits(tmp_path):
    torch.manual_seed(0)
    full = build_model("resnet18", 10).eval()
    torch.save(full.state_dict(), tmp_path / "resnet18.pth")
    sub = load_weights(build_model("resnet18", 3), tmp_path / "resnet18.pth", classes=(1, 4, 9)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(sub(x), full(x)[:, [1, 4, 9]])
