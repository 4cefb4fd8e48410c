"""Batches from ``DataSplits`` without worker processes: tensor augmentation, normalisation, and a
loader whose position is part of a checkpoint (a resumed trial continues mid-epoch-order). ``make_loaders``
serves both kinds of splits."""
from __future__ import annotations

from typing import Any, Dict, Iterator, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tuner.data.normalize import Normalize
from tuner.data.splits import AUGMENTS, CROP_PADDING, DataSplits
from tuner.data.stream import StreamSplits, make_stream_loaders

__all__ = ["TensorLoader", "make_loaders"]

class TensorLoader:
    """Iterates (images, labels) batches of in-memory tensors: float32 normalised (B, C, H, W), int64 (B,).

    Each ``iter()`` is one epoch. Epoch ``e`` draws its order and augmentation from a generator
    seeded by (seed, e), so the same seed gives the same batches, and ``state_dict()`` (seed,
    epoch and that generator's state) restored into a fresh loader continues the identical next epoch.
    ``augment="crop_flip"``: RandomCrop(pad 4, zeros in raw pixel space) + horizontal flip, done for
    the whole batch by one gather.
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, shuffle: bool = False, augment: str = "none",
                 mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,), scale: float = 1.0, seed: int = 0,
                 drop_last: bool = False, device: str | torch.device = "cpu") -> None:
        if augment not in AUGMENTS:
            raise ValueError(f"augment: unknown {augment!r}; choose from: {', '.join(AUGMENTS)}")
        if batch_size < 1 or len(x) != len(y):
            raise ValueError(f"need batch_size >= 1 and len(x) == len(y); got {batch_size}, {len(x)}, {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.augment, self.drop_last = batch_size, shuffle, augment, drop_last
        self.device = torch.device(device)
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
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            xb = self.x[idx].to(self.device, non_blocking=True)
            yb = self.y[idx].to(self.device, non_blocking=True)
            if self.augment == "crop_flip":
                xb = self._crop_flip(xb, g)
            yield self._normalize(xb), yb

    def _crop_flip(self, x: Tensor, g: torch.Generator) -> Tensor:
        """Random crop of the zero-padded batch plus random horizontal flip, as one gather: (B, C, H, W) -> same."""
        b, c, h, w = x.shape
        p = CROP_PADDING
        offsets = torch.randint(2 * p + 1, (2, b), generator=g).to(x.device)
        flip = (torch.rand(b, generator=g) < 0.5).to(x.device)
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
                 eval_batch_size: int | None = None, workers: int = 0) -> Tuple[Any, Any, Any]:
    """(train, val, test) loaders: train shuffled and augmented as ``splits.augment``, eval ones plain and ordered.

    In-memory splits get ``TensorLoader``s (the train one drops a last batch of a single sample: BatchNorm
    cannot train on it); streamed ones ``StreamLoader``s decoding in ``workers`` processes.
    """
    if isinstance(splits, StreamSplits):
        return make_stream_loaders(splits, batch_size, seed, device, eval_batch_size, workers)
    norm = dict(mean=splits.mean, std=splits.std, scale=splits.scale, device=device)
    train = TensorLoader(splits.train_x, splits.train_y, batch_size, shuffle=True, augment=splits.augment, seed=seed,
                         drop_last=len(splits.train_x) % batch_size == 1, **norm)
    eval_bs = eval_batch_size or batch_size
    val = TensorLoader(splits.val_x, splits.val_y, eval_bs, **norm)
    test = TensorLoader(splits.test_x, splits.test_y, eval_bs, **norm)
    return train, val, test
