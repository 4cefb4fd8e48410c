"""A sweep's own file, ``srrl_sweep.yaml`` beside Tune's state: the sweep and base trial config it
started with (what ``--resume`` reads) and how many search trials it plans (what sync reads to tell
a finished search from an interrupted one, without Tune's pickled searcher state)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import yaml

from tuner.core.config import ConfigError, TrialConfig, parse_yaml
from tuner.core.sweep_config import SweepConfig
from tuner.driver.storage import SweepFolder

__all__ = ["SWEEP_FILE", "RESUME_FIELDS", "sweep_yaml", "load_sweep_dir", "load_for_resume", "planned_trials"]

SWEEP_FILE = "srrl_sweep.yaml"
#: what ``--resume`` may change: where the records are (a moved folder's stores, another cluster) and the
#: confirmation stage; anything else would make the resumed sweep another one than its trials ran
RESUME_FIELDS = ("tracking_uri", "optuna_storage", "address", "confirm", "confirm_seeds")


def sweep_yaml(sweep: SweepConfig, base: TrialConfig, trials: Optional[int] = None) -> str:
    """The file's text: ``sweep`` and ``base`` mappings, and ``trials`` (the search stage's planned count)."""
    data = {"sweep": sweep.to_dict(), "base": base.to_dict(), **({"trials": int(trials)} if trials is not None else {})}
    return yaml.safe_dump(data, sort_keys=False)


def _read(path: str, field: str) -> Tuple[SweepFolder, dict]:
    folder = SweepFolder.of(path, field=field)
    if not folder.has_file(SWEEP_FILE):
        raise ConfigError(f"{field}: {folder.shown!r} holds no sweep (no {SWEEP_FILE}); give the folder a sweep printed at its start")
    return folder, parse_yaml(folder.read_text(SWEEP_FILE), f"{folder.shown}/{SWEEP_FILE}", field=field)


def load_sweep_dir(path: str, field: str = "resume") -> Tuple[SweepConfig, TrialConfig]:
    """The sweep and base trial config saved in a sweep folder, local or a URI (what ``--resume PATH`` reads)."""
    folder, data = _read(path, field)
    if not isinstance(data.get("sweep"), dict) or not isinstance(data.get("base"), dict):
        raise ConfigError(f"{field}: {folder.shown}/{SWEEP_FILE} holds no 'sweep' and 'base' mappings")
    unknown = sorted(set(data["sweep"]) - {f.name for f in dataclasses.fields(SweepConfig)})
    if unknown:
        raise ConfigError(f"{field}: {folder.shown}/{SWEEP_FILE} has sweep fields this version does not know "
                          f"({', '.join(unknown)}); resume it with the srrl-tune that started it")
    sweep = SweepConfig(**data["sweep"])
    sweep.validate()
    return sweep, TrialConfig.from_dict(data["base"])


def planned_trials(path: str, field: str = "sweep_dir") -> Optional[int]:
    """The search stage's planned trial count, or None for a sweep file written before it was recorded."""
    trials = _read(path, field)[1].get("trials")
    return int(trials) if isinstance(trials, int) else None


def load_for_resume(path: str, changes: Mapping[str, Any]) -> Tuple[SweepConfig, TrialConfig]:
    """The sweep in folder ``path`` wherever the folder now lies (its parent is the storage path: a moved folder
    resumes), with ``changes`` to ``RESUME_FIELDS``; a folder holding another sweep's settings file is refused."""
    sweep, base = load_sweep_dir(path)
    folder = SweepFolder.of(path, field="resume")
    if folder.fs is None:
        here = Path(folder.location).resolve()
        parent, name = str(here.parent), here.name
    else:
        parts = urlsplit(folder.location)
        head, _, name = parts.path.rstrip("/").rpartition("/")
        parent = urlunsplit(parts._replace(path=head))
    if name != sweep.name:
        raise ConfigError(f"resume: {folder.shown!r} holds the settings of sweep {sweep.name!r}, not of a folder named "
                          f"{name!r} (renamed, or another sweep's {SWEEP_FILE} copied in); resume the sweep in its own "
                          f"folder, named {sweep.name!r}")
    sweep = dataclasses.replace(sweep, storage_path=parent, **dict(changes))
    sweep.validate()
    return sweep, base
