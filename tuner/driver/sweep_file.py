"""A sweep's own file, ``srrl_sweep.yaml`` beside Tune's state: the sweep and base trial config it
started with (what ``--resume`` reads), how many search trials it plans (what sync reads to tell
a finished search from an interrupted one, without Tune's pickled searcher state), the teacher it
distilled from (what a rebuilt parent run is tagged with), and which version of the Tune objects its
``tuner.pkl`` holds (an older one is rebuilt from this file on ``--resume``)."""
from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import yaml

from tuner.core.config import ConfigError, TrialConfig, parse_yaml
from tuner.core.sweep_config import SweepConfig
from tuner.driver.storage import SweepFolder

__all__ = ["SWEEP_FILE", "RESUME_FIELDS", "TUNER_PKL", "sweep_yaml", "load_sweep_dir", "load_for_resume", "planned_trials",
           "saved_teacher", "saved_tuner_pkl", "stale_tuner_pkl", "restore_tuner"]

SWEEP_FILE = "srrl_sweep.yaml"
#: what ``--resume`` may change: where the records are (a moved folder's stores, another cluster) and the
#: confirmation stage; anything else would make the resumed sweep another one than its trials ran
RESUME_FIELDS = ("tracking_uri", "optuna_storage", "address", "confirm", "confirm_seeds")
#: the version of what the driver pickles into a stage's ``tuner.pkl`` (Tune keeps the callbacks, searcher and
#: scheduler of a stage's start there, and ``Tuner.restore`` reuses them): bump it when they change, so a sweep
#: started by an older srrl-tune resumes with today's. 1 (a file without the key): before the stall watch.
TUNER_PKL = 3
#: what each version added, which a ``tuner.pkl`` of an older one lacks (said when it is rebuilt)
TUNER_PKL_ADDED = {2: "stall watch", 3: "trial generators that agree with the trial list Tune restores"}


def sweep_yaml(sweep: SweepConfig, base: TrialConfig, trials: Optional[int] = None,
               teacher: Optional[Mapping[str, Any]] = None, tuner_pkl: int = TUNER_PKL) -> str:
    """The file's text: ``sweep`` and ``base`` mappings, ``trials`` (the search stage's planned count), the
    ``teacher``'s facts (``Teacher.info()``; none for a sweep without one) and the ``tuner.pkl`` version (an older
    one while a resume has not yet rebuilt every stage's file)."""
    data = {"sweep": sweep.to_dict(), "base": base.to_dict(), **({"trials": int(trials)} if trials is not None else {}),
            **({"teacher": {k: (v if isinstance(v, (int, float)) else str(v)) for k, v in teacher.items()}}
               if teacher else {}), "tuner_pkl": int(tuner_pkl)}
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


def saved_teacher(path: str, field: str = "sync") -> Dict[str, Any]:
    """The teacher's facts the sweep file keeps (``Teacher.info()``), or {} (no teacher, or an older file)."""
    teacher = _read(path, field)[1].get("teacher")
    return dict(teacher) if isinstance(teacher, dict) else {}


def saved_tuner_pkl(path: str) -> int:
    """The version of the Tune objects in the ``tuner.pkl`` files of the sweep in ``path``, per its sweep file."""
    version = _read(path, "resume")[1].get("tuner_pkl", 1)
    return version if isinstance(version, int) else 1


def stale_tuner_pkl(version: int) -> Optional[str]:
    """Why ``tuner.pkl`` files of ``version`` (``saved_tuner_pkl``) must be rebuilt before a restore, or None."""
    if version >= TUNER_PKL:
        return None
    lacks = ", ".join(f"no {what}" for v, what in sorted(TUNER_PKL_ADDED.items()) if v > version)
    return f"written by an older srrl-tune (version {version} of its Tune objects, not {TUNER_PKL}: {lacks})"


def restore_tuner(tune: Any, stage: SweepFolder, trainable: Any, rebuild: Callable[[], Any], stale: Optional[str],
                  log: Callable[[str], None], resume_errored: bool = True) -> Any:
    """The stage's ``Tuner`` restored from its ``tuner.pkl``, running its unfinished trials again and, with
    ``resume_errored``, its errored ones. Where that file is ``stale`` (``stale_tuner_pkl``), torn, missing, or
    names classes of an older srrl-tune, ``rebuild()`` writes it anew first (a ``Tuner`` built from the sweep file):
    it holds only what the sweep file rebuilds, the trials' progress and the searcher's state live in their own
    files."""
    path, fs = stage.for_tune()

    def restore() -> Any:
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=resume_errored,
                                  storage_filesystem=fs)

    why = stale
    if why is None:
        try:
            return restore()
        except (EOFError, pickle.UnpicklingError, FileNotFoundError, AttributeError, ModuleNotFoundError) as e:
            if isinstance(e, (AttributeError, ModuleNotFoundError)) and "tuner" not in str(e):
                raise  # not a class of ours that moved: a real error
            # torn by a driver killed mid-upload (before tuner.driver.atomic_fs), never written, or naming classes
            # of an older srrl-tune
            why = "written by an older srrl-tune" if isinstance(e, (AttributeError, ModuleNotFoundError)) \
                else "torn or missing"
    log(f"{stage.shown}/tuner.pkl was {why}; rebuilt it from {SWEEP_FILE}")
    rebuild()
    return restore()


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
