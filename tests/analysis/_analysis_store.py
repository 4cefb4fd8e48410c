"""Builds the analysis tests' MLflow SQLite store with the real tracking code; known answers.

Parents come from ``tuner.tracking.start_sweep``; children from ``MLflowTracking``'s hooks (its
ray-free implementation class) driven by tiny fake Tune trials, so the store holds exactly what a
sweep writes. (A module of its own, not conftest, so test modules can import its constants.)
"""
from __future__ import annotations

import math
import os
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Optional


os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tuner import metrics as M  # noqa: E402
from tuner import tracking as T  # noqa: E402
from tuner.config import TrialConfig  # noqa: E402

ARM_MEANS = {"CE": 90.0, "CE+FM": 91.0, "CE+SR": 92.0, "CE+FM+SR": 93.0, "CE+KD": 91.5, "CE+FM+SR+KD": 93.5}
SEEDS = (0, 1)
LW_EPOCHS, PAR_EPOCHS, ABL_EPOCHS = 4, 3, 3
#: the lw sweep: trial id -> (alpha, beta, how it ends)
LW = {
    "lw_00001": (1.0, 1.0, "finished"),
    "lw_00002": (0.1, 10.0, "finished"),
    "lw_00003": (10.0, 0.3, "resumed"),  # finished, with epoch 2 logged twice (a restart)
    "lw_00004": (0.03, 0.05, "stopped_early"),  # stopped after epoch 2
    "lw_00005": (3.0, 30.0, "diverged"),  # diverged at epoch 2
    "lw_00006": (0.3, 3.0, "errored"),  # failed in epoch 2
    "lw_00007": (0.5, 0.5, "running"),  # epoch 1 logged, never ended
}
LW_DELETED = "lw_00008"
#: the par sweep: trial id -> (student, connector, MACs, final val_acc)
PAR = {
    "par_00001": ("digits_cnn2x4", "conv1x1_bn_relu", 1000.0, 80.0),
    "par_00002": ("digits_cnn2x8", "conv1x1_bn", 2000.0, 85.0),
    "par_00003": ("digits_cnn2x16", "conv1x1_bn_relu", 4000.0, 84.0),
    "par_00004": ("digits_cnn4x64", "conv3x3_bn_relu", 8000.0, 90.0),
}
RESUMED_EPOCH2 = {"first": 11.0, "second": 22.0}  # val_acc of lw_00003's epoch 2, before and after restart


def lw_acc(alpha: float, beta: float, epoch: int, epochs: int) -> float:
    """A smooth known function with its best near alpha = 1, beta = 3."""
    peak = 95.0 - 4.0 * math.log10(alpha) ** 2 - 4.0 * (math.log10(beta) - 0.5) ** 2
    return peak * epoch / epochs


def abl_acc(arm: str, seed: int) -> float:
    return ARM_MEANS[arm] + (0.4 if seed == 0 else -0.4) * (1 + list(ARM_MEANS).index(arm) / 10)


class FakeTrial(SimpleNamespace):
    """What the callback reads of a Tune trial."""

    def get_error(self) -> str:
        return "Traceback (most recent call last):\n  File x\nValueError: boom in epoch 2"


def _result(epoch: int, stamp: float, val_acc: float, best: float, macs: float = 5000.0,
            test_acc: Optional[float] = None, diverged: bool = False) -> Dict[str, Any]:
    row = {M.EPOCH: epoch, M.TRAIN_LOSS: 2.0 / epoch, M.LOSS_CE: 1.0 / epoch, M.LOSS_FM: 0.5 / epoch,
           M.LOSS_SR: 0.25 / epoch, M.LOSS_KD: 0.0, M.VAL_ACC: val_acc, M.VAL_LOSS: 1.5 / epoch,
           M.BEST_VAL_ACC: best, M.IMAGES_PER_S: 1000.0 + epoch, M.LR: 0.05, M.EPOCH_TIME_S: 0.5,
           M.STUDENT_PARAMS: macs / 10, M.STUDENT_MACS: macs, M.TEACHER_VAL_ACC: 97.5, M.TEACHER_TEST_ACC: 96.5,
           T.DIVERGED_KEY: 1.0 if diverged else 0.0, "timestamp": stamp}
    if test_acc is not None:
        row[M.TEST_ACC] = test_acc
    return row


class _Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _sweep(uri: str, experiment: str, name: str, base: TrialConfig, space: str) -> Any:
    params = {**{f"sweep.{k}": v for k, v in {"name": name, "space": space}.items()},
              **{f"base.{k}": v for k, v in base.to_dict().items()}}
    tags = {"srrl.space": space, "srrl.dataset": base.dataset, "srrl.teacher": base.teacher,
            "srrl.teacher_val_acc": "97.5", "srrl.teacher_test_acc": "96.5"}
    parent = T.start_sweep(uri, experiment, name, params=params, tags=tags, resume=False)
    kwargs: Dict[str, Any] = {"retry_delays": ()}
    if space == "ablation":
        kwargs["base_params"] = base.to_dict()  # every field on every child run
    cb = T._MLflowTrackingImpl(uri, T.experiment_id(uri, experiment), parent, epochs=base.epochs, **kwargs)
    return parent, cb


def _run(cb: Any, trial: FakeTrial, results: List[Dict[str, Any]], end: str) -> None:
    for r in results:
        cb.on_trial_result(0, [], trial, r)
    if end == "complete":
        cb.on_trial_complete(0, [], trial)
    elif end == "error":
        cb.on_trial_error(0, [], trial)


def build_store(root) -> SimpleNamespace:
    from mlflow.tracking import MlflowClient

    uri = T.default_tracking_uri(str(root))
    client = MlflowClient(uri)
    for exp in ("srrl-a", "srrl-b", "srrl-empty"):  # artifacts inside the temp folder, not ./mlruns
        client.create_experiment(exp, artifact_location=(root / "artifacts" / exp).as_uri())
    clock = _Clock()
    parents = {}

    # ---- srrl-a / lw: every way a trial can end -------------------------------------------------
    base = TrialConfig(epochs=LW_EPOCHS, nesterov=True, lr=0.05, weight_decay=5e-4)
    parents["lw"], cb = _sweep(uri, "srrl-a", "lw", base, "loss_weights")
    for tid, (alpha, beta, how) in LW.items():
        trial = FakeTrial(trial_id=tid, config={"alpha": alpha, "beta": beta}, last_result={}, error_file=None)
        cb.on_trial_start(0, [], trial)
        accs = [lw_acc(alpha, beta, e, LW_EPOCHS) for e in range(1, LW_EPOCHS + 1)]
        res = [_result(e, clock(), accs[e - 1], max(accs[:e]),
                       test_acc=accs[-1] - 1.0 if e == LW_EPOCHS else None) for e in range(1, LW_EPOCHS + 1)]
        if how == "finished":
            _run(cb, trial, res, "complete")
        elif how == "resumed":
            first = dict(res[1], **{M.VAL_ACC: RESUMED_EPOCH2["first"]})
            _run(cb, trial, [res[0], first], "none")
            cb.on_trial_start(0, [], trial)  # Tune restarted it from the epoch-1 checkpoint
            second = dict(res[1], **{M.VAL_ACC: RESUMED_EPOCH2["second"], "timestamp": clock()})
            _run(cb, trial, [second] + [dict(r, timestamp=clock()) for r in res[2:]], "complete")
        elif how == "stopped_early":
            _run(cb, trial, res[:2], "complete")
        elif how == "diverged":
            bad = {M.EPOCH: 2, T.DIVERGED_KEY: 1.0, M.VAL_ACC: 0.0, M.STUDENT_MACS: 5000.0, "timestamp": clock()}
            _run(cb, trial, [res[0], bad], "complete")
        elif how == "errored":
            _run(cb, trial, res[:1], "error")
        elif how == "running":
            _run(cb, trial, res[:1], "none")
    trial = FakeTrial(trial_id=LW_DELETED, config={"alpha": 1.0, "beta": 2.0}, last_result={}, error_file=None)
    cb.on_trial_start(0, [], trial)
    _run(cb, trial, [_result(1, clock(), 99.9, 99.9)], "complete")
    deleted = cb._runs[LW_DELETED]
    client.delete_run(deleted)
    cb.on_experiment_end([])
    T.finish_sweep(uri, parents["lw"])

    # ---- srrl-a / par: student cost against accuracy ---------------------------------------------
    base = TrialConfig(epochs=PAR_EPOCHS)
    parents["par"], cb = _sweep(uri, "srrl-a", "par", base, "pareto")
    for tid, (student, connector, macs, acc) in PAR.items():
        trial = FakeTrial(trial_id=tid, config={"student": student, "connector": connector, "alpha": 1.0,
                                                "beta": 1.0 + macs / 1000}, last_result={}, error_file=None)
        cb.on_trial_start(0, [], trial)
        res = [_result(e, clock(), acc * e / PAR_EPOCHS, acc * e / PAR_EPOCHS, macs=macs,
                       test_acc=acc - 0.5 if e == PAR_EPOCHS else None) for e in range(1, PAR_EPOCHS + 1)]
        _run(cb, trial, res, "complete")
    T.finish_sweep(uri, parents["par"])

    # ---- srrl-b / abl: the loss-term ablation ------------------------------------------------------
    base = TrialConfig(epochs=ABL_EPOCHS, gamma=0.0)
    parents["abl"], cb = _sweep(uri, "srrl-b", "abl", base, "ablation")
    n = 0
    for seed in SEEDS:
        for arm in ARM_MEANS:
            n += 1
            w = {"alpha": float("FM" in arm), "beta": float("SR" in arm), "gamma": float("KD" in arm)}
            trial = FakeTrial(trial_id=f"abl_{n:05d}", config={"arm": arm, **w, "seed": seed}, last_result={},
                              error_file=None)
            cb.on_trial_start(0, [], trial)
            acc = abl_acc(arm, seed)
            res = [_result(e, clock(), acc + 1.0 - e / ABL_EPOCHS, acc, test_acc=acc if e == ABL_EPOCHS else None)
                   for e in range(1, ABL_EPOCHS + 1)]
            _run(cb, trial, res, "complete")
    T.finish_sweep(uri, parents["abl"])
    return SimpleNamespace(uri=uri, root=root, parents=parents, deleted=deleted)
