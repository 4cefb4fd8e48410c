"""Tune's trial generator for every stage, restored to agree with the trial list Tune restored, and the searcher of
a stage whose points are fixed (the confirmation, an exhaustive grid).

Tune snapshots its trial list (``experiment_state-*.json``) and the generator's state in separate files, one
after the other: a driver killed, or a disk filled, between them leaves one newer than the other (docs/
architecture.md, "Faults"). Restored as saved, a count of trials made past the list ends the stage short of
``num_samples`` for good (seen in CI: every ``--resume`` stopped with one trial "not yet created"), a count behind
it runs more trials than asked (a fixed point twice), and the limiter's live trials that the list holds as
finished, or not at all, hold their slots forever (``--max-concurrent`` of them: the stage waits with nothing
running). So all three are set from the list.
"""
from __future__ import annotations

import json
import pickle
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from ray.tune.search import ConcurrencyLimiter, SearchGenerator, Searcher

from tuner.driver.ray_internals import load_variant_state, newest_experiment_state, set_live_trials, set_trials_created

__all__ = ["ReconciledGenerator", "PointsSearch", "RestoredTrial", "restored_trials"]


class RestoredTrial(NamedTuple):
    """A trial of the list Tune restores: its id, status (TERMINATED, ERROR, RUNNING, PENDING ...), config, last
    reported result and when it reported it (``time.time()``)."""

    trial_id: str
    status: str
    config: Dict[str, Any]
    last_result: Dict[str, Any]
    last_result_time: float


class ReconciledGenerator(SearchGenerator):
    """Tune's ``SearchGenerator`` over ``searcher`` and its concurrency limit; restored, it counts the trials the
    restored list holds, frees the slots of those that ended, and tells a searcher with a ``restored(trials)``
    method which trials those are (``PointsSearch`` skips their points). The study trials that lost Tune
    trials are failed by ``settle_study``."""

    def __init__(self, searcher: Searcher, max_concurrent: int) -> None:
        # Tune adds the limiter only around a bare Searcher, so it is added here
        super().__init__(ConcurrencyLimiter(searcher, max_concurrent=max_concurrent))

    def has_checkpoint(self, dirpath: str) -> bool:
        return super().has_checkpoint(dirpath) or _variant_spec(dirpath) is not None

    def restore_from_dir(self, dirpath: str) -> None:
        # Tune gives a restored generator no experiment (it is unpickled from tuner.pkl, made before any was
        # added): its own file holds it, or, for a stage an older srrl-tune ran with Tune's BasicVariantGenerator
        # (its tuner.pkl rebuilt on --resume), that generator's file holds the experiment's spec
        if super().has_checkpoint(dirpath):
            super().restore_from_dir(dirpath)
        else:
            spec = {**_variant_spec(dirpath), "config": {}}  # the points are the searcher's suggestions now
            self._experiment, self._total_samples = _Spec(spec), int(spec.get("num_samples", 1))
        trials = restored_trials(dirpath)
        if trials is None:
            return
        set_trials_created(self, len(trials))
        # a stage resumes its errored trials too (resume_errored): each of them will end again
        set_live_trials(self.searcher, (t.trial_id for t in trials if t.status != "TERMINATED"))
        restored = getattr(self.searcher.searcher, "restored", None)
        if restored is not None:
            restored(trials)


class PointsSearch(Searcher):
    """Suggests each of ``points`` once, in order, then nothing more. Its state is which points the trials Tune
    holds already took (``restored``): a point is never run twice, and none is skipped, whatever snapshot
    a kill left of this searcher."""

    def __init__(self, points: Sequence[Dict[str, Any]]) -> None:
        super().__init__()
        self._points = [dict(p) for p in points]
        self._taken: set = set()  # indices of the points a trial holds

    def suggest(self, trial_id: str) -> Optional[Dict[str, Any]]:
        left = [i for i in range(len(self._points)) if i not in self._taken]
        if not left:
            return Searcher.FINISHED
        self._taken.add(left[0])
        return dict(self._points[left[0]])

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        pass  # a fixed point learns nothing from a result

    def restored(self, trials: List[RestoredTrial]) -> None:
        """The points taken are those whose every value a restored trial's config holds."""
        held = {_key(t.config, p) for t in trials for p in self._points}
        self._taken = {i for i, p in enumerate(self._points) if _key(p, p) in held}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"taken": sorted(self._taken)}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self._taken = set(pickle.load(f)["taken"])


class _Spec(NamedTuple):
    """What a ``SearchGenerator`` reads of its experiment: the spec it makes each trial from."""

    spec: Dict[str, Any]


def _variant_spec(dirpath: str) -> Optional[Dict[str, Any]]:
    """The experiment spec in the newest ``BasicVariantGenerator`` state under ``dirpath``, or None."""
    state = load_variant_state(dirpath)
    iterators = (state or {}).get("_iterators") or []
    return dict(iterators[0].unresolved_spec) if iterators else None


def _key(config: Dict[str, Any], point: Dict[str, Any]) -> str:
    """``config``'s values of ``point``'s keys as Tune's saved trial list holds them (JSON: a tuple is a list)."""
    return json.dumps({k: config.get(k) for k in point}, sort_keys=True, default=str)


def restored_trials(dirpath: str) -> Optional[List[RestoredTrial]]:
    """Each trial of the newest experiment state under ``dirpath``, the one Tune restores; None if there is none."""
    newest = newest_experiment_state(dirpath)
    if newest is None:
        return None
    with open(newest) as f:
        pairs = [(json.loads(state), json.loads(meta) if meta else {}) for state, meta in json.load(f)["trial_data"]]
    return [RestoredTrial(state["trial_id"], state["status"], dict(state.get("config") or {}),
                          dict(meta.get("last_result") or {}), float(meta.get("last_result_time") or float("-inf")))
            for state, meta in pairs]
