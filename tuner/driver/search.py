"""The sweep's searcher: an Optuna RDB study behind Tune's Searcher API, telling apart finished, pruned and
failed trials, and ``settle_study``, which makes the study agree with Tune once a stage ends."""
from __future__ import annotations

import math
import pickle
import warnings
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple, Union

from ray.tune.search import Searcher

from tuner.core import metrics as M
from tuner.core.config import ConfigError

__all__ = ["StudySearch", "settle_study", "study_outcomes", "outcome"]


class StudySearch(Searcher):
    """A Tune searcher over an Optuna RDB study, through Optuna's public ask / tell and storage API.

    Each new Tune trial asks the study and runs the define-by-run ``space`` on the asked trial; its
    params come back labelled with the study trial's number (``optuna_trial``) and ``origin``. A trial
    counts as COMPLETE only when it ran all ``max_epochs``: one ASHA cut is PRUNED (Ray's OptunaSearch
    tells it COMPLETE with its low-fidelity value, which biases TPE), a diverged one FAIL; per-epoch
    values are the study's intermediate values, which Optuna's samplers read for pruned trials.

    A trial that errored stays RUNNING in the study: ``--resume`` re-runs errored trials (a full disk,
    a lost node) and they are told how they then end; ``settle_study`` tells FAIL for those still
    errored when the stage ends for good (an Optuna trial once finished can never be told again).

    It survives a driver restart. Tune restores it from its own snapshot file, which a driver killed
    mid-upload can leave older than the experiment state beside it, and both may be older than the
    RDB study. So trials the study already holds as finished are not told again, a restored Tune trial
    this snapshot never saw is found by the ``optuna_trial`` in its config, and the sampler is reseeded
    (its saved random state would draw the dead driver's last points again). Study trials the dead
    driver asked but Tune no longer holds are failed by ``settle_study`` once the stage ends.
    """

    def __init__(self, space: Callable[[Any], Optional[Dict[str, Any]]], metric: Union[str, List[str]],
                 mode: Union[str, List[str]], study_name: str, storage: Any, max_epochs: int,
                 sampler: Optional[Callable[[], Any]] = None,
                 points_to_evaluate: Optional[List[Dict[str, Any]]] = None,
                 origins: Optional[Dict[str, List[Dict[str, Any]]]] = None) -> None:
        """Args:
            space: the define-by-run function: called with an ``optuna.Trial``, it suggests the params
                (and may return fixed ones to add).
            metric, mode: the objective(s): one name and ``max``/``min``, or lists (multi-objective).
            study_name, storage: the RDB study (created if missing); ``storage`` an URL or an Optuna storage.
            max_epochs: the epochs a trial must run to count as COMPLETE.
            sampler: a picklable zero-argument function that builds the Optuna sampler (Tune pickles the
                searcher into tuner.pkl, and NSGA-II's sampler holds a lock); None: Optuna's default.
            points_to_evaluate: enqueued in the study as it is built (first of the sweep only).
            origins: label -> the points enqueued under it (``authors``, ``warm-start``); a trial whose
                params match one is labelled so in its config (``origin``), any other ``search``.
        """
        import optuna

        super().__init__(metric=metric, mode=mode)
        self._space = space
        self._study_name = study_name
        self._storage = optuna.storages.get_storage(storage) if isinstance(storage, str) else storage
        self._make_sampler = sampler
        self._sampler_obj: Any = None
        self._max_epochs = int(max_epochs)
        self._origins = {k: [dict(p) for p in v] for k, v in (origins or {}).items()}
        modes = mode if isinstance(mode, list) else [mode]
        study = optuna.create_study(storage=self._storage, sampler=self._sampler, study_name=study_name, load_if_exists=True,
                                    directions=["maximize" if m == "max" else "minimize" for m in modes])
        with warnings.catch_warnings():  # experimental since optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # the dashboard then shows "best_val_acc", not "Objective 0"
            study.set_metric_names(list(metric) if isinstance(metric, list) else [metric])
        for point in points_to_evaluate or []:
            study.enqueue_trial(point)
        self._study_obj: Any = study
        self._study_id = self._storage.get_study_id_from_name(study_name)  # fixed for the study's life
        self._numbers: Dict[str, int] = {}  # Tune trial id -> study trial number
        self._completed: Set[str] = set()  # Tune trial ids told to the study (or found told there)
        self._reported: Dict[str, Set[int]] = {}  # trial_id -> epochs already reported to the study
        self._reconciled = True

    # -- pickling: Tune pickles the searcher into tuner.pkl; the study is opened again from its storage
    def __getstate__(self) -> Dict[str, Any]:
        return {**self.__dict__, "_study_obj": None, "_sampler_obj": None}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        old = state.pop("_sampler", None)  # pickled by the first StudySearch: the (TPE) sampler itself
        self.__dict__.update({"_make_sampler": None, **state, "_sampler_obj": old})

    @property
    def _sampler(self) -> Any:
        if self._sampler_obj is None and self._make_sampler is not None:
            self._sampler_obj = self._make_sampler()
        return self._sampler_obj

    @property
    def _study(self) -> Any:
        if self._study_obj is None:
            import optuna

            self._study_obj = optuna.load_study(study_name=self._study_name, storage=self._storage,
                                                sampler=self._sampler)
        return self._study_obj

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"numbers": self._numbers, "completed": self._completed}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        if not isinstance(state, dict) or "numbers" not in state:
            raise ConfigError(f"resume: {checkpoint_path} holds the searcher state of an older srrl-tune "
                              "(Ray's OptunaSearch); resume this sweep with the srrl-tune that started it")
        self._numbers, self._completed = dict(state["numbers"]), set(state["completed"])
        # a snapshot older than the study holds the sampler's random state of draws already made: the
        # same seed would draw the dead driver's last points again (seen: one config run twice)
        self._study.sampler.reseed_rng()
        self._reconciled = False
        self._reported = {}  # the snapshot may be older than the study: read each trial's steps again

    # -- Tune's hooks ---------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> Optional[Dict]:
        if not self._reconciled:
            self._reconcile()
        trial = self._study.ask()
        fixed = self._space(trial) or {}  # runs the trial's suggest_* calls: trial.params holds them after
        params = {**trial.params, **fixed}
        self._numbers[trial_id] = trial.number
        return {**params, "origin": self._origin(params), "optuna_trial": trial.number}

    def on_trial_result(self, trial_id: str, result: Dict) -> None:
        if trial_id not in self._completed and self._number(trial_id, result) is not None:
            self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[Dict] = None, error: bool = False) -> None:
        number = None if trial_id in self._completed else self._number(trial_id, result)
        if number is None or error:
            return  # an errored trial is left RUNNING, see the class docstring
        if result:
            self._report(trial_id, result)  # Tune hands the last result (ASHA's max_t) only to this hook
            if trial_id in self._completed:
                return
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        state, values, attrs = outcome(result, self._max_epochs, metrics)
        for key, value in attrs.items():
            self._storage.set_trial_user_attr(self._storage_id(number), key, value)
        self._study.tell(number, values, state=state)
        self._completed.add(trial_id)
        self._reported.pop(trial_id, None)

    # -- internals --------------------------------------------------------------------------------------
    def _origin(self, params: Dict[str, Any]) -> str:
        for label, points in self._origins.items():
            if any(all(params.get(k) == v for k, v in p.items()) for p in points):
                return label
        return "search"

    def _storage_id(self, number: int) -> int:
        return self._storage.get_trial_id_from_study_id_trial_number(self._study_id, number)

    def _frozen(self, number: int) -> Any:
        """The study's current record of trial ``number`` (a storage read)."""
        return self._storage.get_trial(self._storage_id(number))

    def _reconcile(self) -> None:
        self._reconciled = True
        for trial_id, number in self._numbers.items():
            if self._frozen(number).state.is_finished():
                self._completed.add(trial_id)

    def _number(self, trial_id: str, result: Optional[Dict]) -> Optional[int]:
        """The study trial of Tune trial ``trial_id``: the one it was asked as, or (a trial restored from
        an experiment state newer than this searcher's snapshot) the one its config names; else None."""
        if not self._reconciled:
            self._reconcile()
        if trial_id not in self._numbers:
            number = (result or {}).get(CONFIG_NUMBER)
            if number is None:
                return None
            self._numbers[trial_id] = int(number)
        return self._numbers[trial_id]

    def _report(self, trial_id: str, result: Dict) -> None:
        if isinstance(self.metric, list) or result.get(M.DIVERGED_KEY):
            return  # Optuna keeps no intermediate values for multi-objective studies
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        number = self._numbers[trial_id]
        step = _step(result)
        steps = self._reported.get(trial_id)
        if steps is None:  # first result of this trial in this process: one storage read, not one per epoch
            frozen = self._frozen(number)
            if frozen.state.is_finished():
                self._completed.add(trial_id)  # recorded before a driver restart
                return
            steps = self._reported[trial_id] = set(frozen.intermediate_values)
        if step not in steps:  # Tune may hand the last result to both hooks
            self._storage.set_trial_intermediate_value(self._storage_id(number), step, float(value))
            steps.add(step)


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


def study_outcomes(results: Any) -> List[Tuple[int, Optional[str], List[Dict[str, Any]]]]:
    """``(optuna_trial, error line or None, results in order)`` of each Tune trial asked from the study."""
    out = []
    for r in results:
        if "optuna_trial" not in (r.config or {}):
            continue
        df = r.metrics_dataframe
        history = [] if df is None else [{k: v for k, v in row.items() if v == v} for row in df.to_dict("records")]
        out.append((int(r.config["optuna_trial"]), str(r.error).splitlines()[-1] if r.error else None, history))
    return out
