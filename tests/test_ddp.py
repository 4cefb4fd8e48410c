"""Training under DDP (gloo, two processes, no Ray): rank batches partition the one-process batches, and a
two-rank run follows a one-rank run of the same global batch."""
import json

import pytest
import torch

from tuner.core.config import TrialConfig
from tuner.core.data import TensorLoader
from tuner.core.models import build_model
from tuner.core.trainer import Trainer, load_splits

CFG = dict(dataset="digits", student="resnet8x4", teacher="resnet8x4", alpha=1.0, beta=1.0, epochs=2, batch_size=64,
           threads=1, device="cpu", lr=0.05)


def test_two_ranks_read_exactly_the_one_process_batches_with_their_augmentation():
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8).float()
    y = torch.arange(50)
    make = lambda rank, world: TensorLoader(x, y, 16, shuffle=True, augment="crop_flip", seed=3, rank=rank,  # noqa: E731
                                             world=world, scale=255.0)
    whole, ranks = make(0, 1), [make(0, 2), make(1, 2)]
    for _ in range(2):  # two epochs: the generator state carries over the same way
        for (xb, yb), (x0, y0), (x1, y1) in zip(whole, *ranks):
            assert torch.equal(yb[0::2], y0) and torch.equal(yb[1::2], y1)
            assert torch.equal(xb[0::2], x0) and torch.equal(xb[1::2], x1)
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 4


def _run(rank: int, world: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        cfg = TrialConfig.from_dict(CFG)
        splits = load_splits(cfg)
        teacher = build_model(cfg.teacher, splits.num_classes, in_channels=splits.in_channels)  # untrained: fine here
        history = Trainer(cfg, teacher, splits, rank=rank, world=world).fit().history
        with open(f"{out}.{rank}", "w") as f:
            json.dump(history, f)
    finally:
        torch.distributed.destroy_process_group()


def _history(tmp_path, world: int) -> list:
    out = str(tmp_path / f"h{world}")
    torch.multiprocessing.spawn(_run, args=(world, f"file://{tmp_path / f'pg{world}'}", out), nprocs=world)
    ranks = [json.loads(open(f"{out}.{r}").read()) for r in range(world)]
    for other in ranks[1:]:  # every rank computes the same epoch metrics (all-reduced)
        for a, b in zip(ranks[0], other):
            assert {k: a[k] for k in ("loss_total", "val_acc", "val_loss")} == {k: b[k] for k in ("loss_total", "val_acc", "val_loss")}
    return ranks[0]


@pytest.mark.slow
def test_two_ranks_follow_one_rank_of_the_same_global_batch(tmp_path):
    """Same data, same order, same augmentation, gradients averaged: what differs is BatchNorm, whose batch
    statistics are per rank (32 images, not 64). Tolerance: 15% of the epoch's loss and 6 points of val_acc."""
    one, two = _history(tmp_path, 1), _history(tmp_path, 2)
    assert [r["epoch"] for r in one] == [r["epoch"] for r in two] == [1, 2]
    for a, b in zip(one, two):
        assert abs(a["loss_total"] - b["loss_total"]) <= 0.15 * a["loss_total"], (a, b)
        assert abs(a["val_acc"] - b["val_acc"]) <= 6.0, (a, b)
