"""Train-or-load the frozen teacher once, cached on disk by a content hash of what determines it."""
from __future__ import annotations

import functools
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch import nn

from tuner.core import metrics as M
from tuner.core.config import ConfigError, TrialConfig
from tuner.core.data import DataSplits, make_loaders
from tuner.core.models import build_model, load_weights
from tuner.core.files import atomic_write, default_cache_dir
from tuner.core.trainer import Diverged, Trainer, data_workers, evaluate_model

__all__ = ["Teacher", "ensure_teacher", "train_teacher", "teacher_key", "default_cache_dir", "load_user_weights"]

#: bump when the teacher training code changes in a way that changes its weights
_TEACHER_CODE_VERSION = 1
#: the recipe fields of a TrialConfig that determine the trained teacher's weights
_RECIPE_FIELDS = ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "lr_milestones",
                  "lr_decay", "teacher_epochs", "batch_size", "teacher_seed")


@dataclass
class Teacher:
    """A ready teacher: the frozen model plus where it came from and how good it is."""

    model: nn.Module
    arch: str
    key: str  # content hash (of the recipe for a trained one, of the file for a user checkpoint)
    path: str
    val_acc: float
    test_acc: float

    def info(self) -> Dict[str, Any]:
        return {"teacher": self.arch, "teacher_hash": self.key, "teacher_path": self.path,
                M.TEACHER_VAL_ACC: self.val_acc, M.TEACHER_TEST_ACC: self.test_acc}


def teacher_key(cfg: TrialConfig, splits: DataSplits) -> str:
    """Content hash of data set, architecture, training recipe and seed: same key -> same weights."""
    payload = {"v": _TEACHER_CODE_VERSION, "data": splits.fingerprint(), "arch": cfg.teacher,
               "recipe": {**{k: getattr(cfg, k) for k in _RECIPE_FIELDS}, "lr": cfg.teacher_lr or cfg.lr}}
    return hashlib.blake2b(json.dumps(payload, sort_keys=True).encode(), digest_size=16).hexdigest()


TrainFn = Callable[[TrialConfig, DataSplits], Tuple[Dict[str, torch.Tensor], float, float]]


def ensure_teacher(cfg: TrialConfig, splits: DataSplits, log: Callable[[str], None] = lambda _: None,
                   train: Optional[TrainFn] = None) -> Teacher:
    """The teacher ``cfg`` names: from ``cfg.teacher_checkpoint``, from the cache, or trained now and cached.

    A cache file that cannot be read (e.g. torn by a killed write on a filesystem without atomic
    rename) is discarded and the teacher retrained; never half-loaded.

    Args:
        train: how to train it when it must be trained: ``(cfg, splits) -> (state_dict, val_acc,
            test_acc)``; default ``train_teacher`` here (a sweep passes a Ray GPU task instead).
    """
    model = build_model(cfg.teacher, splits.num_classes, in_channels=splits.in_channels)
    if cfg.teacher_checkpoint:
        path = Path(cfg.teacher_checkpoint).expanduser().resolve()
        load_user_weights(model, path, field="teacher_checkpoint", arch=cfg.teacher, classes=splits.class_index)
        val_acc, test_acc = _accuracy(model, cfg, splits)
        key = hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
        log(f"teacher {cfg.teacher} loaded from {path}: val_acc {val_acc:.2f} test_acc {test_acc:.2f}")
        return Teacher(model.eval(), cfg.teacher, key, str(path), val_acc, test_acc)

    key = teacher_key(cfg, splits)
    cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_dir()
    path = (cache / "teachers" / f"{cfg.dataset}-{cfg.teacher}-{key}.pt").resolve()
    if path.exists():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["state_dict"])
            log(f"teacher {cfg.teacher} from cache {path}: val_acc {state['val_acc']:.2f} test_acc {state['test_acc']:.2f}")
            return Teacher(model.eval(), cfg.teacher, key, str(path), float(state["val_acc"]), float(state["test_acc"]))
        except Exception as e:  # a torn or foreign file: retrain rather than trust it
            log(f"teacher cache {path} is unreadable ({type(e).__name__}); retraining")
            path.unlink(missing_ok=True)

    log(f"training teacher {cfg.teacher} on {cfg.dataset} for {cfg.teacher_epochs} epochs (cached after: {path})")
    state, val_acc, test_acc = (train or functools.partial(train_teacher, log=log))(cfg, splits)
    model.load_state_dict(state)
    payload = {"state_dict": model.state_dict(), "val_acc": val_acc, "test_acc": test_acc, "arch": cfg.teacher, "key": key}
    atomic_write(path, lambda f: torch.save(payload, f))
    log(f"teacher {cfg.teacher}: val_acc {val_acc:.2f} test_acc {test_acc:.2f}")
    return Teacher(model.eval(), cfg.teacher, key, str(path), val_acc, test_acc)


def load_user_weights(model: nn.Module, path: Path, field: str, arch: str,
                      classes: Optional[Tuple[int, ...]] = None) -> nn.Module:
    """``load_weights`` (weights_only, torchvision/RepDistiller keys) with one-line errors naming ``field``;
    ``classes``: the data's ``class_index`` when it is a class subset of what the weights were trained on."""
    if not path.is_file():
        raise ConfigError(f"{field}: file {str(path)!r} does not exist")
    try:
        return load_weights(model, path, classes=classes)
    except (RuntimeError, KeyError, ValueError) as e:
        raise ConfigError(f"{field}: {path} does not match architecture {arch!r} ({_mismatch(str(e))})") from None
    except Exception as e:  # weights_only refused a pickled object, or the file is not a checkpoint
        raise ConfigError(f"{field}: {path} is not a readable weights-only PyTorch checkpoint ({type(e).__name__})") from None


def train_teacher(cfg: TrialConfig, splits: DataSplits, log: Callable[[str], None] = lambda _: None
                  ) -> Tuple[Dict[str, torch.Tensor], float, float]:
    """Train the teacher with the same loop as every student (CE only, its own seed and epochs).

    Returns its CPU state_dict and its val and test accuracy.
    """
    teacher_cfg = cfg.replace(student=cfg.teacher, alpha=0.0, beta=0.0, gamma=0.0, epochs=max(cfg.teacher_epochs, 1),
                              seed=cfg.teacher_seed, teacher_checkpoint=None, lr=cfg.teacher_lr or cfg.lr)
    trainer = Trainer(teacher_cfg, splits=splits)
    every = max(teacher_cfg.epochs // 5, 1)
    start = time.monotonic()

    def progress(row: Dict[str, float], _: Any) -> None:
        """The first epoch, then every fifth of them, with the time per epoch and what is left (CIFAR on a CPU:
        minutes per epoch, so the first line says at once how long this will take)."""
        epoch = int(row[M.EPOCH])
        if epoch == 1 or epoch % every == 0:
            per = (time.monotonic() - start) / epoch
            log(f"  teacher epoch {epoch}/{teacher_cfg.epochs}: val_acc {row[M.VAL_ACC]:.2f} "
                f"({per:.0f} s/epoch, ~{per * (teacher_cfg.epochs - epoch) / 60:.0f} min left)")

    try:
        result = trainer.fit(progress)
    except Diverged as e:
        raise ConfigError(f"teacher_lr: training the teacher diverged at epoch {e.epoch} with lr {teacher_cfg.lr:g}; "
                          "set a smaller teacher_lr (or lr), or give a teacher_checkpoint") from None
    state = {k: v.cpu() for k, v in trainer.student.state_dict().items()}
    return state, float(result.final[M.VAL_ACC]), float(result.final[M.TEST_ACC])


def _accuracy(model: nn.Module, cfg: TrialConfig, splits: DataSplits) -> Tuple[float, float]:
    """Val and test accuracy of a loaded teacher."""

    _, val, test = make_loaders(splits, cfg.batch_size, seed=0, eval_batch_size=cfg.eval_batch_size,
                                workers=data_workers(cfg))
    model.eval()
    return evaluate_model(model, val)[0], evaluate_model(model, test)[0]


_SIZE = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) from checkpoint, "
                   r"the shape in current model is torch\.Size\(\[([\d, ]*)\]\)")


def _mismatch(error: str) -> str:
    """What differs, from ``load_state_dict``'s error: the first tensor whose shape differs (a classifier for
    another number of classes shows as its rows), else the first telling line."""
    size = _SIZE.search(error)
    if size:
        key, theirs, ours = size.groups()
        return f"{key} is [{theirs}] in the file, [{ours}] in the model"
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return next((ln for ln in lines if not ln.startswith("Error(s) in loading")), "keys or shapes differ")
