"""Racing over seeds inside the search (``--race N``): a configuration that holds up is run on more seeds
before the search moves on, one that loses on the seeds it shares with the incumbent is dropped.

SMAC's intensification, on Tune + Optuna: each configuration is one Optuna trial whose first seed is the
search's own trial; its further seeds are Tune trials of their own (``origin = race``, one MLflow run
each, grouped by ``config_id``) that the searcher hands out before it asks Optuna for a new
configuration. The incumbent is the configuration with the most seeds and the best mean; a challenger
runs the incumbent's seeds one at a time and is dropped as soon as its mean on the seeds both ran is
below the incumbent's (paired: a seed's luck is shared); with as many seeds and a mean as high, it
becomes the incumbent. The incumbent gets one more seed, up to ``N``, each time a challenge is decided.
A race seed runs every epoch: ASHA never stops it (``RaceASHA``). docs/method.md, "Racing over seeds".
"""
from __future__ import annotations

import pickle
import statistics
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from ray.tune.schedulers import ASHAScheduler

from tuner.core import metrics as M
from tuner.core.config import LABEL_KEYS, RACE
from tuner.driver.generator import RestoredTrial
from tuner.driver.search import StudySearch

__all__ = ["RACE", "Race", "RaceSearch", "RaceASHA", "config_id_of"]

def config_id_of(optuna_trial: int) -> str:
    """A raced configuration's id: its Optuna trial's number (the study's trial of its first seed)."""
    return f"s{optuna_trial}"


@dataclass
class Race:
    """The race's state, pure data: per configuration its value on each seed index run (0 = the search's seed)."""

    max_seeds: int
    values: Dict[str, Dict[int, float]] = field(default_factory=dict)
    dropped: Set[str] = field(default_factory=set)
    incumbent: Optional[str] = None
    queue: List[Tuple[str, int]] = field(default_factory=list)  # (config id, seed index) to run, in order
    running: Set[Tuple[str, int]] = field(default_factory=set)

    def seeds(self, cid: str) -> int:
        return len(self.values.get(cid, {}))

    def mean(self, cid: str, on: Optional[List[int]] = None) -> float:
        got = self.values[cid]
        return statistics.fmean(got[k] for k in (got if on is None else on))

    def record(self, cid: str, index: int, value: Optional[float]) -> None:
        """Seed ``index`` of ``cid`` ended with ``value`` (None: it did not run every epoch: stopped, diverged, failed)."""
        self.running.discard((cid, index))
        if value is None:
            self._drop(cid)
            self._intensify()
            return
        self.values.setdefault(cid, {})[index] = float(value)
        if cid in self.dropped or cid == self.incumbent:
            return
        if self.incumbent is None:
            self.incumbent = cid
        elif self._worse(cid):
            self._drop(cid)
        elif self.seeds(cid) >= self.seeds(self.incumbent):
            self.incumbent = cid
        else:
            self._push(cid)
            return
        self._intensify()

    def next_job(self) -> Optional[Tuple[str, int]]:
        """The next (config id, seed index) to run, or None: the searcher then asks for a new configuration."""
        for job in self.queue:
            if job[0] not in self.dropped and job not in self.running:
                self.queue.remove(job)
                self.running.add(job)
                return job
        return None

    def standing(self) -> List[Tuple[str, int, float]]:
        """``(config id, seeds, mean)`` of every configuration still in the race: most seeds, then best mean, first."""
        alive = [c for c in self.values if c not in self.dropped]
        return sorted(((c, self.seeds(c), self.mean(c)) for c in alive), key=lambda t: (-t[1], -t[2]))

    # -- internals ------------------------------------------------------------------------------------------
    def _worse(self, cid: str) -> bool:
        shared = sorted(set(self.values[cid]) & set(self.values[self.incumbent]))
        return bool(shared) and self.mean(cid, shared) < self.mean(self.incumbent, shared)

    def _planned(self, cid: str) -> Set[int]:
        return set(self.values.get(cid, {})) | {k for c, k in self.queue + sorted(self.running) if c == cid}

    def _push(self, cid: str) -> None:
        """Queue the challenger's next seed: the first the incumbent ran that it has not (paired), else a new one."""
        planned = self._planned(cid)
        if any(c == cid for c, _ in self.queue + sorted(self.running)):
            return
        theirs = sorted(set(self.values.get(self.incumbent, {})) - planned) if self.incumbent else []
        nxt = theirs[0] if theirs else next((k for k in range(self.max_seeds) if k not in planned), None)
        if nxt is not None:
            self.queue.append((cid, nxt))

    def _intensify(self) -> None:
        """One more seed for the incumbent, up to ``max_seeds`` (and one at a time)."""
        inc = self.incumbent
        if inc is None or any(c == inc for c, _ in self.queue + sorted(self.running)):
            return
        nxt = next((k for k in range(self.max_seeds) if k not in self._planned(inc)), None)
        if nxt is not None:
            self.queue.insert(0, (inc, nxt))

    def _drop(self, cid: str) -> None:
        self.dropped.add(cid)
        self.queue = [job for job in self.queue if job[0] != cid]
        if cid == self.incumbent:
            standing = self.standing()
            self.incumbent = standing[0][0] if standing else None


class RaceSearch(StudySearch):
    """``StudySearch`` that races its configurations over seeds (``Race``) and hands out race seeds first.

    Optuna sees each configuration once, through its first seed (the search's trial, as without racing);
    race seeds are Tune trials without an ``optuna_trial``, which the study never hears of.
    """

    def __init__(self, *args: Any, race: int, base_seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._race = Race(int(race))
        self._base_seed = int(base_seed)
        self._jobs: Dict[str, Tuple[str, int]] = {}  # Tune trial id -> (config id, seed index)
        self._params: Dict[str, Dict[str, Any]] = {}  # config id -> its params (labels dropped)
        self._told: Set[str] = set()  # Tune trial ids whose end the race has recorded

    def suggest(self, trial_id: str) -> Optional[Dict]:
        job = self._race.next_job()
        if job is not None:
            cid, index = job
            self._jobs[trial_id] = job
            return {**self._params[cid], "seed": self._base_seed + index, "config_id": cid, "origin": RACE}
        config = super().suggest(trial_id)
        if config is None:
            return None
        cid = config_id_of(config["optuna_trial"])
        self._params[cid] = {k: v for k, v in config.items() if k not in LABEL_KEYS}
        self._jobs[trial_id] = (cid, 0)
        return {**config, "config_id": cid}

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        super().on_trial_complete(trial_id, result, error)
        job = self._jobs.get(trial_id)
        if job is None or trial_id in self._told:
            return  # a trial this searcher's snapshot never handed out (restored past it), or told already
        self._told.add(trial_id)
        self._race.record(*job, self._value(result, error))

    def _value(self, result: Optional[Dict], error: bool) -> Optional[float]:
        """A seed's value: its metric when it ran every epoch without an error, else None (the race drops it)."""
        done = bool(result) and not error and not result.get(M.DIVERGED_KEY) \
            and int(result.get(M.EPOCH, 0)) >= self._max_epochs
        return result.get(self.metric) if done else None

    def restored(self, trials: Sequence[RestoredTrial]) -> None:
        """The race rebuilt from the trial list Tune restored, not from this searcher's snapshot, which a kill can
        leave older or newer than the list (docs/architecture.md, "Faults"): the ended trials' values recorded in
        the order they ended, the others running again. Restored as saved, a seed the list held and the snapshot
        did not was never recorded and ran twice, one the snapshot had running and the list lost was never run,
        and a seed that errored (a full disk) had dropped its configuration although ``--resume`` re-runs it."""
        race, jobs = Race(self._race.max_seeds), {}
        for t in trials:
            cid = t.config.get("config_id")
            if cid is not None:
                raced = t.config.get("origin") == RACE
                jobs[t.trial_id] = (cid, int(t.config["seed"]) - self._base_seed if raced else 0)
                self._params.setdefault(cid, {k: v for k, v in t.config.items() if k not in LABEL_KEYS and k != "seed"})
                if raced and t.status != "TERMINATED":
                    race.running.add(jobs[t.trial_id])  # Tune runs it again (resume_unfinished, resume_errored)
        ended = [t for t in trials if t.status == "TERMINATED" and t.trial_id in jobs]
        for t in sorted(ended, key=lambda t: t.last_result_time):
            race.record(*jobs[t.trial_id], self._value(t.last_result, error=False))
        held = set(jobs.values())
        race.queue = [job for job in race.queue if job not in held]
        self._race, self._jobs, self._told = race, jobs, {t.trial_id for t in ended}

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"numbers": self._numbers, "completed": self._completed, "race": self._race,
                         "jobs": self._jobs, "params": self._params, "told": self._told}, f)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        # ``restored`` then rebuilds the race from the trial list; the params are what the list may lack
        self._race, self._jobs, self._params, self._told = state["race"], state["jobs"], state["params"], state["told"]


def _raced(trial: Any) -> bool:
    return (trial.config or {}).get("origin") == RACE


class RaceASHA(ASHAScheduler):
    """ASHA for the search's first seeds; a race seed always runs every epoch (its value is a full one)."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        if not _raced(trial):
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: Dict) -> str:
        return self.CONTINUE if _raced(trial) else super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: Dict) -> None:
        if not _raced(trial):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        if not _raced(trial):
            super().on_trial_remove(tune_controller, trial)
