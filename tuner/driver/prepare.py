"""A sweep's settings completed before anything runs: the space checked against the base config, and the
defaults that depend on time, place and the space (name, URIs, searcher, scheduler, ASHA's grace period);
``smoke`` shrinks a sweep to a fast one. Bad input is a one-line ``ConfigError`` here, before data or Ray."""
from __future__ import annotations

import dataclasses
import datetime as _dt
from pathlib import Path
from typing import Any, Optional, Tuple

from search_spaces import space_of
from search_spaces.declared import DECLARED
from search_spaces.presets import DEFAULT_SPACE
from tuner.core import metrics as M
from tuner.core.config import ConfigError, TrialConfig
from tuner.core.sweep_config import SweepConfig, trial_base
from tuner.core.uri import is_uri, sqlite_file
from tuner.driver.job_dir import job_copy, refuse_inside
from tuner.tracking import default_tracking_uri

__all__ = ["smoke", "space_name", "check_space", "prepare_sweep"]


def smoke(sweep: SweepConfig, base: TrialConfig) -> Tuple[SweepConfig, TrialConfig]:
    """A tiny, fast version of whatever was asked: few trials, few epochs, same code paths."""
    sweep = dataclasses.replace(sweep, num_samples=min(sweep.num_samples, 4), seeds=1, grace_period=1, reduction_factor=2.0,
                                confirm=min(sweep.confirm, 1), confirm_seeds=2)
    base = base.replace(epochs=min(base.epochs, 3), teacher_epochs=min(base.teacher_epochs, 3))
    return sweep, base


def space_name(sweep: SweepConfig) -> str:
    """The preset a sweep starts from: ``space``, else the default preset, or none (``declared``) when only
    ``search:`` is given."""
    return sweep.space or (DECLARED if sweep.search else DEFAULT_SPACE)


def check_space(sweep: SweepConfig, base: TrialConfig) -> Any:
    """The sweep's space (``search_spaces.space_of``), validated against ``base``; bad input is a one-line
    ``ConfigError`` naming the field, before any data is read."""
    space = space_of(space_name(sweep), sweep.search, base)
    for point in sweep.search_points:
        unknown = [k for k in point if k not in (space.declaration or {})]
        if unknown:
            raise ConfigError(f"search_points: {dict(point)}: {', '.join(map(str, unknown))} not searched by this space "
                              f"(it searches {', '.join(space.declaration or {})})")
    return space


def prepare_sweep(sweep: SweepConfig, base: TrialConfig) -> Tuple[SweepConfig, TrialConfig]:
    """Fill in the defaults that depend on time, place and the space (name, URIs, searcher, paths)."""
    space = check_space(sweep, base)
    sweep = dataclasses.replace(sweep, space=space_name(sweep))
    name = sweep.name or f"{sweep.space}-{base.dataset}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    copy = job_copy()  # a Ray job's working_dir copy: nothing the user keeps may be written there
    refuse_inside("storage_path", sweep.storage_path, copy, "--storage-path")
    storage = sweep.storage_path
    if not is_uri(storage):
        storage = str(Path(storage).expanduser().resolve())
    tracking_uri = sweep.tracking_uri
    if tracking_uri is None and copy is not None:  # a job's default store: beside its sweeps, not in the copy
        if is_uri(storage):
            raise ConfigError(f"tracking_uri: a Ray job runs in a temporary copy of its working_dir and "
                              f"storage_path {storage} is not a local folder; pass --tracking-uri "
                              "(sqlite:////abs/path/mlflow.db, or http://host:5000)")
        try:  # the sweep creates it anyway; the store inside it needs it now
            Path(storage).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"storage_path: cannot create {storage}: {e.strerror}") from None
        tracking_uri = default_tracking_uri(storage)
    tracking_uri = tracking_uri or default_tracking_uri()
    refuse_inside("tracking_uri", tracking_uri, copy, "--tracking-uri")
    optuna_storage = sweep.optuna_storage
    if optuna_storage is None and space.grid is None:
        optuna_storage = _beside(tracking_uri, "optuna.db") or f"sqlite:///{Path('optuna.db').resolve()}"
    refuse_inside("optuna_storage", optuna_storage, copy, "--optuna-storage")
    refuse_inside("cache_dir", base.cache_dir, copy)
    sweep = dataclasses.replace(
        sweep, name=name, storage_path=storage, tracking_uri=tracking_uri, experiment=sweep.experiment or name,
        optuna_storage=optuna_storage, searcher=sweep.searcher or space.sampler, scheduler=sweep.scheduler or space.scheduler,
        grace_period=sweep.grace_period or max(1, round(M.GRACE_FRACTION * base.epochs)),
    )
    if len(space.objectives) > 1 and sweep.scheduler == "asha":
        raise ConfigError(f"scheduler: 'asha' cannot rank the multi-objective space {sweep.space!r}; use fifo")
    if sweep.race > 1 and (space.exhaustive or space.multi_objective):
        raise ConfigError(f"race: space {sweep.space!r} has no single value to race on (an exhaustive grid runs every "
                          "seed, a multi-objective front has no one winner); leave race out")
    trial_base(sweep, base)  # a batch that cannot be split across the trial's workers stops here
    return sweep, base


def _beside(tracking_uri: str, filename: str) -> Optional[str]:
    """``sqlite:///<folder>/<filename>`` next to an SQLite MLflow store, else None."""
    db = sqlite_file(tracking_uri)
    return f"sqlite:///{db.parent / filename}" if db is not None else None
