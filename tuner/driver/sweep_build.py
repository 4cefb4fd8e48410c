"""What a sweep hands Ray Tune: the searcher, the scheduler, the progress table, per-trial resources.

Ray, Tune and Optuna are imported inside the functions: ``run_search.py`` reports bad input before
it pays their ~2 s import (docs/architecture.md).
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, Dict, List, Optional, Sequence

from search_spaces import build_sampler, grid_size
from tuner.core import metrics as M
from tuner.core.config import TrialConfig
from tuner.core.sweep_config import SweepConfig
from tuner.core.sweep_config import worker_resources
from tuner.core.teacher import train_teacher
from tuner.driver.trainable import train_srrl
from tuner.driver.workers import TRIAL_CPUS, train_srrl_workers, workers_trainable

__all__ = ["tune_env", "callbacks", "init_ray", "trainable", "reuse_actors", "trial_demand", "teacher_trainer", "any_trial_needs_teacher", "max_concurrent", "reporter",
           "num_samples", "searcher", "scheduler"]


def tune_env() -> None:
    """The Tune settings every srrl-tune driver runs with; set before the first ``Tuner`` (the user's own win)."""
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")  # a killed driver re-runs at most ~1 s of bookkeeping
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the classic reporter can show the sampled params
    # per-epoch checkpoints with num_to_keep force frequent state snapshots; they are cheap here
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # only Tune's result.json (``callbacks``): MLflow is the record, so progress.csv and TensorBoard event
    # files were two more files per trial for the driver to write per result and re-upload every second
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # a local Ray starts an idle worker per CPU for its first driver; Tune starts every trial actor with a runtime
    # env (its env_vars) that those workers lack, so none ever ran a trial: 0.8 s of CPU and ~160 MB a sweep on
    # 2 CPUs (docs/architecture.md, "What a sweep's processes cost")
    os.environ.setdefault("RAY_prestart_worker_first_driver", "0")


def callbacks(*ours: Any) -> List[Any]:
    """Tune's callbacks for a stage: the result.json logger (what ResultGrid and ``analysis sync`` read), then ``ours``."""
    from ray.tune.logger import JsonLoggerCallback

    return [JsonLoggerCallback(), *ours]


def init_ray(sweep: SweepConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    if sweep.address:
        ray.init(address=sweep.address, include_dashboard=False)
    else:
        ray.init(address="local", include_dashboard=False, dashboard_host="127.0.0.1")


def trainable(sweep: SweepConfig, **shared: Any) -> Any:
    """The Tune trainable of a sweep's trials, ``shared`` (base, teacher, data) through the object store:
    ``train_srrl`` holding a trial's resources, or with ``workers_per_trial`` > 1 ``train_srrl_workers``
    holding ``TRIAL_CPUS`` while its Ray Train workers hold theirs."""
    from ray import tune

    if sweep.workers_per_trial == 1:
        return tune.with_resources(tune.with_parameters(train_srrl, **shared),
                                   {"cpu": sweep.cpus_per_trial, "gpu": sweep.gpus_per_trial})
    cpus, gpus = worker_resources(sweep)
    return tune.with_resources(workers_trainable(
        tune.with_parameters(train_srrl_workers, **shared, workers=sweep.workers_per_trial, cpus_per_worker=cpus,
                             gpus_per_worker=gpus, max_failures=sweep.max_failures)),
        {"cpu": TRIAL_CPUS})


def reuse_actors(sweep: SweepConfig) -> bool:
    """Reuse a one-worker trial's actor (3-4 s a trial); never a multi-worker one's: ending its actor is what
    ends a stopped trial's Train run (the controller and workers are owned by it)."""
    return sweep.workers_per_trial == 1


def trial_demand(sweep: SweepConfig) -> Dict[str, float]:
    """The CPUs and GPUs one trial holds in all (its workers', and a multi-worker trial's own tenth of a CPU)."""
    if sweep.workers_per_trial == 1:
        return {"CPU": sweep.cpus_per_trial, "GPU": sweep.gpus_per_trial}
    cpus, gpus = worker_resources(sweep)
    return {"CPU": sweep.workers_per_trial * cpus + TRIAL_CPUS, "GPU": sweep.workers_per_trial * gpus}


def teacher_trainer(sweep: SweepConfig) -> Optional[Callable]:
    """Train the teacher as a Ray GPU task when trials use GPUs the driver does not have; else locally."""
    import ray
    import torch

    cpus, gpus = worker_resources(sweep)
    if gpus <= 0 or torch.cuda.is_available() or ray.cluster_resources().get("GPU", 0) < 1:
        return None

    def on_gpu(cfg: TrialConfig, splits: Any) -> Any:
        task = ray.remote(num_gpus=1, num_cpus=max(1, int(cpus)))(train_teacher)
        return ray.get(task.remote(cfg.replace(device="cuda"), splits))

    return on_gpu


def any_trial_needs_teacher(space: Any, base: TrialConfig) -> bool:
    return base.needs_teacher or space.grid is not None  # ablation arms use the teacher even when base is CE only


def max_concurrent(sweep: SweepConfig) -> int:
    """As many trials as the cluster's CPUs (and GPUs, when trials take them) hold at once."""
    import ray

    if sweep.max_concurrent:
        return sweep.max_concurrent
    res, demand = ray.cluster_resources(), trial_demand(sweep)
    fits = int(res.get("CPU", 1) // demand["CPU"])
    if demand["GPU"] > 0:
        fits = min(fits, int(res.get("GPU", 0) // demand["GPU"]))
    return max(1, fits)


def reporter(space: Any, param_names: List[str]) -> Any:
    """Tune's progress table: the sampled params and the epoch's accuracy, best trials first."""
    from ray.tune import CLIReporter

    metric, mode = space.objectives[0]
    return CLIReporter(parameter_columns=param_names,
                       metric_columns=[M.EPOCH, M.VAL_ACC, M.BEST_VAL_ACC, M.LOSS_TOTAL, M.IMAGES_PER_S],
                       metric=metric, mode=mode, sort_by_metric=True, max_progress_rows=12, max_report_frequency=10)


def num_samples(sweep: SweepConfig, space: Any, ctx: Any, grid: Optional[List[Dict[str, Any]]]) -> int:
    """Trials in the sweep: every point of an exhaustive space or of ``--searcher grid``, else ``num_samples``."""
    if grid is not None:
        return len(grid)
    if sweep.searcher == "grid":  # the whole grid; a smoke run only its first few points
        return min(grid_size(space, ctx), sweep.num_samples) if sweep.smoke else grid_size(space, ctx)
    return sweep.num_samples


def searcher(sweep: SweepConfig, space: Any, ctx: Any, grid: Optional[List[Dict[str, Any]]],
              initial_points: bool = True, warm: Sequence[Dict[str, Any]] = ()) -> Any:
    """``StudySearch`` over the space (RDB study, PRUNED for early-stopped trials), or the exhaustive ``grid``:
    either holds the sweep's ``max_concurrent`` itself (Tune's ``max_concurrent_trials`` is then unused).

    ``initial_points=False`` when a sweep's searcher is built again for its study: StudySearch
    enqueues them in the study as it is built, and the study holds them from the first time.
    """
    from tuner.driver.generator import PointsSearch, ReconciledGenerator

    if grid is not None:
        return ReconciledGenerator(PointsSearch(grid), max_concurrent(sweep))
    from tuner.driver.search import StudySearch

    metrics_, modes = zip(*space.objectives)
    multi = len(space.objectives) > 1
    authors = space.initial_points(ctx) if sweep.searcher != "grid" else []
    # a smoke run's few trials also move each searched categorical off the authors' point
    first = space.smoke_points(ctx, sweep.num_samples) if sweep.smoke and authors else authors
    varied = [p for p in first if p not in authors]
    user = [dict(p) for p in sweep.search_points if p not in first] if sweep.searcher != "grid" else []
    warm = [dict(p) for p in warm if p not in first + user] if sweep.searcher != "grid" else []
    search, race = StudySearch, {}
    if sweep.race > 1:  # racing over seeds inside the search (tuner/driver/race.py)
        from tuner.driver.race import RaceSearch

        search, race = RaceSearch, {"race": sweep.race, "base_seed": ctx.base.seed}
    # no more first points than trials: one enqueued past the last trial would wait in the study for ever
    points = (first + user + warm)[:num_samples(sweep, space, ctx, grid)]
    return ReconciledGenerator(search(
        space=functools.partial(space.define, ctx=ctx),
        metric=list(metrics_) if multi else metrics_[0], mode=list(modes) if multi else modes[0],
        points_to_evaluate=(points or None) if initial_points else None,
        sampler=functools.partial(build_sampler, sweep.searcher, sweep.seed, space, ctx),
        study_name=sweep.study_name or sweep.name, storage=sweep.optuna_storage, max_epochs=ctx.base.epochs,
        origins={"authors": authors, "smoke": varied, "user": user, "warm-start": warm}, **race,
    ), max_concurrent(sweep))


def scheduler(sweep: SweepConfig, space: Any, base: TrialConfig) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if sweep.scheduler == "fifo" or len(space.objectives) > 1:
        return FIFOScheduler()
    metric, mode = space.objectives[0]
    asha = ASHAScheduler
    if sweep.race > 1:  # ASHA for the search's first seeds; a race seed runs every epoch
        from tuner.driver.race import RaceASHA as asha
    return asha(metric=metric, mode=mode, time_attr="training_iteration", max_t=base.epochs,
                         grace_period=min(sweep.grace_period, base.epochs), reduction_factor=sweep.reduction_factor)
