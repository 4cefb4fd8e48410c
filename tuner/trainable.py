"""The Ray Tune function trainable: a thin adapter from ``tuner.trainer.Trainer`` to Tune.

Every epoch it calls ``ray.tune.report(metrics, checkpoint=...)``; on a restart it restores student,
connector, optimizer, LR schedule, epoch and RNG state from ``tune.get_checkpoint()`` and continues
from the next epoch. The teacher's weights and the data arrive through Ray's object store
(``tune.with_parameters``), so no trial retrains or re-reads them.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from tuner import metrics as M
from tuner.config import apply_params
from tuner.data import DataSplits
from tuner.models import build_model, count_macs, count_params
from tuner.trainer import STATE_FILE, Diverged, Trainer, load_splits

__all__ = ["train_srrl"]

def train_srrl(
    config: Dict[str, Any],
    base: Optional[Dict[str, Any]] = None,
    teacher_state: Optional[Dict[str, torch.Tensor]] = None,
    teacher_info: Optional[Dict[str, Any]] = None,
    splits: Optional[DataSplits] = None,
) -> None:
    """Run one SRRL trial under Tune (see the module docstring).

    Args:
        config: the sampled params (TrialConfig fields, plus label keys such as ``arm``).
        base: the sweep's base TrialConfig as a dict (threads and device already set per trial).
        teacher_state: the frozen teacher's state_dict (shared through the object store).
        teacher_info: teacher metadata (``teacher_val_acc`` ...), reported with every result.
        splits: the data set, loaded once on the driver.
    """
    import ray
    from ray import tune

    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)  # one line per checkpoint otherwise
    # Tune reuses this actor for the next trial only once this thread has ended, and waits 2 s by default; a
    # trial streaming its data first shuts down its DataLoader workers (seconds on a loaded machine: with 2 s a
    # reused actor failed its next trial with "Trainable runner reuse requires reset_config()"). Read by
    # FunctionTrainable.reset_config in this process, so it holds on any cluster.
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    cfg = apply_params(base or {}, config)
    splits = splits if splits is not None else load_splits(cfg)
    teacher = None
    if cfg.needs_teacher:
        if teacher_state is None:
            raise ValueError("teacher: this trial needs the sweep's teacher weights but none were passed")
        teacher = build_model(cfg.teacher, splits.num_classes, in_channels=splits.in_channels)
        teacher.load_state_dict(teacher_state)
    trainer = Trainer(cfg, teacher, splits)

    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True))

    data = trainer.splits
    once = {"node_id": ray.get_runtime_context().get_node_id(), M.STUDENT_PARAMS: count_params(trainer.student),
            M.STUDENT_MACS: count_macs(trainer.student, (data.in_channels, data.image_size, data.image_size)),
            **{k: v for k, v in (teacher_info or {}).items() if k in (M.TEACHER_VAL_ACC, M.TEACHER_TEST_ACC)}}

    while trainer.epoch < cfg.epochs:
        try:
            row = trainer.step()
        except Diverged as e:
            # stop at once, no checkpoint, no retry: the searcher records it as failed
            tune.report({**once, M.EPOCH: e.epoch, M.DIVERGED_KEY: 1.0, M.VAL_ACC: 0.0, M.RANK_VAL_ACC: 0.0,
                         f"{M.DIVERGED_KEY}_term": e.term})
            return
        if trainer.epoch == cfg.epochs:
            row[M.TEST_ACC] = trainer.evaluate("test")[0]
        with tempfile.TemporaryDirectory() as folder:
            _save(trainer.state_dict(), Path(folder) / STATE_FILE)
            tune.report({**once, **row, M.DIVERGED_KEY: 0.0}, checkpoint=tune.Checkpoint.from_directory(folder))


def _save(state: Dict[str, Any], path: Path) -> None:
    """Write a trial checkpoint; a failure is an error naming the path, never a silent skip."""
    try:
        with open(path, "wb") as f:  # Python's open reports OSError with errno; torch.save alone a RuntimeError
            torch.save(state, f)
    except OSError as e:
        raise OSError(f"checkpoint: cannot write {path}: {e.strerror or e}") from e
