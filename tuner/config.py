"""Typed, validated configuration for one distillation trial (``TrialConfig``)."""
from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import yaml

from tuner.config_io import ConfigError, load_yaml, parse_yaml
from tuner.registry import did_you_mean

__all__ = ["ConfigError", "TrialConfig", "SweepConfig", "load_yaml", "parse_yaml", "apply_params", "trial_params", "trial_base", "uses_teacher", "LABEL_KEYS", "RACE", "LOSS_WEIGHTS", "SEARCHED_PARAMS", "SWEEP_FIXED", "SEARCHERS", "SCHEDULERS", "DATA_OPTIONS"]


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
#: TrialConfig fields that are options of the data set (``tuner.data.dataset_options``), not of the recipe
DATA_OPTIONS = ("image_size", "data_mode", "memory_budget_gb", "class_subset", "train_fraction")


@dataclass
class TrialConfig:
    """Everything one SRRL distillation run depends on; a trial is a pure function of it.

    ``total = ce + alpha * fm + beta * sr + gamma * kd`` (docs/method.md, "The three losses").
    """

    # what is distilled, on what
    dataset: str = "digits"
    data_dir: Optional[str] = None
    teacher: str = "digits_cnn4x64"
    teacher_checkpoint: Optional[str] = None
    student: str = "digits_cnn2x4"
    connector: str = "conv1x1_bn_relu"
    # loss weights (docs/method.md: authors' default alpha = beta = 1; gamma is the optional KD term, off by default)
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 0.0
    temperature: float = 4.0
    # recipe
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "multistep"
    lr_milestones: List[float] = field(default_factory=lambda: [0.625, 0.75, 0.875])
    lr_decay: float = 0.1
    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 512
    teacher_epochs: int = 30
    teacher_lr: Optional[float] = None  # None: the student's lr (the teacher is trained with this recipe)
    val_fraction: Optional[float] = None  # None: the data set's own default
    val_split_seed: Optional[int] = None  # None: the data set's fixed split; else train + val re-split by it (confirmation)
    # data-set options (DATA_OPTIONS): None leaves the data set's default; a data set that lacks one refuses it
    image_size: Optional[int] = None  # imagefolder / imagenet: pixels of the model's input (None: 32 / 224)
    data_mode: Optional[str] = None  # imagefolder: memory | stream (None: memory while it fits memory_budget_gb)
    memory_budget_gb: Optional[float] = None  # imagefolder: decoded size above which it is streamed (None: 4)
    class_subset: Optional[int] = None  # imagefolder / imagenet: K classes, the same K for every seed and sweep
    train_fraction: Optional[float] = None  # imagefolder / imagenet: a fixed stratified share of the train split
    data_workers: Optional[int] = None  # streamed data: decoding processes per trial (None: threads - 1)
    gpu_decode: bool = False  # streamed JPEGs: the workers read, the trial's GPU decodes (nvJPEG) and crops
    # execution
    seed: int = 0
    teacher_seed: int = 0
    device: str = "auto"
    bf16: bool = False
    threads: int = 0
    cache_dir: Optional[str] = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialConfig":
        """Build and validate from a mapping; unknown keys are an error, not silently dropped."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: expected a mapping of field: value, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise ConfigError(
                    f"{key}: unknown config field{did_you_mean(key, names)}; allowed: {', '.join(names)}"
                )
        cfg = cls(**dict(data))
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: Union[str, Path], overrides: Optional[Mapping[str, Any]] = None) -> "TrialConfig":
        """Read a YAML file (safe_load) and apply ``overrides`` (e.g. CLI flags) on top.

        A sweep preset's ``SweepConfig`` keys are validated and ignored, so one YAML serves both.
        """
        data = load_yaml(path)
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return SweepConfig.split(data)[1]

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> "TrialConfig":
        """A validated copy with some fields changed."""
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Coerce field types and check ranges and registry names; raise ConfigError on the first problem."""
        from tuner import connectors, data, models  # registries; local import keeps config light

        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), f.type))

        check_choice("dataset", self.dataset, data.list_datasets())
        check_choice("teacher", self.teacher, models.list_models())
        check_choice("student", self.student, models.list_models())
        check_choice("connector", self.connector, connectors.list_connectors())
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("device", self.device, DEVICES)
        for name in ("alpha", "beta", "gamma", "weight_decay"):
            _range(name, getattr(self, name), lo=0.0)
        for name in ("temperature", "lr"):
            _range(name, getattr(self, name), lo=0.0, lo_open=True)
        if self.teacher_lr is not None:
            _range("teacher_lr", self.teacher_lr, lo=0.0, lo_open=True)
        _range("momentum", self.momentum, lo=0.0, hi=1.0, hi_open=True)
        _range("lr_decay", self.lr_decay, lo=0.0, hi=1.0, lo_open=True)
        if self.val_fraction is not None:
            _range("val_fraction", self.val_fraction, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        if self.image_size is not None:
            _range("image_size", self.image_size, lo=8, hi=1024)
        if self.data_mode is not None:
            check_choice("data_mode", self.data_mode, data.DATA_MODES)
        if self.memory_budget_gb is not None:
            _range("memory_budget_gb", self.memory_budget_gb, lo=0.0)
        if self.class_subset is not None:
            _range("class_subset", self.class_subset, lo=2)
        if self.train_fraction is not None:
            _range("train_fraction", self.train_fraction, lo=0.0, hi=1.0, lo_open=True)
        if self.data_workers is not None:
            _range("data_workers", self.data_workers, lo=0, hi=256)
        for name in self.data_options():
            if name not in data.dataset_options(self.dataset):
                takes = [d for d in data.list_datasets() if name in data.dataset_options(d)]
                raise ConfigError(f"{name}: dataset {self.dataset!r} does not take it; only {', '.join(takes)} do")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _range(name, getattr(self, name), lo=1)
        for name in ("teacher_epochs", "threads"):
            _range(name, getattr(self, name), lo=0)
        for name in ("seed", "teacher_seed"):
            _range(name, getattr(self, name), lo=0, hi=MAX_SEED)
        if self.val_split_seed is not None:
            _range("val_split_seed", self.val_split_seed, lo=0, hi=MAX_SEED)
        for m in self.lr_milestones:
            if not 0.0 < m < 1.0:
                raise ConfigError(
                    f"lr_milestones: {m!r} is not allowed; give fractions of the epoch budget in (0, 1), "
                    "e.g. [0.625, 0.75, 0.875] for the paper's 150/180/210 of 240"
                )
        if sorted(self.lr_milestones) != list(self.lr_milestones):
            raise ConfigError(f"lr_milestones: {self.lr_milestones} must be increasing")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ConfigError("nesterov: true needs optimizer: sgd and momentum > 0")
        if self.teacher_checkpoint is None and self.teacher_epochs == 0 and self.needs_teacher:
            raise ConfigError("teacher_epochs: 0 needs a teacher_checkpoint to load instead of training one")

    def data_options(self) -> Dict[str, Any]:
        """The DATA_OPTIONS this config sets, as ``load_dataset`` takes them."""
        return {k: getattr(self, k) for k in DATA_OPTIONS if getattr(self, k) is not None}

    @property
    def needs_teacher(self) -> bool:
        """False for a plain student (CE only), which skips the teacher entirely."""
        return uses_teacher(self.alpha, self.beta, self.gamma)


def uses_teacher(alpha: float, beta: float, gamma: float) -> bool:
    """Whether a loss with these weights reads the teacher: FM, SR and KD do, CE alone does not
    (docs/method.md, "The three losses")."""
    return alpha > 0 or beta > 0 or gamma > 0


# ---- helpers ------------------------------------------------------------------------------------
_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    """Accept YAML/CLI spellings of the annotated type (``'1e-3'`` -> 1e-3); reject the rest."""
    ann = str(annotation)
    optional = ann.startswith("Optional[")
    base = ann[len("Optional["):-1] if optional else ann
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name}: must be {_TYPE_NAMES.get(base, base)}, got null")
    if base.startswith("List["):
        inner = base[len("List["):-1]
        if isinstance(value, str if inner == "str" else (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            kind = "numbers" if inner == "float" else "names"
            raise ConfigError(f"{name}: must be a list of {kind}, got {_shown(value)}")
        return [_coerce(name, v, inner) for v in value]
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name}: must be true or false, got {_shown(value)}")
    if base == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{name}: must be an integer, got {_shown(value)}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be an integer, got {_shown(value)}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{name}: must be an integer, got {_shown(value)}")
        return int(as_float)
    if base == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{name}: must be a number, got {_shown(value)}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be a number, got {_shown(value)}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{name}: must be a finite number, got {_shown(value)}")
        return out
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name}: must be a string, got {_shown(value)}")
        return value
    return value


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def _shown(value: Any, limit: int = 80) -> str:
    """A bounded ``repr(value)``: an error line never embeds an unbounded value, and making it never
    walks one (a YAML alias bomb's nested lists would take minutes and gigabytes to print whole)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_choice(name: str, value: str, allowed: Any) -> None:
    """A ``ConfigError`` naming field ``name`` unless ``value`` is one of ``allowed`` (it lists them)."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}: {_shown(value)} is not allowed{did_you_mean(str(value)[:100], allowed)}; "
                          f"choose from: {', '.join(allowed)}")


def _range(
    name: str, value: float, lo: Optional[float] = None, hi: Optional[float] = None,
    lo_open: bool = False, hi_open: bool = False,
) -> None:
    bad_lo = lo is not None and (value <= lo if lo_open else value < lo)
    bad_hi = hi is not None and (value >= hi if hi_open else value > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}" if isinstance(lo, float) else str(lo)
        hi_s = "inf" if hi is None else f"{hi:g}" if isinstance(hi, float) else str(hi)
        raise ConfigError(f"{name}: {value!r} is out of range; allowed: {left}{lo_s}, {hi_s}{right}")


MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit
SEARCHERS = ("tpe", "random", "gp", "grid", "nsga2")
SCHEDULERS = ("asha", "fifo")
#: keys a trial's params may carry that are labels, not TrialConfig fields: the ablation's ``arm``; the
#: search's ``origin`` (authors | smoke | warm-start | search) and ``optuna_trial`` (its number in the study); a
#: confirmation run's ``config_id`` (groups its seeds), ``config_role`` (candidate | reference | ce), ``config_rank``
#: the distillation terms' weights (FM, SR, KD); CE's is fixed at 1 (docs/method.md)
LOSS_WEIGHTS = ("alpha", "beta", "gamma")
#: fields one sweep cannot vary: the data and the teacher are loaded and trained once for every trial, the
#: epoch budget is the scheduler's, the seeds are the confirmation's, the rest is where and how a trial runs
SWEEP_FIXED = ("dataset", "data_dir", "teacher", "teacher_checkpoint", "teacher_epochs", "teacher_lr", "teacher_seed",
               "val_fraction", "val_split_seed", "image_size", "data_mode", "memory_budget_gb", "class_subset",
               "train_fraction", "data_workers", "gpu_decode", "epochs", "eval_batch_size", "seed", "device", "bf16",
               "threads", "cache_dir")
#: the params a search space may vary (any TrialConfig field but SWEEP_FIXED; the usual ones first), the
#: ablation's arm and the seed: what the leaderboard shows and analysis compares trials by
SEARCHED_PARAMS = tuple(dict.fromkeys((*LOSS_WEIGHTS, "connector", "student", "lr", "weight_decay",
                                       *(f.name for f in dataclasses.fields(TrialConfig) if f.name not in SWEEP_FIXED),
                                       "arm", "seed")))
LABEL_KEYS = ("arm", "origin", "optuna_trial", "config_id", "config_role", "config_rank")
RACE = "race"  # the origin of a race seed's trial (tuner/race.py)


def trial_params(base: Union[TrialConfig, Mapping[str, Any]], params: Mapping[str, Any]) -> Dict[str, Any]:
    """THE rule for a trial's effective params: the sweep's base config overridden by its sampled
    ``params``; label keys (``arm``, ``config_id`` ...) pass through. What MLflow logs and sync checks."""
    return {**(base.to_dict() if isinstance(base, TrialConfig) else base), **params}


def apply_params(base: Union[TrialConfig, Mapping[str, Any]], params: Mapping[str, Any]) -> TrialConfig:
    """One trial's validated config (``trial_params`` without the label keys)."""
    return TrialConfig.from_dict({k: v for k, v in trial_params(base, params).items() if k not in LABEL_KEYS})


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
    workers_per_trial: int = 1  # > 1: each trial is a Ray Train run of this many DDP workers (tuner/workers.py)
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
    num_to_keep: int = 4
    top_k: int = 3
    race: int = 0  # > 1: race configurations over up to this many seeds inside the search (tuner/race.py); 0: off
    confirm: int = 2  # confirmation stage: the search's top K re-run over seeds (0: off); see tuner/confirm.py
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

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Every field but ``space``, whose names live in ``search_spaces`` (a layer above this one):
        the driver checks it (``tuner.sweep.check_space``)."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, _coerce(f.name, getattr(self, f.name), f.type))
        if not isinstance(self.search, Mapping):
            raise ConfigError(f"search: must be a mapping of field: {{kind: args}}, got {_shown(self.search)}")
        if not isinstance(self.search_points, list) or not all(isinstance(p, Mapping) for p in self.search_points):
            raise ConfigError(f"search_points: must be a list of mappings of field: value, got {_shown(self.search_points)}")
        if self.searcher is not None:
            check_choice("searcher", self.searcher, SEARCHERS)
        if self.scheduler is not None:
            check_choice("scheduler", self.scheduler, SCHEDULERS)
        for name in ("num_samples", "seeds", "max_failures", "num_to_keep"):
            _range(name, getattr(self, name), lo=1 if name != "max_failures" else 0)
        _range("race", self.race, lo=0, hi=100)
        for name in ("max_concurrent", "grace_period", "top_k", "confirm"):
            _range(name, getattr(self, name), lo=0)
        _range("seed", self.seed, lo=0, hi=MAX_SEED)
        for name in ("name", "experiment", "study_name", "optuna_storage", "tracking_uri", "storage_path", "address"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"{name}: must not be empty; leave it out for the default")
        _range("confirm_seeds", self.confirm_seeds, lo=2)  # one seed has no spread to test against
        for exp in self.warm_start:
            if not exp.strip():
                raise ConfigError("warm_start: an experiment name must not be empty")
        _range("cpus_per_trial", self.cpus_per_trial, lo=0.0, lo_open=True)
        _range("gpus_per_trial", self.gpus_per_trial, lo=0.0)
        _range("workers_per_trial", self.workers_per_trial, lo=1)
        for name in ("cpus_per_worker", "gpus_per_worker"):
            if getattr(self, name) is not None and self.workers_per_trial == 1:
                raise ConfigError(f"{name}: applies only with workers_per_trial > 1; for one-worker trials use "
                                  f"{name.replace('worker', 'trial')}")
        if self.cpus_per_worker is not None:
            _range("cpus_per_worker", self.cpus_per_worker, lo=0.0, lo_open=True)
        if self.gpus_per_worker is not None:
            _range("gpus_per_worker", self.gpus_per_worker, lo=0.0)
        _range("reduction_factor", self.reduction_factor, lo=1.0, lo_open=True)
        if self.name is not None and not _NAME_OK(self.name):
            raise ConfigError(f"name: {_shown(self.name)} is not allowed; use letters, digits, '.', '_' and '-' (max 100)")


def _NAME_OK(name: str) -> bool:
    import re

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
