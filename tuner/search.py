"""Ray's OptunaSearch, corrected so the Optuna study tells apart finished, pruned and failed trials."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Set

from ray.tune.search.optuna import OptunaSearch

from tuner import metrics as M

__all__ = ["PruneAwareOptunaSearch", "fail_errored"]


class PruneAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that marks trials ASHA stopped early as PRUNED and diverged trials as FAIL.

    Ray's OptunaSearch tells Optuna every trial that ended without an error as COMPLETE with its
    last value, so a trial ASHA cut after one epoch enters TPE as a finished one with its
    low-fidelity accuracy, biasing the sampler. Here a trial counts as complete only when it ran
    all ``max_epochs``; per-epoch values are reported as intermediate values, which is what
    Optuna's samplers use for pruned trials.

    A trial that errored stays RUNNING in the study: ``--resume`` re-runs errored trials (a full disk,
    a lost node) and they are told how they then end; ``fail_errored`` tells FAIL for those still
    errored when the stage ends for good (an Optuna trial once finished can never be told again).

    It also survives a driver restart: Tune restores this searcher from a snapshot that may be
    older than the RDB study, so trials the study already holds as finished are not told again,
    and study trials left RUNNING by the dead driver (asked, never started) are marked FAIL.
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
        import optuna

        self._reconciled = True
        known = {t.number for t in self._ot_trials.values()}
        for trial_id, ot_trial in self._ot_trials.items():
            if self._frozen(ot_trial).state.is_finished():
                self._completed_trials.add(trial_id)
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.number not in known:  # asked by the killed driver, never run by Tune
                self._ot_study._storage.set_trial_user_attr(frozen._trial_id, "orphaned", True)
                self._ot_study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)

    @staticmethod
    def _frozen(ot_trial: Any) -> Any:
        """The study's current record of ``ot_trial`` (a storage read)."""
        return ot_trial.storage.get_trial(ot_trial._trial_id)

    def _report(self, trial_id: str, result: Dict) -> None:
        if isinstance(self.metric, list) or result.get("diverged"):
            return  # Optuna keeps no intermediate values for multi-objective studies
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        ot_trial = self._ot_trials[trial_id]
        step = int(result.get(M.EPOCH, result.get("training_iteration", 0)))
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
        if trial_id not in self._completed_trials and trial_id in self._ot_trials:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        import optuna

        ot_trial = self._ot_trials[trial_id]
        if error:
            return  # left RUNNING, see the class docstring
        if result:
            self._report(trial_id, result)  # Tune hands the last result (ASHA's max_t) only to this hook
            if trial_id in self._completed_trials:
                return
        epoch = int((result or {}).get(M.EPOCH, 0))
        state, values = optuna.trial.TrialState.COMPLETE, None
        if not result:
            state = optuna.trial.TrialState.FAIL
        elif result.get("diverged"):
            state = optuna.trial.TrialState.FAIL
            ot_trial.set_user_attr("diverged_epoch", epoch)
        elif epoch < self._max_epochs:
            state = optuna.trial.TrialState.PRUNED
            ot_trial.set_user_attr("stopped_at_epoch", epoch)
        else:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [result.get(m) for m in metrics]
            if any(v is None or not math.isfinite(v) for v in values):
                state, values = optuna.trial.TrialState.FAIL, None
            elif not isinstance(self.metric, list):
                values = values[0]
        self._ot_study.tell(ot_trial, values, state=state)
        self._completed_trials.add(trial_id)
        self._reported.pop(trial_id, None)


def fail_errored(storage: str, study_name: str, errors: Dict[int, str]) -> int:
    """Tell FAIL for the study trials (``{number: error line}``) of Tune trials that ended errored, where the
    study still has them RUNNING; returns how many. Called once a stage ended without interruption."""
    import optuna

    rdb = optuna.storages.get_storage(storage)
    study = optuna.load_study(study_name=study_name, storage=rdb)
    study_id = rdb.get_study_id_from_name(study_name)
    told = 0
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if frozen.number in errors:
            trial_id = rdb.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            rdb.set_trial_user_attr(trial_id, "error", errors[frozen.number][:1000])
            study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)
            told += 1
    return told
