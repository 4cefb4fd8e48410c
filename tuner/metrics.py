"""Metric names: the one contract shared by the training loop, the Ray trainable, tracking and analysis."""
from __future__ import annotations

__all__ = [
    "EPOCH", "TRAIN_LOSS", "LOSS_CE", "LOSS_FM", "LOSS_SR", "LOSS_KD", "VAL_ACC", "VAL_LOSS",
    "BEST_VAL_ACC", "TEST_ACC", "IMAGES_PER_S", "LR", "EPOCH_TIME_S",
    "STUDENT_PARAMS", "STUDENT_MACS", "TEACHER_VAL_ACC", "TEACHER_TEST_ACC",
    "PER_EPOCH", "PER_TRIAL", "TERM_METRIC",
]

EPOCH = "epoch"
TRAIN_LOSS = "train_loss"  # mean total loss over the epoch's training batches
LOSS_CE = "loss_ce"
LOSS_FM = "loss_fm"
LOSS_SR = "loss_sr"
LOSS_KD = "loss_kd"
VAL_ACC = "val_acc"  # percent; what every search optimises
VAL_LOSS = "val_loss"  # student cross-entropy on the validation split
BEST_VAL_ACC = "best_val_acc"
TEST_ACC = "test_acc"  # percent; reported once at the end, never searched on
IMAGES_PER_S = "images_per_s"  # training throughput of the epoch
LR = "lr"
EPOCH_TIME_S = "epoch_time_s"
STUDENT_PARAMS = "student_params"
STUDENT_MACS = "student_macs"
TEACHER_VAL_ACC = "teacher_val_acc"
TEACHER_TEST_ACC = "teacher_test_acc"

#: Distiller term -> metric name
TERM_METRIC = {"total": TRAIN_LOSS, "ce": LOSS_CE, "fm": LOSS_FM, "sr": LOSS_SR, "kd": LOSS_KD}
PER_EPOCH = (EPOCH, TRAIN_LOSS, LOSS_CE, LOSS_FM, LOSS_SR, LOSS_KD, VAL_ACC, VAL_LOSS, BEST_VAL_ACC,
             IMAGES_PER_S, LR, EPOCH_TIME_S)
PER_TRIAL = (STUDENT_PARAMS, STUDENT_MACS, TEACHER_VAL_ACC, TEACHER_TEST_ACC, TEST_ACC)
