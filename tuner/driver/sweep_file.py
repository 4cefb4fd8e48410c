"""A sweep's own file, ``srrl_sweep.yaml`` beside Tune's state: the sweep and base trial config it
started with (what ``--resume`` reads) and how many search trials it plans (what sync reads to tell
a finished search from an interrupted one, without Tune's pickled searcher state)."""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import yaml

from tuner.core.config import ConfigError, TrialConfig, parse_yaml
from tuner.core.sweep_config import SweepConfig
from tuner.driver.storage import SweepFolder

__all__ = ["SWEEP_FILE", "sweep_yaml", "load_sweep_dir", "planned_trials"]

SWEEP_FILE = "srrl_sweep.yaml"


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
