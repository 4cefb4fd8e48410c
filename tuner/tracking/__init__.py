"""The MLflow side of a sweep: one parent run per sweep, one child run per trial, idempotent on resume.

Driver-side only. ``start_sweep`` creates the experiment and the parent run before Ray starts any
trial; ``tuner.tracking.callback.MLflowTracking`` is a Tune callback that gives every trial a nested
child run, logs its per-epoch metrics and tags how the trial ended. A resumed sweep finds its runs
again by tag, so it never duplicates them.

- ``schema``: the record: tag names, trial statuses, MLflow's limits, how results become metrics and tags.
- ``uri``: the store's URI: its default, its check, how a server is reached.
- ``runs``: the parent run's life and the queries that find a sweep's runs.
- ``callback``: ``MLflowTracking`` (imports ray; not re-exported here).

Neither ray nor mlflow is imported here, so ``default_tracking_uri`` and ``check_tracking_uri`` stay cheap.
"""
from __future__ import annotations

from tuner.tracking.runs import (
    child_run_ids, child_runs, client, experiment_id, find_parent, finish_sweep, log_artifacts_once, log_verdict,
    mark_interrupted, remove_orphan_runs, search_all, set_git_and_version_tags, start_sweep, store_lock,
    sweep_parents, sweep_started,
)
from tuner.tracking.schema import (
    DIVERGED_KEY, METRIC_KEYS, STAGES, TAG_DIVERGED_EPOCH, TAG_ERROR, TAG_LAST_EPOCH, TAG_RECOMMENDED, TAG_ROLE,
    TAG_STAGE, TAG_STATUS, TAG_STOPPED_AT, TAG_SWEEP, TAG_TRIAL_ID, TAG_VERDICT, TRIAL_STATUSES, result_metrics,
    result_step, run_name, trial_tags,
)
from tuner.tracking.uri import check_tracking_uri, default_tracking_uri

__all__ = [
    "default_tracking_uri", "check_tracking_uri", "start_sweep", "sweep_started", "finish_sweep", "remove_orphan_runs", "experiment_id",
    "log_artifacts_once", "child_run_ids", "child_runs", "find_parent", "search_all", "trial_tags", "result_step",
    "result_metrics",
    "set_git_and_version_tags", "TAG_SWEEP", "TAG_ROLE", "TAG_TRIAL_ID", "TAG_STATUS", "TAG_STOPPED_AT",
    "TAG_DIVERGED_EPOCH", "TAG_ERROR", "TAG_LAST_EPOCH", "TRIAL_STATUSES", "DIVERGED_KEY", "METRIC_KEYS",
    "TAG_STAGE", "TAG_RECOMMENDED", "TAG_VERDICT", "STAGES", "run_name", "log_verdict", "client",
    "sweep_parents", "store_lock", "mark_interrupted",
]
