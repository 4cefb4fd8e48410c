"""Batches from ``DataSplits`` without worker processes: tensor augmentation, normalisation, and a
loader whose position is part of a checkpoint (a resumed trial continues mid-epoch-order). ``make_loaders``
serves both kinds of splits."""
from __future__ import annotations

from typing import Any, Dict, Iterator, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tuner.core.data.normalize import Normalize
from tuner.core.data.splits import AUGMENTS, CROP_PADDING, DataSplits
from tuner.core.data.stream import StreamSplits, make_stream_loaders

__all__ = ["TensorLoader", "make_loaders"]

class TensorLoader:
    """Iterates (images, labels) batches of in-memory tensors: float32 normalised (B, C, H, W), int64 (B,).

    Each ``iter()`` is one epoch. Epoch ``e`` draws its order and augmentation from a generator
    seeded by (seed, e), so the same seed gives the same batches, and ``state_dict()`` (seed,
    epoch and that generator's state) restored into a fresh loader continues the identical next epoch.
    ``augment="crop_flip"``: RandomCrop(pad 4, zeros in raw pixel space) + horizontal flip, done for
    the whole batch by one gather.

    ``rank``/``world`` (DDP): ``batch_size`` is the global batch; rank r takes positions ``r::world`` of each
    global batch, augmented with the draws the one-process loader makes for them, so the ranks' batches
    together are exactly the one-process batches (docs/architecture.md, "Trials on several workers").
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, augment: str = "none",
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), scale: float = 1.0, seed: int = 0,
                 drop_last: bool = False, device: str | torch.device = "cpu", rank: int = 0, world: int = 1) -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment: unknown {augment!r}; choose from: {', '.join(AUGMENTS)}")
        if batch_size < 1 or len(x) != len(y) or not 0 <= rank < world:
            raise ValueError(f"need batch_size >= 1, len(x) == len(y) and 0 <= rank < world; got {batch_size}, {len(x)}, "
                             f"{len(y)}, {rank}, {world}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.device = torch.device(device)
        self.rank, self.world = rank, world
        self.seed, self.epoch = int(seed), 0
        self.generator = self._epoch_generator()
        self._normalize = Normalize(mean, std, scale).to(self.device)

    def _epoch_generator(self) -> torch.Generator:
        """A CPU generator for the current epoch, seeded from (seed, epoch)."""
        words = np.random.SeedSequence([self.seed, self.epoch]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[Tensor, Tensor]]:
        g = self.generator
        self.epoch += 1
        self.generator = self._epoch_generator()
        n = len(self.x)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        return self._batches(order, g)

    def _batches(self, order: Tensor, g: torch.Generator) -> Iterator[Tuple[Tensor, Tensor]]:
        mine = slice(self.rank, None, self.world)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            draws = self._draw_crop_flip(len(idx), g) if self.augment == "crop_flip" else None  # the global batch's
            idx = idx[mine]
            xb = self.x[idx].to(self.device, non_blocking=True)
            yb = self.y[idx].to(self.device, non_blocking=True)
            if draws is not None:
                offsets, flip = draws
                xb = self._crop_flip(xb, offsets[:, mine].to(xb.device), flip[mine].to(xb.device))
            yield self._normalize(xb), yb

    @staticmethod
    def _draw_crop_flip(b: int, g: torch.Generator) -> Tuple[Tensor, Tensor]:
        """Per-sample crop offsets (2, B) in [0, 2 * pad] and flip flags (B,) for a batch of ``b``."""
        return torch.randint(2 * CROP_PADDING + 1, (2, b), generator=g), torch.rand(b, generator=g) < 0.5

    @staticmethod
    def _crop_flip(x: Tensor, offsets: Tensor, flip: Tensor) -> Tensor:
        """Crop of the zero-padded batch at ``offsets`` (2, B) plus horizontal ``flip`` (B,), as one gather:
        (B, C, H, W) -> same."""
        b, c, h, w = x.shape
        p = CROP_PADDING
        rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
        cols_idx = torch.arange(w, device=x.device)
        cols = offsets[1, :, None] + torch.where(flip[:, None], cols_idx.flip(0), cols_idx)  # (B, W)
        padded = F.pad(x, (p, p, p, p))
        batch = torch.arange(b, device=x.device)[:, None, None, None]
        chans = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]

    def state_dict(self) -> Dict[str, Any]:
        """Seed, epoch counter and the next epoch's generator state."""
        return {"seed": self.seed, "epoch": self.epoch, "generator": self.generator.get_state()}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore a ``state_dict()``: the next ``iter()`` yields the epoch the saved loader would have."""
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])
        self.generator = self._epoch_generator()
        self.generator.set_state(state["generator"])


def make_loaders(splits: DataSplits | StreamSplits, batch_size: int, seed: int, device: str | torch.device = "cpu",
                 eval_batch_size: int | None = None, workers: int = 0, rank: int = 0, world: int = 1,
                 batch_decode: bool = False) -> Tuple[Any, Any, Any]:
    """(train, val, test) loaders: train shuffled and augmented as ``splits.augment``, eval ones plain and ordered.

    In-memory splits get ``TensorLoader``s (the train one drops a last batch that would leave a rank a single
    sample: BatchNorm cannot train on it); streamed ones ``StreamLoader``s decoding in ``workers`` processes.
    ``batch_size`` is the global batch: under DDP (``world`` > 1) rank ``rank`` reads its share of each one.
    ``batch_decode``: streamed JPEGs are decoded a batch at a time on ``device`` (``gpu_decode``).
    """
    if isinstance(splits, StreamSplits):
        share = lambda b: -(-b // world)  # noqa: E731 - rank r reads order[r::world], in batches of the share
        return make_stream_loaders(splits, share(batch_size), seed, device, eval_batch_size and share(eval_batch_size),
                                   workers, rank, world, batch_decode)
    norm = dict(mean=splits.mean, std=splits.std, scale=splits.scale, device=device, rank=rank, world=world)
    train = TensorLoader(splits.train_x, splits.train_y, batch_size, shuffle=True, augment=splits.augment, seed=seed,
                         drop_last=0 < len(splits.train_x) % batch_size < 2 * world, **norm)
    eval_bs = eval_batch_size or batch_size
    val = TensorLoader(splits.val_x, splits.val_y, eval_bs, **norm)
    test = TensorLoader(splits.test_x, splits.test_y, eval_bs, **norm)
    return train, val, test
