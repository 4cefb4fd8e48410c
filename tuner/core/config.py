"""Typed, validated configuration for one distillation trial (``TrialConfig``)."""
from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Union

import yaml

from tuner.core import catalog
from tuner.core.config_io import ConfigError, load_yaml, parse_yaml
from tuner.core.registry import did_you_mean

__all__ = ["ConfigError", "TrialConfig", "load_yaml", "parse_yaml", "apply_params", "trial_params", "planned_epochs", "uses_teacher",
           "coerce", "check_range", "check_choice", "shown", "fmt_param", "LABEL_KEYS", "RACE", "LOSS_WEIGHTS", "SEARCHED_PARAMS",
           "SWEEP_FIXED", "SEARCHERS", "SCHEDULERS", "DATA_OPTIONS", "MAX_SEED"]


OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
#: TrialConfig fields that are options of the data set (``tuner.core.catalog.dataset_options``), not of the recipe
DATA_OPTIONS = ("image_size", "data_mode", "memory_budget_gb", "class_subset", "train_fraction", "max_image_pixels")


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
    max_image_pixels: Optional[int] = None  # imagefolder / imagenet: larger images (by header) are refused (None: 89,478,485)
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

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **changes: Any) -> "TrialConfig":
        """A validated copy with some fields changed."""
        return TrialConfig.from_dict({**self.to_dict(), **changes})

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Coerce field types and check ranges and registry names; raise ConfigError on the first problem.

        The names and the data set's options are the catalog's (``tuner.core.catalog``): no torch is imported."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce(f.name, getattr(self, f.name), f.type))

        check_choice("dataset", self.dataset, catalog.list_datasets())
        check_choice("teacher", self.teacher, catalog.list_models())
        check_choice("student", self.student, catalog.list_models())
        check_choice("connector", self.connector, catalog.list_connectors())
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("device", self.device, DEVICES)
        for name in ("alpha", "beta", "gamma", "weight_decay"):
            check_range(name, getattr(self, name), lo=0.0)
        for name in ("temperature", "lr"):
            check_range(name, getattr(self, name), lo=0.0, lo_open=True)
        if self.teacher_lr is not None:
            check_range("teacher_lr", self.teacher_lr, lo=0.0, lo_open=True)
        check_range("momentum", self.momentum, lo=0.0, hi=1.0, hi_open=True)
        check_range("lr_decay", self.lr_decay, lo=0.0, hi=1.0, lo_open=True)
        if self.val_fraction is not None:
            check_range("val_fraction", self.val_fraction, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        if self.image_size is not None:
            check_range("image_size", self.image_size, lo=8, hi=1024)
        if self.data_mode is not None:
            check_choice("data_mode", self.data_mode, catalog.DATA_MODES)
        if self.memory_budget_gb is not None:
            check_range("memory_budget_gb", self.memory_budget_gb, lo=0.0)
        if self.class_subset is not None:
            check_range("class_subset", self.class_subset, lo=2)
        if self.train_fraction is not None:
            check_range("train_fraction", self.train_fraction, lo=0.0, hi=1.0, lo_open=True)
        if self.max_image_pixels is not None:
            check_range("max_image_pixels", self.max_image_pixels, lo=1)
        if self.data_workers is not None:
            check_range("data_workers", self.data_workers, lo=0, hi=256)
        for name in self.data_options():
            if name not in catalog.dataset_options(self.dataset):
                takes = [d for d in catalog.list_datasets() if name in catalog.dataset_options(d)]
                raise ConfigError(f"{name}: dataset {self.dataset!r} does not take it; only {', '.join(takes)} do")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            check_range(name, getattr(self, name), lo=1)
        for name in ("teacher_epochs", "threads"):
            check_range(name, getattr(self, name), lo=0)
        for name in ("seed", "teacher_seed"):
            check_range(name, getattr(self, name), lo=0, hi=MAX_SEED)
        if self.val_split_seed is not None:
            check_range("val_split_seed", self.val_split_seed, lo=0, hi=MAX_SEED)
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


def coerce(name: str, value: Any, annotation: Any) -> Any:
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
            raise ConfigError(f"{name}: must be a list of {kind}, got {shown(value)}")
        return [coerce(name, v, inner) for v in value]
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{name}: must be true or false, got {shown(value)}")
    if base == "int":
        if isinstance(value, bool):
            raise ConfigError(f"{name}: must be an integer, got {shown(value)}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be an integer, got {shown(value)}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{name}: must be an integer, got {shown(value)}")
        return int(as_float)
    if base == "float":
        if isinstance(value, bool):
            raise ConfigError(f"{name}: must be a number, got {shown(value)}")
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: must be a number, got {shown(value)}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{name}: must be a finite number, got {shown(value)}")
        return out
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name}: must be a string, got {shown(value)}")
        return value
    return value


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 60, 60


def shown(value: Any, limit: int = 80) -> str:
    """A bounded ``repr(value)``: an error line never embeds an unbounded value, and making it never
    walks one (a YAML alias bomb's nested lists would take minutes and gigabytes to print whole)."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_choice(name: str, value: str, allowed: Any) -> None:
    """A ``ConfigError`` naming field ``name`` unless ``value`` is one of ``allowed`` (it lists them)."""
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}: {shown(value)} is not allowed{did_you_mean(str(value)[:100], allowed)}; "
                          f"choose from: {', '.join(allowed)}")


def check_range(
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
               "train_fraction", "max_image_pixels", "data_workers", "gpu_decode", "epochs", "eval_batch_size", "seed",
               "device", "bf16", "threads", "cache_dir")
#: the params a search space may vary (any TrialConfig field but SWEEP_FIXED; the usual ones first), the
#: ablation's arm and the seed: what the leaderboard shows and analysis compares trials by
SEARCHED_PARAMS = tuple(dict.fromkeys((*LOSS_WEIGHTS, "connector", "student", "lr", "weight_decay",
                                       *(f.name for f in dataclasses.fields(TrialConfig) if f.name not in SWEEP_FIXED),
                                       "arm", "seed")))
LABEL_KEYS = ("arm", "origin", "optuna_trial", "config_id", "config_role", "config_rank")


def fmt_param(value: Any) -> str:
    """A searched value as every view shows it (the CLI, run names, verdict labels, the report): a float to
    3 significant digits (``0.294``, ``0.05``, ``1e-05``), anything else as is."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


RACE = "race"  # the origin of a race seed's trial (tuner/driver/race.py)


def trial_params(base: Union[TrialConfig, Mapping[str, Any]], params: Mapping[str, Any]) -> Dict[str, Any]:
    """THE rule for a trial's effective params: the sweep's base config overridden by its sampled
    ``params``; label keys (``arm``, ``config_id`` ...) pass through. What MLflow logs and sync checks."""
    return {**(base.to_dict() if isinstance(base, TrialConfig) else base), **params}


def planned_epochs(params: Optional[Mapping[str, Any]], default: Optional[int]) -> Optional[int]:
    """THE rule for the epochs a trial plans: its own ``epochs`` param if it has one, else ``default`` (the base's)."""
    value = params.get("epochs", default) if isinstance(params, Mapping) else default
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def apply_params(base: Union[TrialConfig, Mapping[str, Any]], params: Mapping[str, Any]) -> TrialConfig:
    """One trial's validated config (``trial_params`` without the label keys)."""
    return TrialConfig.from_dict({k: v for k, v in trial_params(base, params).items() if k not in LABEL_KEYS})
