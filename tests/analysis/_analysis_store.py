"""Builds the analysis tests' MLflow SQLite store with the real tracking code; known answers.

Parents come from ``tuner.tracking.start_sweep`` (params: the sweep's own ``sweep.*`` settings; the
base config as the ``config/srrl_sweep.yaml`` artifact); children from ``MLflowTracking``'s hooks (its
ray-free implementation class) driven by tiny fake Tune trials, so the store holds what a sweep
writes; the stage and label tags (``srrl.stage``, ``srrl.origin``, ``srrl.config_*`` ...) are set on
them as the record contract says. (A module of its own, not conftest, so tests can import its constants.)
"""
from __future__ import annotations

import math
import os
import time
from types import SimpleNamespace
from typing import Any, Dict, List, Mapping, Optional


os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tuner.core import metrics as M  # noqa: E402
from tuner import tracking as T  # noqa: E402
from tuner.core.config import TrialConfig  # noqa: E402

ARM_MEANS = {"CE": 90.0, "CE+FM": 91.0, "CE+SR": 92.0, "CE+FM+SR": 93.0, "CE+KD": 91.5, "CE+FM+SR+KD": 93.5}
SEEDS = (0, 1)
LW_EPOCHS, PAR_EPOCHS, ABL_EPOCHS = 4, 3, 3
#: the lw sweep's search trials: trial id -> (alpha, beta, how it ends, origin)
LW = {
    "lw_00001": (1.0, 1.0, "finished", "authors"),
    "lw_00002": (0.1, 10.0, "finished", "warm-start"),  # a lucky last epoch (LW_SPIKE): best by final and max only
    "lw_00003": (10.0, 0.3, "resumed", "search"),  # finished, with epoch 2 logged twice (a restart)
    "lw_00004": (10.0, 1.0, "stopped_early", "authors"),  # stopped after epoch 2
    "lw_00005": (3.0, 30.0, "diverged", "search"),  # diverged at epoch 2
    "lw_00006": (0.3, 3.0, "errored", "search"),  # failed in epoch 2
    "lw_00007": (0.5, 0.5, "running", "search"),  # epoch 1 logged, never ended
    "lw_00009": (1.0, 5.0, "stopped_at_1", "authors"),  # stopped after epoch 1
}
LW_DELETED = "lw_00008"
LW_SPIKE = {"lw_00002": 98.0}  # its last epoch's val_acc
LW_STUDENT = "lw_00001"  # the one trial with a model/student.pt artifact
#: the lw sweep's confirmation: config id -> (role, search rank, alpha, beta, final val_acc per seed, test_acc per seed)
CONFIRM = {
    "c1": ("candidate", 1, 2.0, 3.0, (95.0, 95.4, 95.2), (94.5, 94.9, 94.4)),
    "c2": ("candidate", 2, 0.5, 2.0, (94.0, 93.2, 94.4), (93.5, 93.0, 93.9)),
    "ref": ("reference", None, 1.0, 1.0, (93.0, 93.3, 92.9), (92.6, 93.0, 92.7)),
    "ce": ("ce", None, 0.0, 0.0, (90.0, 90.5, 89.8), (89.6, 90.1, 89.5)),
}
RECOMMENDED = "c1"
CONFIRM_ERRORED = "ce"  # one more seed of it that errored: counted as failed, in no interval or difference
#: the par sweep (recorded without stage or label tags, as before the confirmation stage): trial id ->
#: (student, connector, MACs, final val_acc)
PAR = {
    "par_00001": ("digits_cnn2x4", "conv1x1_bn_relu", 1000.0, 80.0),
    "par_00002": ("digits_cnn2x8", "conv1x1_bn", 2000.0, 85.0),
    "par_00003": ("digits_cnn2x16", "conv1x1_bn_relu", 4000.0, 84.0),
    "par_00004": ("digits_cnn4x64", "conv3x3_bn_relu", 8000.0, 90.0),
}
RESUMED_EPOCH2 = {"first": 11.0, "second": 22.0}  # val_acc of lw_00003's epoch 2, before and after restart
N_CONFIRM = sum(len(c[4]) for c in CONFIRM.values()) + 1  # + the errored seed


def lw_acc(alpha: float, beta: float, epoch: int, epochs: int) -> float:
    """A smooth known function with its best near alpha = 1, beta = 3."""
    peak = 95.0 - 4.0 * math.log10(alpha) ** 2 - 4.0 * (math.log10(beta) - 0.5) ** 2
    return peak * epoch / epochs


def lw_curve(tid: str) -> List[float]:
    """The val_acc of each epoch of an lw search trial, as logged (last writes win)."""
    alpha, beta, how, _ = LW[tid]
    accs = [lw_acc(alpha, beta, e, LW_EPOCHS) for e in range(1, LW_EPOCHS + 1)]
    if tid in LW_SPIKE:
        accs[-1] = LW_SPIKE[tid]
    if how == "resumed":
        accs[1] = RESUMED_EPOCH2["second"]
    ran = {"stopped_early": 2, "diverged": 1, "errored": 1, "running": 1, "stopped_at_1": 1}.get(how, LW_EPOCHS)
    return accs[:ran]


def abl_acc(arm: str, seed: int) -> float:
    return ARM_MEANS[arm] + (0.4 if seed == 0 else -0.4) * (1 + list(ARM_MEANS).index(arm) / 10)


class FakeTrial(SimpleNamespace):
    """What the callback reads of a Tune trial."""

    def get_error(self) -> str:
        return "Traceback (most recent call last):\n  File x\nValueError: boom in epoch 2"


def _result(epoch: int, stamp: float, val_acc: float, best: float, rank: float, macs: float = 5000.0,
            test_acc: Optional[float] = None) -> Dict[str, Any]:
    row = {M.EPOCH: epoch, M.LOSS_TOTAL: 2.0 / epoch, M.LOSS_CE: 1.0 / epoch, M.LOSS_FM: 0.5 / epoch,
           M.LOSS_SR: 0.25 / epoch, M.LOSS_KD: 0.0, M.VAL_ACC: val_acc, M.VAL_LOSS: 1.5 / epoch,
           M.BEST_VAL_ACC: best, M.RANK_VAL_ACC: rank, M.IMAGES_PER_S: 1000.0 + epoch, M.LR: 0.05,
           M.EPOCH_TIME_S: 0.5, M.STEP_TIME_S: 0.6, M.STUDENT_PARAMS: macs / 10, M.STUDENT_MACS: macs, M.TEACHER_VAL_ACC: 97.5,
           M.TEACHER_TEST_ACC: 96.5, T.DIVERGED_KEY: 0.0, "timestamp": stamp}
    if test_acc is not None:
        row[M.TEST_ACC] = test_acc
    return row


def _results(accs: List[float], clock: "_Clock", macs: float = 5000.0, test_acc: Optional[float] = None,
             first_epoch: int = 1, before: Optional[List[float]] = None) -> List[Dict[str, Any]]:
    """One result per epoch from ``first_epoch`` on, ranked and best-of as the trainer reports them
    (``before``: the val_acc of the epochs a restarted trial had already done)."""
    seen = list(before or [])
    out = []
    for i, acc in enumerate(accs):
        seen.append(acc)
        last = i == len(accs) - 1
        out.append(_result(first_epoch + i, clock(), acc, max(seen), M.rank_value(seen), macs=macs,
                           test_acc=test_acc if last else None))
    return out


class _Clock:
    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def _sweep(uri: str, experiment: str, name: str, base: TrialConfig, space: str, root) -> Any:
    import yaml

    from tuner.tracking.callback import MLflowTracking

    params = {f"sweep.{k}": v for k, v in {"name": name, "space": space}.items()}  # only the sweep's own settings
    tags = {"srrl.space": space, "srrl.dataset": base.dataset, "srrl.teacher": base.teacher,
            "srrl.teacher_val_acc": "97.5", "srrl.teacher_test_acc": "96.5"}
    parent = T.start_sweep(uri, experiment, name, params=params, tags=tags, resume=False)
    config = root / f"{name}-config" / "srrl_sweep.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"sweep": {"name": name, "space": space}, "base": base.to_dict()}))
    T.log_artifacts_once(uri, parent, {"config": config})
    cb = MLflowTracking(uri, T.experiment_id(uri, experiment), parent, epochs=base.epochs,
                        retry_delays=(), base_params=base.to_dict())  # every field on every child run
    return parent, cb


def _run(cb: Any, trial: FakeTrial, results: List[Dict[str, Any]], end: str) -> None:
    for r in results:
        cb.on_trial_result(0, [], trial, r)
    if end == "complete":
        cb.on_trial_complete(0, [], trial)
    elif end == "error":
        cb.on_trial_error(0, [], trial)


def _tag(client: Any, cb: Any, tid: str, stage: str, labels: Mapping[str, Any], recommended: bool = False) -> None:
    """The stage and label tags of a child run, as the record contract has them."""
    tags = {T.TAG_STAGE: stage, **{f"srrl.{k}": "" if v is None else str(v) for k, v in labels.items()}}
    if recommended:
        tags[T.TAG_RECOMMENDED] = "true"
    for k, v in tags.items():
        client.set_tag(cb.run_ids[tid], k, v)


def _lw_sweep(uri: str, client: Any, clock: _Clock, root) -> Any:
    """srrl-a / lw: every way a search trial can end, then a confirmation stage."""
    base = TrialConfig(epochs=LW_EPOCHS, nesterov=True, lr=0.05, weight_decay=5e-4)
    parent, cb = _sweep(uri, "srrl-a", "lw", base, "loss_weights", root)
    for n, (tid, (alpha, beta, how, origin)) in enumerate(LW.items()):
        labels = {"origin": origin, "optuna_trial": n}
        trial = FakeTrial(trial_id=tid, config={"alpha": alpha, "beta": beta, **labels}, last_result={},
                          error_file=None)
        cb.on_trial_start(0, [], trial)
        accs = lw_curve(tid)
        final = accs[-1] - 1.0
        if how in ("finished", "stopped_early", "stopped_at_1"):
            _run(cb, trial, _results(accs, clock, test_acc=final if how == "finished" else None), "complete")
        elif how == "resumed":
            first = _results([accs[0], RESUMED_EPOCH2["first"]], clock)
            _run(cb, trial, first, "none")
            cb.on_trial_start(0, [], trial)  # Tune restarted it from the epoch-1 checkpoint
            _run(cb, trial, _results(accs[1:], clock, test_acc=final, first_epoch=2, before=accs[:1]), "complete")
        elif how == "diverged":
            # as the trainable reports it: no val_acc (never evaluated), the best so far
            bad = {M.EPOCH: 2, T.DIVERGED_KEY: 1.0, M.RANK_VAL_ACC: accs[0], M.STUDENT_MACS: 5000.0, "timestamp": clock()}
            _run(cb, trial, _results(accs[:1], clock) + [bad], "complete")
        elif how == "errored":
            _run(cb, trial, _results(accs, clock), "error")
        elif how == "running":
            _run(cb, trial, _results(accs, clock), "none")
        _tag(client, cb, tid, "search", labels)
    trial = FakeTrial(trial_id=LW_DELETED, config={"alpha": 1.0, "beta": 2.0}, last_result={}, error_file=None)
    cb.on_trial_start(0, [], trial)
    _run(cb, trial, _results([99.9], clock), "complete")
    deleted = cb.run_ids[LW_DELETED]
    client.delete_run(deleted)

    n = 0
    for cid, (role, rank, alpha, beta, vals, tests) in CONFIRM.items():
        seeds = list(zip(vals, tests)) + ([(None, None)] if cid == CONFIRM_ERRORED else [])
        for seed, (val, test) in enumerate(seeds):
            n += 1
            tid = f"cf_{n:05d}"
            labels = {"config_id": cid, "config_role": role, "config_rank": rank}
            trial = FakeTrial(trial_id=tid, config={"alpha": alpha, "beta": beta, "seed": 100 + seed, **labels},
                              last_result={}, error_file=None)
            cb.on_trial_start(0, [], trial)
            if val is None:  # the errored seed
                _run(cb, trial, _results([50.0], clock), "error")
            else:
                accs = [val * e / LW_EPOCHS for e in range(1, LW_EPOCHS + 1)]
                _run(cb, trial, _results(accs, clock, test_acc=test), "complete")
            _tag(client, cb, tid, "confirm", labels, recommended=cid == RECOMMENDED)
    cb.on_experiment_end([])
    student = root / "student" / "student.pt"
    student.parent.mkdir()
    student.write_bytes(b"not a real student")
    client.log_artifact(cb.run_ids[LW_STUDENT], str(student), "model")
    T.finish_sweep(uri, parent)
    return parent, deleted


def build_store(root) -> SimpleNamespace:
    from mlflow.tracking import MlflowClient

    uri = T.default_tracking_uri(str(root))
    client = MlflowClient(uri)
    for exp in ("srrl-a", "srrl-b", "srrl-empty"):  # artifacts inside the temp folder, not ./mlruns
        client.create_experiment(exp, artifact_location=(root / "artifacts" / exp).as_uri())
    clock = _Clock()
    parents = {}
    parents["lw"], deleted = _lw_sweep(uri, client, clock, root)

    # ---- srrl-a / par: student cost against accuracy; no stage or label tags (an older sweep) ----------
    base = TrialConfig(epochs=PAR_EPOCHS)
    parents["par"], cb = _sweep(uri, "srrl-a", "par", base, "pareto", root)
    for tid, (student, connector, macs, acc) in PAR.items():
        trial = FakeTrial(trial_id=tid, config={"student": student, "connector": connector, "alpha": 1.0,
                                                "beta": 1.0 + macs / 1000}, last_result={}, error_file=None)
        cb.on_trial_start(0, [], trial)
        accs = [acc * e / PAR_EPOCHS for e in range(1, PAR_EPOCHS + 1)]
        _run(cb, trial, _results(accs, clock, macs=macs, test_acc=acc - 0.5), "complete")
    T.finish_sweep(uri, parents["par"])

    # ---- srrl-b / abl: the loss-term ablation ------------------------------------------------------
    base = TrialConfig(epochs=ABL_EPOCHS, gamma=0.0)
    parents["abl"], cb = _sweep(uri, "srrl-b", "abl", base, "ablation", root)
    n = 0
    for seed in SEEDS:
        for arm in ARM_MEANS:
            n += 1
            w = {"alpha": float("FM" in arm), "beta": float("SR" in arm), "gamma": float("KD" in arm)}
            trial = FakeTrial(trial_id=f"abl_{n:05d}", config={"arm": arm, **w, "seed": seed}, last_result={},
                              error_file=None)
            cb.on_trial_start(0, [], trial)
            acc = abl_acc(arm, seed)
            accs = [acc + 1.0 - e / ABL_EPOCHS for e in range(1, ABL_EPOCHS + 1)]
            _run(cb, trial, _results(accs, clock, test_acc=acc), "complete")
            _tag(client, cb, trial.trial_id, "search", {"arm": arm})
    T.finish_sweep(uri, parents["abl"])
    return SimpleNamespace(uri=uri, root=root, parents=parents, deleted=deleted)
