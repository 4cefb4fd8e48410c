"""The sweep's parent run on the driver, and the queries that find a sweep's runs again.

``start_sweep`` creates the experiment and the parent run before Ray starts any trial (concurrent
creation in a fresh SQLite store collides); a resumed sweep finds its parent and child runs again by
tag, so it never duplicates them. The calls after the trials skip a server that does not answer.
mlflow is imported inside the functions that need it.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

from tuner.core import metrics as M
from tuner.tracking.schema import (
    EXPERIMENT_KIND, MAX_PARAMS_PER_BATCH, MAX_TAG, NOTE, PARENT, RUN_NAME, TAG_RECOMMENDED, TAG_RESUMES, TAG_ROLE,
    TAG_SETTING_UP, TAG_STAGE, TAG_STATUS, TAG_SWEEP, TAG_TRIAL_ID, TAG_VERDICT, flatten, legal_key, number, runs_view_tag,
    text,
)
from tuner.tracking.uri import artifact_location, check_tracking_uri, probe_server
from tuner.core.uri import redact, sqlite_file

__all__ = [
    "store_lock", "client", "check_name", "sweep_parents", "find_parent", "start_sweep", "sweep_started",
    "finish_sweep", "mark_interrupted", "log_verdict", "log_artifacts_once", "search_all", "child_runs",
    "child_run_ids", "remove_orphan_runs", "experiment_id", "set_git_and_version_tags", "log_params", "log_report_artifacts",
]

log = logging.getLogger("tuner.tracking")  # the package's one logger, named as before it was split

_SWEEP_STATUSES = ("FINISHED", "FAILED", "KILLED")


def _skip_when_unreachable(default: Any) -> Any:
    """For the driver's calls after the trials: a server that does not answer /health (3 s) is a warning
    and ``default()`` is returned, instead of minutes of MLflow's own retries and then an exception."""
    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def inner(tracking_uri: str, *args: Any, **kwargs: Any) -> Any:
            if tracking_uri.startswith(("http://", "https://")):
                try:
                    probe_server(tracking_uri)
                except ConnectionError:
                    log.warning("MLflow at %s unreachable: %s skipped; once it is back, `python run_search.py --sync "
                                "SWEEP_FOLDER` fills in what is missing",
                                redact(tracking_uri), fn.__name__)
                    return default()
            return fn(tracking_uri, *args, **kwargs)
        return inner
    return wrap


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold a lock file beside an SQLite store (MLflow's or Optuna's) while it may be created: two sweeps
    started together in a fresh folder would otherwise both run its schema migrations and one crash."""
    path = sqlite_file(uri)
    if path is None:
        yield
        return
    from filelock import FileLock

    # a hidden file that stays: removing it would let a waiting process lock a file nobody else sees
    with FileLock(str(path.parent / f".{path.name}.lock"), timeout=120):
        yield


def _client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def check_name(field: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or re.search(r"['\"\\\n\r`]", value):
        raise ValueError(f"{field}: {value!r} must be a non-empty name without quotes, backslashes or newlines")
    return value


def client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` of the store."""
    return _client(tracking_uri)


def sweep_parents(client: Any, experiment_id: str) -> List[Any]:
    """Every sweep's parent run in the experiment, oldest first."""
    return list(search_all(client, [experiment_id], f"tags.`{TAG_ROLE}` = 'sweep'"))


def find_parent(client: Any, experiment_id: str, sweep_name: str) -> List[Any]:
    """The parent runs of sweep ``sweep_name`` (normally one), oldest first."""
    flt = f"tags.`{TAG_SWEEP}` = '{sweep_name}' and tags.`{TAG_ROLE}` = 'sweep'"
    return list(client.search_runs([experiment_id], filter_string=flt, max_results=10,
                                   order_by=["attributes.start_time ASC"]))


def start_sweep(tracking_uri: str, experiment: str, sweep_name: str, params: Mapping[str, Any],
                tags: Mapping[str, Any], resume: bool) -> str:
    """Create (or, with ``resume``, find again) the sweep's parent run; return its run id.

    Call on the driver before Ray starts trials. A new parent gets tags ``srrl.sweep``,
    ``srrl.role=sweep``, ``mlflow.runName`` (= ``sweep_name``) and ``tags``, and ``params`` flattened
    with '.' and stringified (values cut to MLflow's 6000 characters). ``resume`` reuses the existing
    parent (set back to RUNNING) and never creates a second one. A new parent is tagged
    ``srrl.setting_up`` until ``sweep_started``; a parent still so tagged is a start that failed
    before its sweep existed (a full disk): a fresh start of the same name replaces it.

    Raises:
        ValueError: resume without an existing sweep of that name, or a new sweep whose name is taken.
    """
    check_name("sweep_name", sweep_name)
    check_name("experiment", experiment)
    check_tracking_uri(tracking_uri, probe=False)
    with store_lock(tracking_uri):  # the client creates (migrates) a fresh store
        client = _client(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
    if exp is not None and exp.lifecycle_stage != "active":
        raise ValueError(f"experiment: {experiment!r} is deleted in {redact(tracking_uri)}; restore it "
                         "(mlflow experiments restore) or pick another name")
    if exp is None:
        if resume:
            raise ValueError(f"resume: no sweep named {sweep_name!r} in experiment {experiment!r} "
                             f"(the experiment does not exist in {redact(tracking_uri)})")
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri, experiment),
                                                     tags={**EXPERIMENT_KIND, **runs_view_tag()})
        except Exception:  # created meanwhile by someone else
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            experiment_id = exp.experiment_id
    else:
        experiment_id = exp.experiment_id
        for k, v in {**EXPERIMENT_KIND, **runs_view_tag()}.items():
            if k not in exp.tags:  # an experiment made by hand, or by an older version
                client.set_experiment_tag(experiment_id, k, v)
    found = find_parent(client, experiment_id, sweep_name)
    if resume:
        if not found:
            raise ValueError(f"resume: no sweep named {sweep_name!r} in experiment {experiment!r}; "
                             "drop --resume to start it")
        if len(found) > 1:
            log.warning("%d parent runs for sweep %r; resuming the oldest", len(found), sweep_name)
        run = found[0]
        count = int(run.data.tags.get(TAG_RESUMES, "0") or 0) + 1
        client.set_tag(run.info.run_id, TAG_RESUMES, str(count))
        for tag in ("srrl.interrupted", TAG_SETTING_UP):  # what no longer holds
            if tag in run.data.tags:
                client.delete_tag(run.info.run_id, tag)
        client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    for run in found:
        if TAG_SETTING_UP not in run.data.tags:
            raise ValueError(f"sweep_name: a sweep named {sweep_name!r} already exists in experiment "
                             f"{experiment!r}; pass --resume to continue it or pick another name")
        client.set_terminated(run.info.run_id, status="FAILED")  # it ran nothing: no trial starts before sweep_started
        client.delete_run(run.info.run_id)
    all_tags = {legal_key(k): text(v, MAX_TAG) for k, v in tags.items()}
    all_tags.update({TAG_SWEEP: sweep_name, TAG_ROLE: "sweep", RUN_NAME: sweep_name, TAG_SETTING_UP: "true"})
    run = client.create_run(experiment_id, tags=all_tags, run_name=sweep_name)
    log_params(client, run.info.run_id, flatten(params))
    return run.info.run_id


def sweep_started(tracking_uri: str, run_id: str) -> None:
    """The sweep's Tune state and sweep file exist: from now on its name is taken (see ``start_sweep``)."""
    _client(tracking_uri).delete_tag(run_id, TAG_SETTING_UP)


@_skip_when_unreachable(lambda: None)
def finish_sweep(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    """End the parent run with MLflow ``status`` (FINISHED, FAILED or KILLED)."""
    if status not in _SWEEP_STATUSES:
        raise ValueError(f"status: {status!r} is not allowed; choose from: {', '.join(_SWEEP_STATUSES)}")
    _client(tracking_uri).set_terminated(run_id, status=status)


@_skip_when_unreachable(lambda: None)
def mark_interrupted(tracking_uri: str, parent_run_id: str, trial_ids: Iterable[str]) -> None:
    """Child runs of trials an interrupted driver left half-done or never started: ``srrl.status =
    interrupted`` and KILLED (what they are until ``--resume`` sets them RUNNING again); the parent is
    tagged ``srrl.interrupted`` with how many.

    Any child still RUNNING counts too, whether or not Tune's results list its trial: a trial the stop
    caught before Tune saved its state has a run (the callback made it at the start) but no row.
    """
    client = _client(tracking_uri)
    wanted = set(trial_ids)
    exp = client.get_run(parent_run_id).info.experiment_id
    for run in child_runs(client, exp, parent_run_id):
        trial_id = run.data.tags.get(TAG_TRIAL_ID)
        if trial_id in wanted or run.info.status == "RUNNING":
            client.set_tag(run.info.run_id, TAG_STATUS, M.INTERRUPTED)
            client.set_terminated(run.info.run_id, status="KILLED")
            wanted.add(trial_id)
    client.set_tag(parent_run_id, "srrl.interrupted", str(len(wanted)))


@_skip_when_unreachable(lambda: None)
def log_verdict(tracking_uri: str, parent_run_id: str, verdict: Any, search_top: Optional[Mapping[str, Any]] = None) -> None:
    """Put a confirmation verdict (``tuner.core.verdict.Verdict``) on the sweep's parent run and its experiment,
    and mark the recommended child runs.

    The parent run: tag ``srrl.verdict`` (the sentence), tags ``srrl.recommended.<name>`` (its params), the
    metrics ``Verdict.summary_metrics`` names by role (``recommended_``, ``candidate_``, ``reference_``,
    ``ce_`` + ``<metric>_mean|ci_low|ci_high`` and ``_seeds``), the search's top trial as
    ``search_top_<metric>`` with ``search_top_seeds`` (the seeds behind its value), its text fields as tags
    ``srrl.search_top_<name>``, and ``verdict/verdict.json``. The verdict in Markdown is the run's
    description and the experiment's (what MLflow's experiment list shows; docs/tracking.md).
    """
    import json
    import tempfile

    from mlflow.entities import Metric, RunTag

    client = _client(tracking_uri)
    now = int(time.time() * 1000)
    parent = client.get_run(parent_run_id)
    note = text(verdict.markdown(f"Sweep {parent.info.run_name}"), MAX_TAG)
    tags = {TAG_VERDICT: text(verdict.sentence, MAX_TAG), NOTE: note}
    metrics = [Metric(k, v, now, 0) for k, v in verdict.summary_metrics().items()]
    rec = verdict.config(verdict.recommended)
    if rec is not None:
        tags.update({legal_key(f"srrl.recommended.{k}"): text(v, MAX_TAG) for k, v in rec.params.items()})
        tags["srrl.recommended"] = rec.label
    for k, v in (search_top or {}).items():
        value = number(v)
        if value is not None and math.isfinite(value):
            metrics.append(Metric(legal_key(f"search_top_{k}"), round(value, 2), now, 0))
        elif isinstance(v, str):
            tags[legal_key(f"srrl.search_top_{k}")] = text(v, MAX_TAG)
    client.log_batch(parent_run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
    client.set_experiment_tag(parent.info.experiment_id, NOTE, note)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "verdict.json"
        path.write_text(json.dumps(verdict.to_dict(), indent=2))
        client.log_artifact(parent_run_id, str(path), "verdict")
    for run in child_runs(client, parent.info.experiment_id, parent_run_id):
        tagged = run.data.tags.get(TAG_RECOMMENDED) == "true"
        wanted = run.data.tags.get(TAG_STAGE) == "confirm" and run.data.tags.get("srrl.config_id") == verdict.recommended
        if wanted != tagged:
            client.set_tag(run.info.run_id, TAG_RECOMMENDED, "true" if wanted else "false")


@_skip_when_unreachable(list)
def log_artifacts_once(tracking_uri: str, run_id: str, files: Mapping[str, Any]) -> List[str]:
    """Log local files to a run as ``{artifact_dir: local_path}``, skipping any already there (resume).

    Returns the artifact paths logged now.
    """
    client = _client(tracking_uri)
    logged = []
    for artifact_dir, local in files.items():
        name = Path(local).name
        existing = {Path(f.path).name for f in client.list_artifacts(run_id, artifact_dir)}
        if name not in existing:
            client.log_artifact(run_id, str(local), artifact_dir)
            logged.append(f"{artifact_dir}/{name}")
    return logged


def search_all(client: Any, experiment_ids: Sequence[str], filter_string: str) -> Iterator[Any]:
    """Every active run matching ``filter_string``, oldest first, one ``search_runs`` call per page of 1000."""
    token = None
    while True:
        page = client.search_runs(list(experiment_ids), filter_string=filter_string, max_results=1000,
                                  page_token=token, order_by=["attributes.start_time ASC"])
        yield from page
        token = page.token
        if not token:
            return


def child_runs(client: Any, experiment_id: str, parent_run_id: str, trial_id: Optional[str] = None) -> Iterator[Any]:
    """The parent's child runs, oldest first, or only those of ``trial_id``."""
    flt = f"tags.`{PARENT}` = '{parent_run_id}'"
    if trial_id is not None:
        flt += f" and tags.`{TAG_TRIAL_ID}` = '{trial_id}'"
    return search_all(client, [experiment_id], flt)


@_skip_when_unreachable(dict)
def child_run_ids(tracking_uri: str, parent_run_id: str) -> Dict[str, str]:
    """``{trial_id: run_id}`` of the parent's child runs."""
    client = _client(tracking_uri)
    exp = client.get_run(parent_run_id).info.experiment_id
    out: Dict[str, str] = {}
    for run in child_runs(client, exp, parent_run_id):
        if TAG_TRIAL_ID in run.data.tags:
            out.setdefault(run.data.tags[TAG_TRIAL_ID], run.info.run_id)  # oldest first: a trial's first run wins
    return out


@_skip_when_unreachable(int)
def remove_orphan_runs(tracking_uri: str, parent_run_id: str, trial_ids: Iterable[str]) -> int:
    """Delete child runs of trials Tune no longer knows; returns how many.

    A driver killed between starting a trial and Tune's next state snapshot leaves a child run for
    a trial that the restored sweep never heard of (it asks for a new one instead). Such a run is
    tagged ``srrl.status=orphaned``, terminated as KILLED and soft-deleted (``mlflow gc`` purges it).
    """
    client = _client(tracking_uri)
    parent = client.get_run(parent_run_id)
    keep = set(trial_ids)
    removed = 0
    for run in list(child_runs(client, parent.info.experiment_id, parent_run_id)):  # listed before deleting
        if run.data.tags.get(TAG_TRIAL_ID) not in keep:
            client.set_tag(run.info.run_id, TAG_STATUS, "orphaned")
            client.set_terminated(run.info.run_id, status="KILLED")
            client.delete_run(run.info.run_id)
            removed += 1
    return removed


def experiment_id(tracking_uri: str, experiment: str) -> str:
    """The id of the (active) experiment named ``experiment``; ValueError if there is none."""
    exp = _client(tracking_uri).get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage != "active":
        raise ValueError(f"experiment: no experiment named {experiment!r} in {redact(tracking_uri)}")
    return exp.experiment_id


def set_git_and_version_tags() -> Dict[str, str]:
    """Tags to record on the parent: ``srrl.version.<pkg>`` and ``mlflow.source.git.commit``; never raises.

    Returns the dict (pass it as ``tags`` to ``start_sweep``); nothing is sent to MLflow here.
    """
    from importlib import metadata
    import platform

    tags = {"srrl.version.python": platform.python_version()}
    for dist in ("ray", "torch", "optuna", "mlflow", "srrl-tune"):
        try:
            tags[f"srrl.version.{dist.replace('-', '_')}"] = metadata.version(dist)
        except Exception:
            pass
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip()
        if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", commit):
            tags["mlflow.source.git.commit"] = commit
    except Exception:
        pass
    return tags



def log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + MAX_PARAMS_PER_BATCH], synchronous=True)


def log_report_artifacts(tracking_uri: str, run_ids: Iterable[str], paths: Iterable[Union[str, Path]],
                         artifact_path: str = "report") -> List[str]:
    """Log local files to each run under ``artifact_path``, replacing the copies of the same names (so a report
    logged twice from the same records leaves the same artifacts); returns the run ids."""
    c = client(tracking_uri)
    paths = [str(p) for p in paths]
    done = []
    for run_id in run_ids:
        for path in paths:
            c.log_artifact(run_id, path, artifact_path)
        done.append(run_id)
    return done
