"""Metric names, the one rule that ranks trials and the one rule that says how a trial ended: a contract
shared by the training loop, the Ray trainable, the searcher, tracking and analysis. The README's
metrics table documents each name."""
from __future__ import annotations

import math
import re
from typing import Any, Optional, Sequence, Tuple

__all__ = [
    "EPOCH", "LOSS_TOTAL", "LOSS_CE", "LOSS_FM", "LOSS_SR", "LOSS_KD", "VAL_ACC", "VAL_LOSS",
    "BEST_VAL_ACC", "RANK_VAL_ACC", "rank_value", "rank_key", "GRACE_FRACTION", "TEST_ACC", "IMAGES_PER_S", "LR", "EPOCH_TIME_S",
    "STEP_TIME_S",
    "STUDENT_PARAMS", "STUDENT_MACS", "TEACHER_VAL_ACC", "TEACHER_TEST_ACC", "WORKERS",
    "PER_EPOCH", "PER_TRIAL", "TERM_METRIC", "DIVERGED_KEY", "FINISHED", "STOPPED_EARLY", "DIVERGED", "ERRORED",
    "INTERRUPTED", "PENDING", "RUNNING", "STALLED", "STALL_ERROR", "is_stall", "TRIAL_STATUSES", "ENDED_STATUSES",
    "trial_status",
]

EPOCH = "epoch"  # a result key and MLflow's step, not a logged metric
LOSS_TOTAL = "loss_total"  # mean weighted total ce + alpha fm + beta sr + gamma kd over the epoch's batches
LOSS_CE = "loss_ce"
LOSS_FM = "loss_fm"
LOSS_SR = "loss_sr"
LOSS_KD = "loss_kd"
VAL_ACC = "val_acc"  # percent, on the validation split (held out of train; the test split is never searched on)
VAL_LOSS = "val_loss"  # student cross-entropy on the validation split
BEST_VAL_ACC = "best_val_acc"  # max of val_acc over the epochs so far
#: THE ranking rule: what the study's value, ASHA's cut, the leaderboard, the report and the confirmation's
#: choice of candidates all rank trials by (``rank_value``). Measured by ``python -m bench.ranking_rule``
#: (docs/method.md, "Ranking trials"): on a 25-point digits grid x 5 seeds, the max over epochs predicted
#: the other seeds' mean test accuracy at least as well as the final epoch or a mean of the last k, and
#: clearly better at the early epochs where ASHA cuts. Compare it only between trials at equal epochs.
RANK_VAL_ACC = BEST_VAL_ACC
TEST_ACC = "test_acc"  # percent; reported once at the end, never searched on
IMAGES_PER_S = "images_per_s"  # training throughput of the epoch
LR = "lr"
EPOCH_TIME_S = "epoch_time_s"  # wall seconds of the epoch's training pass
STEP_TIME_S = "step_time_s"  # wall seconds of the whole epoch: training pass + val eval (what the bare loop costs)
STUDENT_PARAMS = "student_params"
STUDENT_MACS = "student_macs"
TEACHER_VAL_ACC = "teacher_val_acc"
TEACHER_TEST_ACC = "teacher_test_acc"
WORKERS = "workers"  # the DDP processes a trial trained on (tuner/driver/workers.py)

#: Distiller term -> metric name
TERM_METRIC = {"total": LOSS_TOTAL, "ce": LOSS_CE, "fm": LOSS_FM, "sr": LOSS_SR, "kd": LOSS_KD}
#: logged to MLflow at every epoch (step = epoch)
PER_EPOCH = (LOSS_TOTAL, LOSS_CE, LOSS_FM, LOSS_SR, LOSS_KD, VAL_ACC, VAL_LOSS, BEST_VAL_ACC,
             IMAGES_PER_S, LR, EPOCH_TIME_S, STEP_TIME_S)
#: constants of a trial (and test_acc, measured once at the end): logged once per trial
PER_TRIAL = (STUDENT_PARAMS, STUDENT_MACS, TEACHER_VAL_ACC, TEACHER_TEST_ACC, TEST_ACC, WORKERS)


def rank_value(val_accs: Sequence[float]) -> float:
    """The number a trial is ranked by at its latest epoch: the max of its val accuracies so far."""
    if not val_accs:
        raise ValueError("rank_value: no val_acc yet")
    return float(max(val_accs))


def rank_key(status: str, epochs_run: Any, value: Any, seeds: Any = 1, mode: str = "max") -> Tuple:
    """THE ranking order, as a sort key (first ranks first), for the leaderboard, the report, the
    confirmation's candidates and the warm start's pick: trials that ran every epoch (``FINISHED``) first,
    the others after them by the epochs they ran (a lower fidelity is not comparable with a higher one); then
    by the seeds behind ``value`` (a raced configuration's mean over more seeds first); then by ``value``
    (the best by ``mode``), a missing value last."""
    number = _float(value)
    missing = number is None or math.isnan(number)
    others = status != FINISHED
    return (others, -(_float(epochs_run) or 0.0) if others else 0.0, -(_float(seeds) or 1.0), missing,
            0.0 if missing else (-number if mode == "max" else number))


def _float(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


#: ASHA's default grace period as a fraction of the epoch budget. Measured by ``bench.ranking_rule``:
#: the rule's Spearman with the final multi-seed mean is 0.31 at epoch 7 of 30 (the old epochs // 4),
#: so cuts there were close to random; it first reaches 90% of its final value at epoch 12 (0.71 vs 0.78).
GRACE_FRACTION = 0.4


#: a result key: 1.0 in the result of the epoch whose loss went non-finite (its values are not real), else 0.0
DIVERGED_KEY = "diverged"

# ---- how a trial ended: THE status rule (the leaderboard, the MLflow callback, the study, analysis sync)
FINISHED = "finished"  # ran every planned epoch
STOPPED_EARLY = "stopped_early"  # Tune ended it before its last epoch: the scheduler's (ASHA's) cut
DIVERGED = "diverged"  # a loss went non-finite; the trial stopped there
ERRORED = "errored"  # raised (a bug, a lost node); --resume re-runs it
STALLED = "stalled"  # sent no result for its stall limit and the driver stopped it (an errored trial; --resume re-runs it)
INTERRUPTED = "interrupted"  # the driver stopped with it half-done; --resume continues it
PENDING = "pending"  # created, never started
RUNNING = "running"  # what an MLflow run of a live trial says (analysis shows it)
#: what ``srrl.status`` on a trial's MLflow run can say
TRIAL_STATUSES = (FINISHED, STOPPED_EARLY, DIVERGED, ERRORED, STALLED, INTERRUPTED)
#: the statuses a trial keeps for good (the others continue with ``--resume``)
ENDED_STATUSES = (FINISHED, STOPPED_EARLY, DIVERGED, ERRORED, STALLED)
#: the exception name of the line the driver adds to a stalled trial's error file (tuner/driver/stalls.py): how
#: the leaderboard, the MLflow callback and ``--sync`` tell a stalled trial from one that raised
STALL_ERROR = "StallError"


def is_stall(error: Any) -> bool:
    """Whether a trial's error (its error file's text, or the telling line of it) is a stall: the last failure
    it records holds a ``StallError:`` line."""
    last = re.split(r"^Failure # \d+.*$", str(error or ""), flags=re.M)[-1]
    return any(line.strip().startswith(STALL_ERROR + ":") for line in last.splitlines())


def trial_status(errored: bool, diverged: bool, epochs_run: int, planned: Optional[int], ended: bool,
                 stalled: bool = False) -> str:
    """How a trial stands. ``errored`` and ``diverged`` win (an error that is a stall, ``stalled``, is
    ``stalled``); then ``finished`` once it ran every ``planned`` epoch (None: unknown); else
    ``stopped_early`` when Tune ``ended`` it, ``interrupted`` when it ran some epochs and ``pending`` when none."""
    if errored:
        return STALLED if stalled else ERRORED
    if diverged:
        return DIVERGED
    if planned is not None and epochs_run >= planned:
        return FINISHED
    if ended:
        return STOPPED_EARLY
    return INTERRUPTED if epochs_run > 0 else PENDING
