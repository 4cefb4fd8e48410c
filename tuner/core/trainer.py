"""The epoch loop, usable without Ray: build data + models from a TrialConfig, train, evaluate, resume.

``python -m tuner.core.train`` (``tuner/core/train.py``) is its command line.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from tuner.core import metrics as M
from tuner.core.config import ConfigError, TrialConfig
from tuner.core.catalog import connector_fits, feature_channels, list_connectors
from tuner.core.connectors import build_connector
from tuner.core.data import DataSplits, load_dataset, make_loaders
from tuner.core.distiller import LOSS_TERMS, Distiller, Learner
from tuner.core.models import build_model

__all__ = ["STATE_FILE", "Trainer", "TrainResult", "Diverged", "evaluate_model", "check_pair", "resolve_device", "seed_everything", "load_splits"]

#: the file of a trial checkpoint that holds ``Trainer.state_dict()``
STATE_FILE = "trainer_state.pt"

EpochCallback = Callable[[Dict[str, float], "Trainer"], None]


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; carries the (1-based) epoch it happened in."""

    def __init__(self, epoch: int, term: str, value: float) -> None:
        super().__init__(f"training diverged at epoch {epoch}: loss {term} = {value}")
        self.epoch, self.term, self.value = epoch, term, value


@dataclass
class TrainResult:
    """What one run produced: the per-epoch history and the final numbers."""

    history: List[Dict[str, float]]
    final: Dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def data_workers(cfg: TrialConfig) -> int:
    """Decoding processes for streamed data: ``data_workers``, else one fewer than the trial's CPUs
    (``threads``, or this machine's when unset), the last one kept for the step itself."""
    if cfg.data_workers is not None:
        return cfg.data_workers
    return max(0, (cfg.threads or os.cpu_count() or 1) - 1)


def load_splits(cfg: TrialConfig) -> DataSplits:
    """The data set a config names (the split itself is fixed, independent of the trial seed)."""
    return load_dataset(cfg.dataset, data_dir=cfg.data_dir, val_fraction=cfg.val_fraction, **cfg.data_options())


def check_pair(cfg: TrialConfig, splits: DataSplits) -> None:
    """The configured connector can join this student to this teacher, or a one-line ConfigError."""
    if not cfg.needs_teacher:
        return
    c_s, c_t = feature_channels(cfg.student), feature_channels(cfg.teacher)
    if not connector_fits(cfg.connector, c_s, c_t):
        fits = [n for n in list_connectors() if connector_fits(n, c_s, c_t)]
        raise ConfigError(f"connector: {cfg.connector!r} cannot join student {cfg.student} ({c_s} channels) to teacher "
                          f"{cfg.teacher} ({c_t} channels); choose from: {', '.join(fits)}")


class Trainer:
    """One distillation run: owns the Distiller, optimizer, LR schedule, loaders and their RNG state.

    Args:
        cfg: the trial's config.
        teacher: the frozen teacher (a ``DistillableModel``); ignored when ``cfg`` uses no teacher.
        splits: the data, when the caller already holds it (a sweep loads it once).
        rank, world: this process's place in an initialised ``torch.distributed`` group (a trial on several
            workers, ``tuner/driver/workers.py``): the student and connector train under DDP, each rank reads its share
            of every global batch of ``cfg.batch_size``, and the epoch's losses and evaluations are all-reduced,
            so every rank computes the same metrics.
    """

    def __init__(self, cfg: TrialConfig, teacher: Optional[nn.Module] = None, splits: Optional[DataSplits] = None,
                 rank: int = 0, world: int = 1) -> None:
        self.cfg, self.rank, self.world = cfg, rank, world
        self.device = resolve_device(cfg.device)
        if cfg.gpu_decode and self.device.type != "cuda":
            raise ConfigError(f"gpu_decode: decodes on the trial's GPU, and this trial runs on {self.device.type}; "
                              "set gpu_decode: false")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        self.splits = splits if splits is not None else load_splits(cfg)
        if cfg.val_split_seed is not None:  # validation images that chose no candidate (docs/method.md)
            self.splits = self.splits.with_val_seed(cfg.val_split_seed)
        self.train_loader, self.val_loader, self.test_loader = make_loaders(
            self.splits, cfg.batch_size, seed=cfg.seed, device=self.device.type, eval_batch_size=cfg.eval_batch_size,
            workers=data_workers(cfg), rank=rank, world=world, batch_decode=cfg.gpu_decode)
        student = build_model(cfg.student, self.splits.num_classes, in_channels=self.splits.in_channels)
        connector = None
        if cfg.needs_teacher:
            if teacher is None:
                raise ValueError("teacher: this config has alpha, beta or gamma > 0 but no teacher was given")
            connector = build_connector(cfg.connector, student.feature_channels, teacher.feature_channels)
        else:
            teacher = None
        # channels_last lets cuDNN use its fastest (tensor-core) convolution kernels; a no-op on CPU
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        if self.device.type == "cuda":
            # A trial's shapes are fixed, so cuDNN's one-time autotuning pays back: on an H100, batch 64,
            # resnet8x4's step went 5.5 -> 4.5 ms and the SRRL step 9.8 -> 8.9 ms (bench/distill_cost).
            torch.backends.cudnn.benchmark = True
        self.distiller = Distiller(teacher, student, connector, cfg.alpha, cfg.beta, cfg.gamma, cfg.temperature).to(
            self.device, memory_format=self.memory_format)
        self.ddp: Optional[nn.Module] = None
        if world > 1:  # broadcasts rank 0's weights and buffers now, averages the gradients in backward
            self.ddp = nn.parallel.DistributedDataParallel(
                Learner(self.distiller), device_ids=[torch.cuda.current_device()] if self.device.type == "cuda" else None)
        self.optimizer = _build_optimizer(cfg, list(self.distiller.learnable_parameters()))
        self.scheduler = _build_scheduler(cfg, self.optimizer)
        self.epoch = 0  # epochs completed
        self.best_val_acc = 0.0
        self.history: List[Dict[str, float]] = []

    @property
    def student(self) -> nn.Module:
        return self.distiller.student

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.bf16 and self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_epoch(self) -> Dict[str, float]:
        """One pass over the training split; returns mean loss terms and throughput."""
        self.distiller.train()
        sums = {k: torch.zeros((), device=self.device) for k in LOSS_TERMS}
        seen = 0
        start = time.perf_counter()
        for x, y in self.train_loader:
            x = x.contiguous(memory_format=self.memory_format)
            with self._autocast():
                if self.ddp is None:
                    _, terms = self.distiller(x, y)
                else:
                    _, terms = self.ddp(x, y, self.distiller.teacher_outputs(x))
            self.optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            self.optimizer.step()
            for k in LOSS_TERMS:
                sums[k] += terms[k].detach() * len(y)
            seen += len(y)
        if self.world > 1:  # the epoch's sums over every rank's samples: all ranks see the same means
            totals = _all_reduce([*(sums[k] for k in LOSS_TERMS), seen], self.device)
            sums, seen = dict(zip(LOSS_TERMS, totals[:-1])), int(totals[-1])
        means = {k: float(v) / max(seen, 1) for k, v in sums.items()}  # one device sync per epoch
        elapsed = time.perf_counter() - start
        for k in LOSS_TERMS:
            if not math.isfinite(means[k]):
                raise Diverged(self.epoch + 1, k, means[k])
        out = {M.TERM_METRIC[k]: v for k, v in means.items()}
        out[M.IMAGES_PER_S] = seen / elapsed if elapsed > 0 else float("inf")
        out[M.EPOCH_TIME_S] = elapsed
        return out

    def evaluate(self, split: str = "val") -> Tuple[float, float]:
        """Student accuracy (percent) and mean cross-entropy on ``split`` ('val' or 'test')."""
        self.distiller.eval()
        loader = {"val": self.val_loader, "test": self.test_loader}[split]
        if self.world == 1:
            return evaluate_model(self.student, loader, self._autocast, self.memory_format)
        import torch.distributed as dist

        for buffer in self.ddp.module.buffers():  # BatchNorm statistics moved on each rank's last batch: take rank 0's
            dist.broadcast(buffer, 0)
        return _accuracy_and_loss(*(float(v) for v in _all_reduce(
            _eval_sums(self.student, loader, self._autocast, self.memory_format), self.device)))

    def step(self) -> Dict[str, float]:
        """Train one epoch, evaluate on val, advance the LR schedule; returns the epoch's metrics."""
        lr = self.optimizer.param_groups[0]["lr"]
        start = time.perf_counter()
        row = self.train_epoch()
        val_acc, val_loss = self.evaluate("val")
        self.scheduler.step()
        self.epoch += 1
        self.best_val_acc = max(self.best_val_acc, val_acc)  # = M.rank_value of the val history
        row.update({M.EPOCH: self.epoch, M.VAL_ACC: val_acc, M.VAL_LOSS: val_loss, M.BEST_VAL_ACC: self.best_val_acc, M.LR: lr,
                    M.STEP_TIME_S: time.perf_counter() - start})
        self.history.append(row)
        return row

    def fit(self, on_epoch: Optional[EpochCallback] = None) -> TrainResult:
        """Run the remaining epochs (all of them, or those left after ``load_state_dict``), then test."""
        while self.epoch < self.cfg.epochs:
            row = self.step()
            if on_epoch is not None:
                on_epoch(row, self)
        test_acc, _ = self.evaluate("test")
        final = dict(self.history[-1]) if self.history else {}
        final[M.TEST_ACC] = test_acc
        return TrainResult(history=list(self.history), final=final)

    # ---- checkpointing: everything needed to continue exactly where a run stopped ---------------
    def state_dict(self) -> Dict[str, Any]:
        """What a checkpoint holds: the learnable weights, optimiser, schedule, loader position, RNG, and
        the full ``TrialConfig`` (``config``) the run trains with, so export and sync read it from here."""
        return {
            "config": self.cfg.to_dict(),
            "learnable": self.distiller.learnable_state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best_val_acc": self.best_val_acc,
            "history": self.history,
            "train_loader": self.train_loader.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.distiller.load_learnable_state_dict(state["learnable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch = int(state["epoch"])
        self.best_val_acc = float(state["best_val_acc"])
        self.history = [dict(r) for r in state["history"]]
        self.train_loader.load_state_dict(state["train_loader"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def evaluate_model(model: nn.Module, loader: Any, autocast: Callable[[], Any] = contextlib.nullcontext,
                   memory_format: torch.memory_format = torch.contiguous_format) -> Tuple[float, float]:
    """Accuracy (percent) and mean cross-entropy of ``model`` (already in eval mode) over ``loader``."""
    return _accuracy_and_loss(*_eval_sums(model, loader, autocast, memory_format))


def _accuracy_and_loss(correct: float, loss: float, n: float) -> Tuple[float, float]:
    """Accuracy (percent) and mean cross-entropy from the sums of ``_eval_sums``."""
    return 100.0 * correct / max(n, 1), loss / max(n, 1)


@torch.no_grad()
def _eval_sums(model: nn.Module, loader: Any, autocast: Callable[[], Any],
               memory_format: torch.memory_format) -> Tuple[int, float, int]:
    """Correct predictions, summed cross-entropy and images seen over ``loader``."""
    correct, loss, n = 0, 0.0, 0
    for x, y in loader:
        x = x.contiguous(memory_format=memory_format)
        with autocast():
            z = model(x)
        loss += float(nn.functional.cross_entropy(z.float(), y, reduction="sum"))
        correct += int((z.argmax(1) == y).sum())
        n += len(y)
    return correct, loss, n


def _all_reduce(values: List[Any], device: torch.device) -> torch.Tensor:
    """Sum scalars (numbers or 0-d tensors) over the ranks of the default process group, in float64."""
    import torch.distributed as dist

    t = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    dist.all_reduce(t)
    return t


def _build_optimizer(cfg: TrialConfig, params: List[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _build_scheduler(cfg: TrialConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per epoch; multistep milestones are fractions of the epoch budget (0.625 of 240 = 150)."""
    if cfg.schedule == "multistep":
        milestones = sorted({max(1, round(m * cfg.epochs)) for m in cfg.lr_milestones})
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=cfg.lr_decay)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
