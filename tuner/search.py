"""Ray's OptunaSearch, corrected so the Optuna study tells apart finished, pruned and failed trials."""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple

from ray.tune.search.optuna import OptunaSearch

from tuner import metrics as M

__all__ = ["PruneAwareOptunaSearch", "settle_study"]


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that marks trials ASHA stopped early as PRUNED and diverged trials as FAIL.

    Ray's OptunaSearch tells Optuna every trial that ended without an error as COMPLETE with its
    last value, so a trial ASHA cut after one epoch enters TPE as a finished one with its
    low-fidelity accuracy, biasing the sampler. Here a trial counts as complete only when it ran
    all ``max_epochs``; per-epoch values are reported as intermediate values, which is what
    Optuna's samplers use for pruned trials.

    A trial that errored stays RUNNING in the study: ``--resume`` re-runs errored trials (a full disk,
    a lost node) and they are told how they then end; ``settle_study`` tells FAIL for those still
    errored when the stage ends for good (an Optuna trial once finished can never be told again).

    It also survives a driver restart. Tune restores this searcher from its own snapshot file, which
    a driver killed mid-upload can leave older than the experiment state beside it, and both may be
    older than the RDB study. So trials the study already holds as finished are not told again, and a
    restored Tune trial this snapshot never saw is found by the study trial its config names
    (``optuna_trial``). Study trials the dead driver asked but Tune no longer holds are failed by
    ``settle_study`` once the stage ends: only then is Tune's list of trials whole.
    """

    def __init__(self, *args: Any, max_epochs: int, origins: Optional[Dict[str, List[Dict[str, Any]]]] = None,
                 **kwargs: Any) -> None:
        """``origins``: label -> the points enqueued under it (``authors``, ``warm-start``); a trial whose
        params match one is labelled so in its config (``origin``), any other ``search``."""
        super().__init__(*args, **kwargs)
        self._max_epochs = int(max_epochs)
        self._origins = {k: [dict(p) for p in v] for k, v in (origins or {}).items()}
        self._reconciled = True
        self._reported: Dict[str, Set[int]] = {}  # trial_id -> epochs already reported to the study

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        # a snapshot older than the study holds the sampler's random state of draws already made: the
        # same seed would draw the dead driver's last points again (seen: one config run twice)
        self._ot_study.sampler.reseed_rng()
        self._reconciled = False
        self._reported = {}  # the snapshot may be older than the study: read each trial's steps again

    def suggest(self, trial_id: str) -> Optional[Dict]:
        if not self._reconciled:
            self._reconcile()
        params = super().suggest(trial_id)
        if not isinstance(params, dict) or trial_id not in self._ot_trials:
            return params
        return {**params, "origin": self._origin(params), "optuna_trial": self._ot_trials[trial_id].number}

    def _origin(self, params: Dict[str, Any]) -> str:
        for label, points in self._origins.items():
            if any(all(params.get(k) == v for k, v in p.items()) for p in points):
                return label
        return "search"

    def _reconcile(self) -> None:
        self._reconciled = True
        for trial_id, ot_trial in self._ot_trials.items():
            if self._frozen(ot_trial).state.is_finished():
                self._completed_trials.add(trial_id)

    def _study_trial(self, trial_id: str, result: Optional[Dict]) -> Any:
        """The study trial of Tune trial ``trial_id``: the one it was asked as, or (a trial restored from
        an experiment state newer than this searcher's snapshot) the one its config names; else None."""
        if not self._reconciled:
            self._reconcile()
        if trial_id not in self._ot_trials:
            number = (result or {}).get(CONFIG_NUMBER)
            if number is None:
                return None
            import optuna

            storage = self._ot_study._storage
            found = storage.get_trial_id_from_study_id_trial_number(self._ot_study._study_id, int(number))
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, found)
        return self._ot_trials[trial_id]

    @staticmethod
    def _frozen(ot_trial: Any) -> Any:
        """The study's current record of ``ot_trial`` (a storage read)."""
        return ot_trial.storage.get_trial(ot_trial._trial_id)

    def _report(self, trial_id: str, result: Dict) -> None:
        if isinstance(self.metric, list) or result.get(M.DIVERGED_KEY):
            return  # Optuna keeps no intermediate values for multi-objective studies
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        ot_trial = self._ot_trials[trial_id]
        step = _step(result)
        steps = self._reported.get(trial_id)
        if steps is None:  # first result of this trial in this process: one storage read, not one per epoch
            frozen = self._frozen(ot_trial)
            if frozen.state.is_finished():
                self._completed_trials.add(trial_id)  # recorded before a driver restart
                return
            steps = self._reported[trial_id] = set(frozen.intermediate_values)
        if step not in steps:  # Tune may hand the last result to both hooks
            ot_trial.report(float(value), step)
            steps.add(step)

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        if trial_id not in self._completed_trials and self._study_trial(trial_id, result) is not None:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or self._study_trial(trial_id, result) is None:
            return
        ot_trial = self._ot_trials[trial_id]
        if error:
            return  # left RUNNING, see the class docstring
        if result:
            self._report(trial_id, result)  # Tune hands the last result (ASHA's max_t) only to this hook
            if trial_id in self._completed_trials:
                return
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        state, values, attrs = outcome(result, self._max_epochs, metrics)
        for key, value in attrs.items():
            ot_trial.set_user_attr(key, value)
        self._ot_study.tell(ot_trial, values, state=state)
        self._completed_trials.add(trial_id)
        self._reported.pop(trial_id, None)


#: the study trial a Tune trial was asked as, in the flattened result Tune hands the searcher
CONFIG_NUMBER = "config/optuna_trial"


def _step(result: Dict) -> int:
    return int(result.get(M.EPOCH, result.get("training_iteration", 0)))


def outcome(result: Optional[Dict], max_epochs: int, metrics: List[str]) -> Tuple[Any, Any, Dict[str, int]]:
    """How a trial that ended without an error is told to the study, from its last result:
    ``(state, values, user attrs)``. COMPLETE only when it ran all ``max_epochs`` with finite values;
    PRUNED when stopped early (ASHA); FAIL when it diverged, had no result, or a value is not finite."""
    import optuna

    State = optuna.trial.TrialState
    if not result:
        return State.FAIL, None, {}
    epoch = int(result.get(M.EPOCH, 0))
    status = M.trial_status(False, bool(result.get(M.DIVERGED_KEY)), epoch, max_epochs, ended=True)
    if status == M.DIVERGED:
        return State.FAIL, None, {"diverged_epoch": epoch}
    if status == M.STOPPED_EARLY:
        return State.PRUNED, None, {"stopped_at_epoch": epoch}
    values = [result.get(m) for m in metrics]
    if any(v is None or not math.isfinite(v) for v in values):
        return State.FAIL, None, {}
    return State.COMPLETE, values if len(values) > 1 else values[0], {}


def settle_study(storage: str, study_name: str, trials: Iterable[Tuple[int, Optional[str], List[Dict]]],
                 max_epochs: int, metrics: List[str]) -> Dict[str, int]:
    """Make the study agree with how Tune's trials ended, once a stage ended without interruption.

    ``trials``: every Tune trial of the stage as ``(optuna_trial, error line or None, its results in
    order); ``metrics``: the study's objectives, as the searcher reads them. A study trial still RUNNING is then told: FAIL with its error when its Tune trial errored
    (``--resume`` re-ran it no more), else what ``outcome`` makes of its last result, with the epochs
    the searcher never reported (a trial restored past the searcher's snapshot); one that no Tune trial
    holds was asked by a killed driver and never kept: FAIL, user attr ``orphaned``. Returns the counts.
    """
    import optuna

    rdb = optuna.storages.get_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=rdb)
    study_id = rdb.get_study_id_from_name(study_name)
    by_number = {number: (error, history) for number, error, history in trials}
    told = {"errored": 0, "settled": 0, "orphaned": 0}
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        if frozen.number not in by_number:
            rdb.set_trial_user_attr(trial_id, "orphaned", True)
            study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            told["orphaned"] += 1
            continue
        error, history = by_number[frozen.number]
        if error:
            rdb.set_trial_user_attr(trial_id, "error", error[:1000])
            study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            told["errored"] += 1
            continue
        if len(metrics) == 1:  # Optuna keeps no intermediate values for multi-objective studies
            for result in history:
                value = result.get(metrics[0])
                if not result.get(M.DIVERGED_KEY) and value is not None and math.isfinite(value) \
                        and _step(result) not in frozen.intermediate_values:
                    rdb.set_trial_intermediate_value(trial_id, _step(result), float(value))
        state, values, attrs = outcome(history[-1] if history else None, max_epochs, metrics)
        for key, value in attrs.items():
            rdb.set_trial_user_attr(trial_id, key, value)
        study.tell(frozen.number, values, state=state)
        told["settled"] += 1
    return told
