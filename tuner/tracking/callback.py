"""The Tune callback that gives every trial of a sweep a nested MLflow child run under the sweep's parent.

Driver-side only: ``MLflowTracking`` logs a trial's per-epoch metrics (held up to a second and sent as
one ``log_batch`` per trial) and tags how the trial ended. It subclasses ``ray.tune.Callback``, so this
module imports ray; the rest of ``tuner.tracking`` does not.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ray.tune import Callback

from tuner.core import faults, metrics as M
from tuner.core.config import planned_epochs, trial_params
from tuner.tracking.runs import child_runs, client, log_params
from tuner.tracking.schema import (
    DIVERGED_KEY, MAX_METRICS_PER_BATCH, METRIC_KEYS, MLFLOW_END, RUN_NAME, STAGES, TAG_NONFINITE, TAG_NUM_FAILURES,
    TAG_ERROR, TAG_STATUS, TAG_TRIAL_ID, end_tags, error_summary, flatten, legal_key, result_metrics, result_step,
    trial_tags,
)
from tuner.tracking.uri import check_tracking_uri, fail_fast_http, retryable
from tuner.core.uri import redact

__all__ = ["MLflowTracking"]

log = logging.getLogger("tuner.tracking")  # the package's one logger, named as before it was split

# An op is a plain tuple (kind, trial_id, payload) so the buffer pickles with the callback:
#   ("start", tid, None)                         create the child run or set it back to RUNNING
#   ("log", tid, (metrics, tags))                metrics = [(key, value, ms, step)], tags = {k: v}
#   ("end", tid, (tags, mlflow_status))          final tags, then set_terminated
Op = Tuple[str, str, Any]


class MLflowTracking(Callback):
    """Ray Tune callback (driver side): a nested MLflow child run per trial under the sweep's parent.

    Per result: the numeric ``metric_keys`` at ``step = result["epoch"]``, merged with the trial's
    other held results into one ``log_batch`` (sent after ``flush_interval_s`` or at the trial's end)
    (``training_iteration`` when absent); NaN/inf are not logged but tagged ``srrl.nonfinite.<key>``
    with the epoch. At the end: ``srrl.status`` in ``TRIAL_STATUSES`` (+ ``srrl.stopped_at_epoch``,
    ``srrl.diverged_epoch`` or ``srrl.error``), run status FINISHED or FAILED. Picklable: the client
    is dropped and child runs are found again by tag after resume. MLflow outages are retried with
    backoff, then buffered in memory and flushed on the next successful call and at experiment end.
    """

    def __init__(self, tracking_uri: str, experiment_id: Optional[str], parent_run_id: str, epochs: int,
                 metric_keys: Optional[Sequence[str]] = None,
                 retry_delays: Sequence[float] = (0.5, 1.0, 2.0),
                 base_params: Optional[Mapping[str, Any]] = None,
                 flush_interval_s: float = 1.0, stage: str = "search", name_keys: Sequence[str] = (),
                 optuna_storage: Optional[str] = None, study_name: Optional[str] = None) -> None:
        """Args:
            tracking_uri: where the parent run lives (checked for form, not reached, here).
            experiment_id: the parent's experiment; None looks it up from the parent run.
            parent_run_id: what ``start_sweep`` returned.
            epochs: planned epochs per trial (a trial's ``config["epochs"]`` wins when present).
            metric_keys: result keys logged as metrics; default ``metrics.PER_EPOCH + metrics.PER_TRIAL``.
            retry_delays: seconds to wait before each retry of a failed MLflow request; once they are
                spent, requests are buffered and sent with the next one that succeeds.
            base_params: the sweep's base TrialConfig as a dict: a trial's params are these
                overridden by its sampled config, so every TrialConfig field is on every child run.
            flush_interval_s: per-epoch metrics are held at most this long and sent as one request
                per trial (each request to a SQLite store costs ~20 ms of the driver's loop, which
                every trial's ``tune.report`` waits on); a trial's start and end are sent at once.
            stage: ``srrl.stage`` of the child runs (``search`` or ``confirm``).
            name_keys: the searched params that name a run (``a=8.12 b=8.27``).
            optuna_storage, study_name: the Optuna study: the study trial named by a trial's
                ``optuna_trial`` label gets user attributes ``mlflow_run_id`` and ``tune_trial_id``.
        """
        if stage not in STAGES:
            raise ValueError(f"stage: {stage!r} is not one of {', '.join(STAGES)}")
        check_tracking_uri(tracking_uri, probe=False)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs: {epochs!r} must be an integer >= 1")
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.epochs = epochs
        self.metric_keys = tuple(metric_keys) if metric_keys is not None else METRIC_KEYS
        self.retry_delays = tuple(retry_delays)
        self.base_params = dict(base_params or {})
        self.stage = stage
        self.name_keys = tuple(name_keys)
        self.optuna_storage = optuna_storage
        self.study_name = study_name
        self._optuna: Any = None  # the study's storage, opened on first use
        self._runs: Dict[str, str] = {}  # trial_id -> child run id
        self._tags: Dict[str, Dict[str, str]] = {}  # tags of trials whose run may not exist yet
        self._once: Dict[str, set] = {}  # trial_id -> PER_TRIAL keys already logged (they are logged once)
        self._configs: Dict[str, Dict[str, str]] = {}  # flattened params of trials whose run may not exist yet
        self._fresh: set = set()  # trial ids whose run was created but whose params are not logged yet
        self._last: Dict[str, Tuple[int, bool]] = {}  # trial_id -> (last epoch, diverged)
        self._nonfinite: set = set()  # (trial_id, key) already tagged
        self.flush_interval_s = float(flush_interval_s)
        self._pending: List[Op] = []
        self._last_flush = 0.0  # time.monotonic() of the last send
        self._down = False  # the last send failed: MLflow is unreachable, ops wait in _pending
        self._client_obj: Any = None
        self._client_uri: Optional[str] = None  # the tracking_uri _client_obj talks to
        self._synced = False  # children of the parent listed from MLflow in this process

    # -- pickling: Tune pickles callbacks with the experiment state --------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        state = self.__dict__.copy()
        state["_client_obj"] = state["_optuna"] = None
        state["_synced"] = False  # the map may be stale: re-list the children from MLflow after resume
        state["_last_flush"], state["_down"] = 0.0, False  # a monotonic time means nothing in another process
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        defaults = {"stage": "search", "name_keys": (), "optuna_storage": None, "study_name": None, "_optuna": None}
        self.__dict__.update({**defaults, "_tags": {}, "_once": {}, **state})  # pickled by an older version

    #: what Tune snapshots with the trials' checkpoints, in the same call: the ops not yet sent go with
    #: them, so a driver killed before its next flush loses no epoch (the restored trials re-run only the
    #: epochs after their snapshot's checkpoint, and re-sending an op MLflow already has changes nothing)
    _STATE = ("_runs", "_pending", "_configs", "_tags", "_once", "_fresh", "_last", "_nonfinite")

    def get_state(self) -> Optional[Dict]:
        import copy

        # Tune writes this state to its own file, beside the experiment state of the same snapshot; a
        # driver killed mid-upload can restore an older one. What the trials reported up to this
        # snapshot is sent first, so only ops held while MLflow is down (or the disk full) depend on it.
        if self._pending and not self._down and faults.stopped() is None:
            self._flush(retry=False)
        return {name.lstrip("_"): copy.deepcopy(getattr(self, name)) for name in self._STATE}

    def set_state(self, state: Dict) -> None:
        for name in self._STATE:
            if name.lstrip("_") in state:
                value = state[name.lstrip("_")]
                if isinstance(value, dict):
                    getattr(self, name).update(value)
                elif isinstance(value, set):
                    getattr(self, name).update(value)
                else:  # the pending ops, in order, ahead of any queued since
                    self._pending[:0] = value
        self._synced = False

    # -- Tune hooks --------------------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        config = getattr(trial, "config", None) or {}
        self._configs[trial.trial_id] = flatten(trial_params(self.base_params, config))
        self._tags[trial.trial_id] = trial_tags(self.parent_run_id, trial.trial_id, config, self.name_keys, self.stage)
        self._submit(("start", trial.trial_id, None))

    def on_trial_result(self, iteration: int, trials: List[Any], trial: Any, result: Dict, **info: Any) -> None:
        tid = trial.trial_id
        step, ms, finite, nonfinite = result_metrics(result, self.metric_keys)
        once = self._once.setdefault(tid, set())
        finite = {k: v for k, v in finite.items() if k not in M.PER_TRIAL or k not in once}
        once.update(k for k in finite if k in M.PER_TRIAL)
        metrics = [(legal_key(key), value, ms, step) for key, value in finite.items()]
        tags = {}
        for key in nonfinite:
            if (tid, key) not in self._nonfinite:
                self._nonfinite.add((tid, key))
                tags[legal_key(TAG_NONFINITE + key)] = str(step)
        self._last[tid] = (step, bool(result.get(DIVERGED_KEY)))
        if metrics or tags:
            self._submit(("log", tid, (metrics, tags)))

    def on_trial_complete(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        epoch, diverged = self._last_of(trial)
        status = M.trial_status(False, diverged, epoch, planned_epochs(getattr(trial, "config", None), self.epochs), ended=True)
        self._end(trial, status, end_tags(status, epoch))

    def on_trial_error(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        epoch, _ = self._last_of(trial)
        line = faults.stall_of(trial.trial_id) or self._error_line(trial)  # stopped for no result: tuner/driver/stalls.py
        status = M.STALLED if M.is_stall(line) else M.ERRORED
        self._end(trial, status, end_tags(status, epoch, line))

    def on_trial_recover(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        """The trial failed and Tune will restart it (FailureConfig): count it; the run stays open."""
        failures = getattr(trial, "num_failures", None)
        if failures is not None:
            self._submit(("log", trial.trial_id, ([], {TAG_NUM_FAILURES: str(failures)})))

    def on_step_end(self, iteration: int, trials: List[Any], **info: Any) -> None:
        """Send held metrics once they are ``flush_interval_s`` old (Tune calls this every loop step)."""
        if self._pending and self._due():
            self._flush(retry=not self._down)

    def on_experiment_end(self, trials: List[Any], **info: Any) -> None:
        if faults.stopped() is not None:  # a full disk: no retries; Tune saved the held ops with its state
            if self._pending:
                log.warning("%d tracking requests wait in Tune's saved state; --resume sends them", len(self._pending))
            return
        self._flush(retry=True)
        if self._pending:
            log.warning("MLflow at %s unreachable: %d tracking requests are lost; once it is back, "
                        "`python run_search.py --sync FOLDER --experiment NAME` backfills them from "
                        "Tune's result files", redact(self.tracking_uri), len(self._pending))

    # -- internals ---------------------------------------------------------------------------------
    def _last_of(self, trial: Any) -> Tuple[int, bool]:
        """The trial's last epoch and whether it diverged: the later of what this callback saw and Tune's
        ``last_result``. Each can lag after a kill: Tune writes the callback's state and the experiment
        state to separate files, and a trial restored at its final checkpoint reports nothing again."""
        last = getattr(trial, "last_result", None) or {}
        tune_last = (result_step(last), bool(last.get(DIVERGED_KEY))) if last else (0, False)
        return max(self._last.get(trial.trial_id, (0, False)), tune_last, key=lambda e: e[0])

    @staticmethod
    def _error_line(trial: Any) -> str:
        path = getattr(trial, "error_file", None)
        if path:
            try:
                return error_summary(Path(path).read_text(errors="replace"))
            except OSError:
                pass
        try:
            err = trial.get_error()  # Ray 2.60: the error file's text, read through the trial's storage
        except Exception:
            err = None
        return error_summary(str(err)) if err else "unknown error (no error file)"

    def _end(self, trial: Any, status: str, tags: Dict[str, str]) -> None:
        tags[TAG_STATUS] = status
        self._submit(("end", trial.trial_id, (tags, MLFLOW_END[status])))

    @property
    def run_ids(self) -> Dict[str, str]:
        """Trial id -> its MLflow run id, for the runs this callback made or found."""
        return dict(self._runs)

    @property
    def held(self) -> List[Tuple[str, str, List[int]]]:
        """The requests not sent yet (not due, or MLflow down): ``(kind, trial_id, epochs it carries)`` each,
        oldest first; they travel in ``get_state`` and Tune's pickle of the callback."""
        return [(kind, tid, sorted({m[3] for m in payload[0]}) if kind == "log" else [])
                for kind, tid, payload in self._pending]

    @property
    def _client(self) -> Any:
        if self._client_obj is None or self._client_uri != self.tracking_uri:  # tracking_uri may be re-pointed
            self._client_obj, self._client_uri = client(self.tracking_uri), self.tracking_uri
        return self._client_obj

    def _submit(self, op: Op) -> None:
        self._enqueue(op)
        if op[0] == "log" and not self._due():
            return  # held: sent with the next due flush, or before this trial's end
        self._flush(retry=not self._down)  # while MLflow is down: one try, no waiting

    def _due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_interval_s

    def _enqueue(self, op: Op) -> None:
        """Append ``op``, or merge a "log" op into the trial's held one (one request per trial per flush)."""
        kind, tid, payload = op
        if kind == "log":
            held = next((p for p in reversed(self._pending) if p[1] == tid), None)
            if held is not None and held[0] == "log":  # nothing of this trial queued after it: order kept
                held[2][0].extend(payload[0])
                held[2][1].update(payload[1])
                return
            op = (kind, tid, (list(payload[0]), dict(payload[1])))  # our own copy: merges mutate it
        self._pending.append(op)

    def _flush(self, retry: bool) -> None:
        """Send buffered ops in order; stop at the first that still fails (it and the rest stay buffered)."""
        self._last_flush = time.monotonic()
        self._down = False
        while self._pending:
            op = self._pending[0]
            delays = self.retry_delays if retry else ()
            for attempt in range(len(delays) + 1):
                try:
                    with fail_fast_http(self.tracking_uri):
                        self._execute(op)
                    break
                except Exception as e:  # noqa: BLE001 - tracking must never crash the sweep
                    if faults.is_no_space(e):  # kept for --resume, and the sweep stops: every trial would add to it
                        self._down = True
                        faults.stop_sweep(faults.no_space(e, faults.places_of(None, self.tracking_uri, None),
                                                          "tracking_uri"))
                        return
                    if not retryable(e):
                        log.warning("MLflow rejected %s for trial %s; dropped: %s", op[0], op[1], redact(str(e)))
                        break
                    if attempt == len(delays):
                        self._down = True
                        log.warning("MLflow at %s unreachable (%s); %d tracking requests buffered",
                                    redact(self.tracking_uri), redact(str(e)).splitlines()[0][:200],
                                    len(self._pending))
                        return
                    time.sleep(delays[attempt])
            self._pending.pop(0)

    def _lookup(self, tid: str) -> Optional[str]:
        """The trial's child run: all children are listed once per process, then a new trial is looked
        up alone (``analysis sync`` may have created its run meanwhile) before one is created."""
        if tid in self._runs:
            return self._runs[tid]
        if self.experiment_id is None:
            self.experiment_id = self._client.get_run(self.parent_run_id).info.experiment_id
        for run in child_runs(self._client, self.experiment_id, self.parent_run_id, tid if self._synced else None):
            t = run.data.tags.get(TAG_TRIAL_ID)
            if t and t not in self._runs:  # oldest first: a trial's first run wins
                self._runs[t] = run.info.run_id
        self._synced = True
        return self._runs.get(tid)

    def _execute(self, op: Op) -> None:
        from mlflow.entities import Metric, RunTag

        kind, tid, payload = op
        run_id = self._lookup(tid)
        created = False
        if run_id is None:
            tags = self._tags.get(tid) or trial_tags(self.parent_run_id, tid, stage=self.stage)
            run = self._client.create_run(self.experiment_id, tags=tags, run_name=tags[RUN_NAME])
            run_id = self._runs[tid] = run.info.run_id
            self._fresh.add(tid)
            created = True
            self._link_optuna(tags.get("srrl.optuna_trial"), run_id, tid)
        if tid in self._fresh:
            try:
                log_params(self._client, run_id, self._configs.get(tid, {}))
            except Exception as e:  # noqa: BLE001
                if retryable(e):
                    raise
                log.warning("MLflow rejected the params of trial %s: %s", tid, redact(str(e)))
            self._fresh.discard(tid)
        if kind == "start":
            if not created:  # a resumed or restarted trial: same run, running again
                if not self._client.get_run(run_id).data.params:  # its driver was killed between creating it
                    log_params(self._client, run_id, self._configs.get(tid, {}))  # and logging its params
                self._client.update_run(run_id, status="RUNNING")
                for tag in (TAG_STATUS, TAG_ERROR):  # how it ended before no longer holds; absent on most runs
                    with contextlib.suppress(Exception):
                        self._client.delete_tag(run_id, tag)
        elif kind == "log":
            metrics, tags = payload
            tag_list = [RunTag(k, v) for k, v in tags.items()]
            for i in range(0, max(len(metrics), 1), MAX_METRICS_PER_BATCH):  # a long outage's backlog: several requests
                self._client.log_batch(run_id, metrics=[Metric(*m) for m in metrics[i:i + MAX_METRICS_PER_BATCH]],
                                       tags=tag_list if i == 0 else [], synchronous=True)
        elif kind == "end":
            tags, status = payload
            self._client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
            self._client.set_terminated(run_id, status=status)
            for store in (self._configs, self._last, self._tags, self._once):
                store.pop(tid, None)

    def _link_optuna(self, number: Optional[str], run_id: str, tid: str) -> None:
        """The Optuna trial ``number`` (still running: it is told when Tune ends it) gets the run's id."""
        if number is None or not self.optuna_storage or not self.study_name:
            return
        try:
            import optuna

            if self._optuna is None:
                self._optuna = optuna.storages.get_storage(self.optuna_storage)
            storage = self._optuna
            study_id = storage.get_study_id_from_name(self.study_name)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
            storage.set_trial_user_attr(trial_id, "mlflow_run_id", run_id)
            storage.set_trial_user_attr(trial_id, "tune_trial_id", tid)
        except Exception as e:  # noqa: BLE001 - a missing link must not stop the sweep
            log.warning("could not link Optuna trial %s to MLflow run %s: %s", number, run_id, str(e).splitlines()[0][:200])
