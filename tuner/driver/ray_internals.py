"""The Ray Tune internals the driver relies on, each behind one function that ``tests/test_ray_internals.py``
pins against the installed Ray (setup.cfg admits the Ray those tests ran). Ray offers no public API for them:
a restored stage's generator must agree with the trial list Tune restored, or resume from the file of the
generator an older srrl-tune used (``tuner.driver.generator``), a
multi-worker trial needs a Trainable class whose stop aborts its Train run (``tuner.driver.workers``), and a hung
trial's actor is killed by its handle (``tuner.driver.stalls``), and a start that failed after ``tune.Tuner`` wrote
its folder is told from a sweep by the files it wrote (``tuner.driver.sweep``)."""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

__all__ = ["TUNER_START_FILES", "EXPERIMENT_STATE_GLOB", "newest_experiment_state", "load_variant_state", "set_trials_created", "set_live_trials", "function_trainable_class", "trial_actor"]

#: what ``tune.Tuner(...)`` writes into a new experiment folder before a trial runs: Ray's storage check's marker
#: (``ray.train._internal.storage._VALIDATE_STORAGE_MARKER_FILENAME``) and the Tuner's pickle. A plain tuple: the
#: driver reads it before Ray is imported.
TUNER_START_FILES = (".validate_storage_marker", "tuner.pkl")

#: the names of Tune's experiment-state snapshots (``TuneController.CKPT_FILE_TMPL``), the newest of which a
#: restore and ``tune.ExperimentAnalysis`` read
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"


def newest_experiment_state(dirpath: str) -> Optional[str]:
    """The ``experiment_state-*.json`` under ``dirpath`` that Tune restores (the newest), or None."""
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    return _find_newest_experiment_checkpoint(dirpath)


def load_variant_state(dirpath: str) -> Optional[dict]:
    """The newest ``BasicVariantGenerator`` state under ``dirpath`` (its ``__dict__``: ``_iterators`` hold the
    experiment's ``unresolved_spec``), or None: what a stage an older srrl-tune ran holds of its generator."""
    from ray.tune.search.basic_variant import BasicVariantGenerator
    from ray.tune.utils.util import _load_newest_checkpoint

    return _load_newest_checkpoint(dirpath, BasicVariantGenerator.CKPT_FILE_TMPL.format("*"))


def set_trials_created(generator: Any, count: int) -> None:
    """Tell a ``SearchGenerator`` that ``count`` trials were created (it stops at ``num_samples``)."""
    generator.set_state({**generator.get_state(), "counter": count})


def set_live_trials(limiter: Any, trial_ids: Iterable[str]) -> None:
    """Set the trials a ``ConcurrencyLimiter`` holds slots for (it suggests nothing while all are held)."""
    live = set(trial_ids)
    limiter.set_state({**limiter.get_state(), "live_trials": live, "num_unfinished_live_trials": len(live)})


def function_trainable_class(fn: Callable[..., Any]) -> type:
    """The Trainable class Tune makes of the function trainable ``fn`` (to subclass: its ``cleanup`` runs at stop)."""
    from ray.tune.trainable.function_trainable import wrap_function

    return wrap_function(fn)


def trial_actor(trial: Any) -> Optional[Any]:
    """The actor handle a RUNNING Tune ``Trial`` runs in (to ``ray.kill`` a hung one), or None between actors."""
    return trial.temporary_state.ray_actor
