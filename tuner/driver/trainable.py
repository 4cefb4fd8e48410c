"""The Ray Tune function trainable: a thin adapter from ``tuner.core.trainer.Trainer`` to Tune.

Every epoch it calls ``ray.tune.report(metrics, checkpoint=...)``; on a restart it restores student,
connector, optimizer, LR schedule, epoch and RNG state from ``tune.get_checkpoint()`` and continues
from the next epoch. The teacher's weights and the data arrive through Ray's object store
(``tune.with_parameters``), so no trial retrains or re-reads them.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import posixpath
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import torch

from tuner.core import metrics as M
from tuner.core.config import TrialConfig, apply_params
from tuner.core.data import DataSplits
from tuner.core.models import build_model, count_macs, count_params
from tuner.core.trainer import STATE_FILE, Diverged, Trainer, load_splits

__all__ = ["train_srrl", "build_trainer", "restore", "trial_constants", "run_epochs", "checkpoint_folder", "save_state"]

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
    trainer = build_trainer(cfg, teacher_state, splits)
    restore(trainer, tune.get_checkpoint())

    def report(metrics: Dict[str, Any], state: Optional[Dict[str, Any]]) -> None:
        with checkpoint_folder(state) as folder:
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)

    run_epochs(trainer, trial_constants(trainer, teacher_info, ray.get_runtime_context().get_node_id()), report)


def build_trainer(cfg: TrialConfig, teacher_state: Optional[Dict[str, torch.Tensor]], splits: Optional[DataSplits],
                  rank: int = 0, world: int = 1) -> Trainer:
    """The trial's Trainer, its teacher built from the shared weights (``rank``/``world``: see ``Trainer``)."""
    splits = splits if splits is not None else load_splits(cfg)
    teacher = None
    if cfg.needs_teacher:
        if teacher_state is None:
            raise ValueError("teacher: this trial needs the sweep's teacher weights but none were passed")
        teacher = build_model(cfg.teacher, splits.num_classes, in_channels=splits.in_channels)
        teacher.load_state_dict(teacher_state)
    return Trainer(cfg, teacher, splits, rank=rank, world=world)


def restore(trainer: Trainer, checkpoint: Any) -> None:
    """Continue from a trial checkpoint (a ``tune.Checkpoint`` holding ``STATE_FILE``); None: start afresh.

    The file is read straight from the checkpoint's file system, never through ``as_directory``: for a
    checkpoint that is not on pyarrow's local file system (ours: tuner/driver/atomic_fs.py, or s3://) that downloads
    into a temporary folder the ranks on a node share, and a rank that comes to it once another's download
    is done downloads again over the files the other is reading (seen: a restarted worker group's rank
    read a torn state file, and the restart failed)."""
    if checkpoint is not None:
        with checkpoint.filesystem.open_input_file(posixpath.join(checkpoint.path, STATE_FILE)) as f:
            state = torch.load(io.BytesIO(f.read()), map_location="cpu", weights_only=True)
        trainer.load_state_dict(state)


def trial_constants(trainer: Trainer, teacher_info: Optional[Dict[str, Any]], node_id: str) -> Dict[str, Any]:
    """What every result of the trial carries: where it ran and on how many workers, the student's size, the
    teacher's accuracy."""
    data = trainer.splits
    return {"node_id": node_id, M.WORKERS: trainer.world, M.STUDENT_PARAMS: count_params(trainer.student),
            M.STUDENT_MACS: count_macs(trainer.student, (data.in_channels, data.image_size, data.image_size)),
            **{k: v for k, v in (teacher_info or {}).items() if k in (M.TEACHER_VAL_ACC, M.TEACHER_TEST_ACC)}}


def run_epochs(trainer: Trainer, once: Dict[str, Any], report: Callable[[Dict[str, Any], Optional[Dict[str, Any]]], None]) -> None:
    """The trial's remaining epochs, each ``report(metrics, trainer state to checkpoint)``; the last epoch's
    metrics add the test accuracy. A diverged loss is reported once with no checkpoint, and ends the trial
    (no retry: the searcher records it as failed)."""
    cfg = trainer.cfg
    while trainer.epoch < cfg.epochs:
        try:
            row = trainer.step()
        except Diverged as e:
            # the epoch was never evaluated: no val_acc, and the ranking value stays the best so far (a 0 here
            # was a fall in a running max, logged to MLflow as the trial's best_val_acc)
            report({**once, M.EPOCH: e.epoch, M.DIVERGED_KEY: 1.0, M.RANK_VAL_ACC: trainer.best_val_acc,
                    f"{M.DIVERGED_KEY}_term": e.term}, None)
            return
        if trainer.epoch == cfg.epochs:
            row[M.TEST_ACC] = trainer.evaluate("test")[0]
        report({**once, **row, M.DIVERGED_KEY: 0.0}, trainer.state_dict())


@contextlib.contextmanager
def checkpoint_folder(state: Optional[Dict[str, Any]]) -> Iterator[Optional[str]]:
    """A temporary folder holding ``state`` as a trial checkpoint (``STATE_FILE``), for one report; None
    (and no folder) when there is no state to keep."""
    if state is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as folder:
        save_state(state, Path(folder) / STATE_FILE)
        yield folder


def save_state(state: Dict[str, Any], path: Path) -> None:
    """Write a trial checkpoint; a failure is an error naming the path, never a silent skip."""
    try:
        with open(path, "wb") as f:  # Python's open reports OSError with errno; torch.save alone a RuntimeError
            torch.save(state, f)
    except OSError as e:
        raise OSError(f"checkpoint: cannot write {path}: {e.strerror or e}") from e
