"""Trials that span several workers: a Ray Train (V2) ``TorchTrainer`` launched from inside the Tune trial.

The Tune trial (``train_srrl_workers``, holding a tenth of a CPU) runs no model. Its ``TorchTrainer``
starts ``workers`` processes, each with ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs, joined in
one torch process group (gloo on CPU, NCCL on GPU); each runs the one-worker trial's epoch loop
(``tuner.driver.trainable.run_epochs``) with the student and connector under DDP (``tuner.core.trainer.Trainer``).
Every epoch all ranks report, rank 0 with the checkpoint; ``_to_tune`` hands rank 0's result to the Tune
trial, which reports it to Tune with that checkpoint. So ASHA, Optuna, MLflow, the confirmation stage and
``--resume`` see what they see of a one-worker trial (docs/architecture.md, "Trials on several workers").

A worker that dies: Ray Train restarts the worker group from the run's last checkpoint
(``max_failures`` times); the Tune trial, and so its MLflow run, carry on, and the epoch in flight,
never reported, is not counted twice.

A trial Tune stops (ASHA, or its last epoch) aborts its Train run in the trial's ``cleanup``: the run's
controller is an actor of the trial's, and killed with it the worker placement group would stay held
for good (Ray Train's cleaner of such groups asks the State API, which a Ray without a dashboard
lacks: seen, the next trial waited forever for those CPUs).
"""
from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any, Dict, Optional

import torch

from tuner.core.config import apply_params
from tuner.core.data import DataSplits
from tuner.driver.ray_internals import function_trainable_class
from tuner.driver.trainable import build_trainer, checkpoint_folder, restore, run_epochs, trial_constants

__all__ = ["train_srrl_workers", "workers_trainable", "TRAIN_RUNS"]

#: the folder of a Tune trial that holds its Ray Train runs (one per start of the trial)
TRAIN_RUNS = "train_runs"

#: what the Tune trial itself holds: it only waits on the workers (Ray's docs for Tune over Train V2)
TRIAL_CPUS = 0.1

#: the Train controller of the run this trial process has in flight (a trial process runs one at a time)
_RUNNING: Dict[str, Any] = {}

#: seconds an aborted Train run gets to stop its workers and free their placement group
ABORT_TIMEOUT_S = 60.0

#: seconds between the Train controller's polls of its workers, which is when it takes their reports
POLL_S = 0.2


def train_srrl_workers(
    config: Dict[str, Any],
    base: Optional[Dict[str, Any]] = None,
    teacher_state: Optional[Dict[str, torch.Tensor]] = None,
    teacher_info: Optional[Dict[str, Any]] = None,
    splits: Optional[DataSplits] = None,
    workers: int = 2,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    max_failures: int = 2,
) -> None:
    """Run one SRRL trial on ``workers`` Ray Train workers (arguments as ``tuner.driver.trainable.train_srrl``'s)."""
    import ray
    from ray import tune
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    # the Train controller takes the workers' reports when it polls them, every 2 s by default: an epoch's
    # result (and ASHA's decision) waited up to that long (measured: +1.25 s a report on digits); read by
    # the controller this trial starts, which is given the trial's RAY_TRAIN_* variables
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", str(POLL_S))
    storage = tune.get_context().get_storage()
    runs = f"{storage.trial_fs_path}/{TRAIN_RUNS}"
    # Each start of the trial is a fresh Train run, begun from the Tune checkpoint it was given: a run of the
    # same name would restore its own newest checkpoint, which may be past the one Tune restored.
    storage.storage_filesystem.delete_dir_contents(runs, missing_dir_ok=True)
    results = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        _worker_loop,
        train_loop_config={"config": config, "base": base, "teacher_state": ray.put(teacher_state), "splits": ray.put(splits),
                           "teacher_info": teacher_info, "checkpoint": tune.get_checkpoint()},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker={"CPU": cpus_per_worker,
                                                           **({"GPU": gpus_per_worker} if gpus_per_worker > 0 else {})}),
        run_config=RunConfig(
            name=uuid.uuid4().hex[:8], storage_path=runs, storage_filesystem=storage.storage_filesystem,
            failure_config=FailureConfig(max_failures=max_failures), callbacks=[_to_tune(results)],
            # Tune copies each checkpoint before the next result is taken; two more cover the ones in flight
            checkpoint_config=CheckpointConfig(num_to_keep=3)),
    )
    failed: list = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as e:  # noqa: BLE001 - raised again in the trial's own thread below
            failed.append(e)
        finally:
            try:
                results.put(None)
            except ray.exceptions.RayActorError:
                pass  # the trial is ending (Tune stopped it): its queue went with its placement group

    thread = threading.Thread(target=fit, name="srrl-train-run", daemon=True)
    thread.start()
    while (item := results.get()) is not None:
        metrics, checkpoint, _RUNNING["controller"] = item
        if checkpoint is not None:  # Tune copies it into the trial's own checkpoint folder
            checkpoint = tune.Checkpoint(checkpoint.path, filesystem=checkpoint.filesystem)
        tune.report(metrics, checkpoint=checkpoint)
    thread.join()
    _RUNNING.clear()
    storage.storage_filesystem.delete_dir_contents(runs, missing_dir_ok=True)
    if failed:
        raise failed[0]


def workers_trainable(trainable: Any) -> type:
    """``trainable`` (``train_srrl_workers`` with its parameters bound) as a Tune Trainable class whose stop
    first aborts the trial's Train run, so that its workers and their placement group go with the trial."""
    class Trial(function_trainable_class(trainable)):  # type: ignore[misc]
        def cleanup(self) -> None:
            abort_train_run()
            super().cleanup()

    Trial.__name__ = Trial.__qualname__ = trainable.__name__  # the trial folders' prefix, as a function's
    return Trial


def abort_train_run() -> None:
    """Abort the Train run in flight in this process, if any: its workers stop, its placement group is freed."""
    import ray

    controller = _RUNNING.pop("controller", None)
    if controller is None:
        return
    try:
        ray.get(controller.abort.remote(), timeout=ABORT_TIMEOUT_S)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        pass  # abort ends by exiting the controller's process: its call never returns a value


def _worker_loop(loop: Dict[str, Any]) -> None:
    """One rank of a trial: the one-worker epoch loop under DDP; rank 0 writes the checkpoint."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cfg = apply_params(loop["base"] or {}, loop["config"])
    trainer = build_trainer(cfg, ray.get(loop["teacher_state"]), ray.get(loop["splits"]), rank=rank, world=world)
    restore(trainer, ray.train.get_checkpoint() or loop["checkpoint"])  # a restarted worker group: the run's last

    def report(metrics: Dict[str, Any], state: Optional[Dict[str, Any]]) -> None:
        with checkpoint_folder(state if rank == 0 else None) as folder:  # every rank holds the same state
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)

    run_epochs(trainer, trial_constants(trainer, loop["teacher_info"], ray.get_runtime_context().get_node_id()), report)


def _to_tune(queue: Any) -> Any:
    """A Ray Train callback (it runs in the Train controller) that sends rank 0's metrics and the persisted
    checkpoint to the Tune trial through a one-slot queue: the workers never run more than a result ahead."""
    from ray.train import UserCallback

    class ToTune(UserCallback):
        def after_report(self, run_context: Any, metrics: Any, checkpoint: Any) -> None:
            import ray

            # with the controller's own handle: what the trial aborts when Tune stops it
            queue.put((dict(metrics[0]), checkpoint, ray.get_runtime_context().current_actor))

    return ToTune()
