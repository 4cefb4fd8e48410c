"""A sweep's settings (``SweepConfig``: space, searcher, scheduler, budget, resources, storage, tracking) and the
rules that turn them and the base ``TrialConfig`` into what each trial runs with."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from tuner.core.config import (
    MAX_SEED, SCHEDULERS, SEARCHERS, ConfigError, TrialConfig, check_choice, check_range, coerce, load_yaml, shown,
)
from tuner.core.registry import did_you_mean

__all__ = ["SweepConfig", "worker_resources", "first_confirm_seed", "trial_base"]


@dataclass
class SweepConfig:
    """How a sweep searches (space, searcher, scheduler, budget, resources, storage, tracking).

    A sweep YAML is one flat mapping: keys of this class plus keys of ``TrialConfig`` (the base
    every trial starts from); ``split`` tells them apart.
    """

    name: Optional[str] = None  # None: "<space>-<dataset>-<timestamp>"
    space: Optional[str] = None  # a named preset; None: the default preset, or "declared" when search: is given
    search: Dict[str, Any] = field(default_factory=dict)  # field -> {kind: args}: laid over the preset (search_spaces.declared)
    search_points: List[Dict[str, Any]] = field(default_factory=list)  # points to try first, after the reference
    searcher: Optional[str] = None  # None: the space's default
    scheduler: Optional[str] = None  # None: the space's default
    num_samples: int = 16
    seeds: int = 3  # seeds per cell of exhaustive spaces (ablation)
    max_concurrent: int = 0  # 0: as many trials as the cluster's resources hold
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    workers_per_trial: int = 1  # > 1: each trial is a Ray Train run of this many DDP workers (tuner/driver/workers.py)
    cpus_per_worker: Optional[float] = None  # a multi-worker trial's CPUs per worker; None: cpus_per_trial
    gpus_per_worker: Optional[float] = None  # a multi-worker trial's GPUs per worker; None: gpus_per_trial
    address: Optional[str] = None  # None: a fresh local Ray; "auto" or host:port joins a cluster
    storage_path: str = "./ray_results"
    tracking_uri: Optional[str] = None  # None: sqlite:///<abs cwd>/mlflow.db
    experiment: Optional[str] = None  # None: the sweep name
    study_name: Optional[str] = None  # continue an existing Optuna study on purpose
    optuna_storage: Optional[str] = None  # SQLAlchemy URL; None: sqlite beside the MLflow store
    seed: int = 0
    grace_period: int = 0  # ASHA: epochs before the first cut; 0: metrics.GRACE_FRACTION of the epochs
    reduction_factor: float = 3.0
    max_failures: int = 2
    stall_timeout: Optional[float] = None  # s without a result before a trial is stopped; None: tuner/driver/stalls.py's default, 0: off
    num_to_keep: int = 4
    top_k: int = 3
    race: int = 0  # > 1: race configurations over up to this many seeds inside the search (tuner/driver/race.py); 0: off
    confirm: int = 2  # confirmation stage: the search's top K re-run over seeds (0: off); see tuner/driver/confirm.py
    confirm_seeds: int = 5
    warm_start: List[str] = field(default_factory=list)  # MLflow experiments whose best points start the study
    smoke: bool = False

    @classmethod
    def split(cls, data: Mapping[str, Any]) -> Tuple["SweepConfig", TrialConfig]:
        """Validate a flat mapping into (sweep, base trial); unknown keys name both sets of fields."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a mapping of field: value, got {type(data).__name__}")
        sweep_names = [f.name for f in dataclasses.fields(cls)]
        trial_names = [f.name for f in dataclasses.fields(TrialConfig)]
        for key in data:
            if key not in sweep_names and key not in trial_names:
                allowed = sweep_names + [n for n in trial_names if n not in sweep_names]
                raise ConfigError(f"{key}: unknown config field{did_you_mean(key, allowed)}; allowed: {', '.join(allowed)}")
        sweep = cls(**{k: v for k, v in data.items() if k in sweep_names})
        trial_data = {k: v for k, v in data.items() if k in trial_names and k not in sweep_names}
        trial_data["seed"] = data.get("seed", 0)
        sweep.validate()
        return sweep, TrialConfig.from_dict(trial_data)

    @classmethod
    def from_yaml(cls, path: Union[str, Path], overrides: Optional[Mapping[str, Any]] = None) -> Tuple["SweepConfig", TrialConfig]:
        """``split`` of a YAML file (safe_load) with ``overrides`` (e.g. CLI flags; None values unset) on top: one
        YAML serves a sweep and a single trial, which validates the sweep's keys and ignores them."""
        data = load_yaml(path)
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.split(data)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Every field but ``space``, whose names live in ``search_spaces`` (a layer above this one):
        the driver checks it (``tuner.driver.prepare.check_space``)."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce(f.name, getattr(self, f.name), f.type))
        if not isinstance(self.search, Mapping):
            raise ConfigError(f"search: must be a mapping of field: {{kind: args}}, got {shown(self.search)}")
        if not isinstance(self.search_points, list) or not all(isinstance(p, Mapping) for p in self.search_points):
            raise ConfigError(f"search_points: must be a list of mappings of field: value, got {shown(self.search_points)}")
        if self.searcher is not None:
            check_choice("searcher", self.searcher, SEARCHERS)
        if self.scheduler is not None:
            check_choice("scheduler", self.scheduler, SCHEDULERS)
        for name in ("num_samples", "seeds", "max_failures", "num_to_keep"):
            check_range(name, getattr(self, name), lo=1 if name != "max_failures" else 0)
        check_range("race", self.race, lo=0, hi=100)
        for name in ("max_concurrent", "grace_period", "top_k", "confirm"):
            check_range(name, getattr(self, name), lo=0)
        check_range("seed", self.seed, lo=0, hi=MAX_SEED)
        for name in ("name", "experiment", "study_name", "optuna_storage", "tracking_uri", "storage_path", "address"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"{name}: must not be empty; leave it out for the default")
        check_range("confirm_seeds", self.confirm_seeds, lo=2)  # one seed has no spread to test against
        for exp in self.warm_start:
            if not exp.strip():
                raise ConfigError("warm_start: an experiment name must not be empty")
        check_range("cpus_per_trial", self.cpus_per_trial, lo=0.0, lo_open=True)
        check_range("gpus_per_trial", self.gpus_per_trial, lo=0.0)
        check_range("workers_per_trial", self.workers_per_trial, lo=1)
        for name in ("cpus_per_worker", "gpus_per_worker"):
            if getattr(self, name) is not None and self.workers_per_trial == 1:
                raise ConfigError(f"{name}: applies only with workers_per_trial > 1; for one-worker trials use "
                                  f"{name.replace('worker', 'trial')}")
        if self.cpus_per_worker is not None:
            check_range("cpus_per_worker", self.cpus_per_worker, lo=0.0, lo_open=True)
        if self.gpus_per_worker is not None:
            check_range("gpus_per_worker", self.gpus_per_worker, lo=0.0)
        check_range("reduction_factor", self.reduction_factor, lo=1.0, lo_open=True)
        if self.stall_timeout is not None:  # seconds; 0: never stop a trial
            check_range("stall_timeout", self.stall_timeout, lo=0.0)
        if self.name is not None and not _NAME_OK(self.name):
            raise ConfigError(f"name: {shown(self.name)} is not allowed; use letters, digits, '.', '_' and '-' (max 100)")


def _NAME_OK(name: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name))


def worker_resources(sweep: SweepConfig) -> Tuple[float, float]:
    """(CPUs, GPUs) of one worker of a trial: the trial's own for one-worker trials."""
    cpus = sweep.cpus_per_worker if sweep.cpus_per_worker is not None else sweep.cpus_per_trial
    gpus = sweep.gpus_per_worker if sweep.gpus_per_worker is not None else sweep.gpus_per_trial
    return cpus, gpus


def first_confirm_seed(sweep: SweepConfig, base: TrialConfig) -> int:
    """The confirmation's first seed: past the search's seed and every seed a race ran (fresh seeds)."""
    return base.seed + max(sweep.race, 1)


def trial_base(sweep: SweepConfig, base: TrialConfig) -> TrialConfig:
    """The base config every trial runs with: torch threads and device from the resources of one of its workers.

    A multi-worker trial splits each global batch of ``batch_size`` across its workers: each needs two samples
    at least (BatchNorm cannot train on one), checked here, before anything starts.
    """
    if base.batch_size < 2 * sweep.workers_per_trial:
        raise ConfigError(f"batch_size: {base.batch_size} cannot be split across workers_per_trial="
                          f"{sweep.workers_per_trial} workers; allowed: >= {2 * sweep.workers_per_trial}")
    cpus, gpus = worker_resources(sweep)
    if base.gpu_decode and gpus <= 0:
        raise ConfigError("gpu_decode: decodes on the trial's GPU, and trials get none; give them one "
                          "(--gpus-per-trial, or --gpus-per-worker) or set gpu_decode: false")
    return base.replace(threads=max(1, int(cpus)), device="cuda" if gpus > 0 else "cpu")
