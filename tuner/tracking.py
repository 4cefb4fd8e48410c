"""The MLflow side of a sweep: one parent run per sweep, one child run per trial, idempotent on resume.

Driver-side only. ``start_sweep`` creates the experiment and the parent run before Ray starts any
trial (concurrent creation in a fresh SQLite store collides); ``MLflowTracking`` is a Tune callback
that gives every trial a nested child run, logs its per-epoch metrics (held up to a second and sent
as one ``log_batch`` per trial) and tags how the trial ended. A resumed sweep finds its runs again by tag, so it never duplicates them.

mlflow is imported inside the functions that need it and ray only when ``MLflowTracking`` is first
looked up, so ``default_tracking_uri`` and ``check_tracking_uri`` stay cheap.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import logging
import math
import numbers
import os
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from tuner import faults, metrics as M
from tuner.config import LABEL_KEYS
from tuner.uri import redact, sqlite_file

__all__ = [
    "default_tracking_uri", "check_tracking_uri", "start_sweep", "sweep_started", "finish_sweep", "remove_orphan_runs", "experiment_id",
    "log_artifacts_once", "child_run_ids", "child_runs", "find_parent", "search_all", "trial_tags", "result_step",
    "result_metrics", "redact", "MLflowTracking",
    "set_git_and_version_tags", "TAG_SWEEP", "TAG_ROLE", "TAG_TRIAL_ID", "TAG_STATUS", "TAG_STOPPED_AT",
    "TAG_DIVERGED_EPOCH", "TAG_ERROR", "TAG_LAST_EPOCH", "TRIAL_STATUSES", "DIVERGED_KEY", "METRIC_KEYS",
    "TAG_STAGE", "TAG_RECOMMENDED", "TAG_VERDICT", "STAGES", "run_name", "log_verdict", "client",
    "sweep_parents", "store_lock", "mark_interrupted",
]

log = logging.getLogger(__name__)

TAG_SWEEP = "srrl.sweep"
TAG_ROLE = "srrl.role"  # "sweep" (parent) or "trial" (child)
TAG_TRIAL_ID = "srrl.trial_id"
TAG_STATUS = "srrl.status"  # one of TRIAL_STATUSES, set when a trial ends
TAG_STOPPED_AT = "srrl.stopped_at_epoch"
TAG_DIVERGED_EPOCH = "srrl.diverged_epoch"
TAG_ERROR = "srrl.error"
TAG_LAST_EPOCH = "srrl.last_epoch"
TAG_NONFINITE = "srrl.nonfinite."  # + metric name -> first epoch it was NaN/inf (the value is not logged)
TAG_NUM_FAILURES = "srrl.num_failures"
TAG_RESUMES = "srrl.resume_count"
TAG_STAGE = "srrl.stage"  # "search" or "confirm" (child runs)
TAG_RECOMMENDED = "srrl.recommended"  # "true" on the runs of the confirmed recommendation
TAG_VERDICT = "srrl.verdict"  # the verdict's sentence (parent run)
TAG_SETTING_UP = "srrl.setting_up"  # on a new parent run until its sweep's Tune state and sweep file exist
STAGES = ("search", "confirm")
#: MLflow 3 opens an experiment by its kind; without it the GenAI overview (traces) opens, not the runs
_EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
TRIAL_STATUSES = ("finished", "stopped_early", "diverged", "errored", "interrupted")
#: result key a trainable sets (truthy) when training diverged; not a metric, so it lives here
DIVERGED_KEY = "diverged"
#: the result keys logged as metrics unless a callback is given others
METRIC_KEYS = tuple(M.PER_EPOCH + M.PER_TRIAL)

_PARENT = "mlflow.parentRunId"
_RUN_NAME = "mlflow.runName"
_MLFLOW_END = {"finished": "FINISHED", "stopped_early": "FINISHED", "diverged": "FAILED", "errored": "FAILED"}
_SWEEP_STATUSES = ("FINISHED", "FAILED", "KILLED")
MAX_PARAMS_PER_BATCH = 100  # MLflow: at most 100 params + tags per log_batch
MAX_METRICS_PER_BATCH = 1000  # MLflow: at most 1000 metrics per log_batch
_MAX_PARAM = 6000  # MLflow: longest param value
_MAX_TAG = 8000
_MAX_KEY = 250
_DB_SCHEMES = ("postgresql", "mysql", "mssql")
# MLflow rejected the request itself: retrying or buffering it cannot help
_NOT_RETRYABLE = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                  "BAD_REQUEST", "INVALID_STATE"}


# ---- tracking URI ---------------------------------------------------------------------------------
def default_tracking_uri(workdir: str = ".") -> str:
    """``sqlite:///<absolute workdir>/mlflow.db`` (MLflow 3 needs a database; an absolute path survives cwd changes)."""
    return f"sqlite:///{(Path(workdir).expanduser().resolve() / 'mlflow.db').as_posix()}"


def artifact_location(tracking_uri: str, experiment: str) -> Optional[str]:
    """Where a new experiment of an SQLite store keeps its artifacts: ``mlruns/<experiment>`` beside the
    database, not MLflow's default ``./mlruns`` of whatever folder the driver runs in (a Ray job's is a
    temporary copy); None (the server's choice) for other stores."""
    path = sqlite_file(tracking_uri)
    if path is None:
        return None
    return str(Path(path).parent / "mlruns" / re.sub(r"[^A-Za-z0-9._-]", "_", experiment))


_redact = redact


def check_tracking_uri(uri: str, probe: bool = True) -> None:
    """Raise a one-line ``ValueError`` naming ``tracking_uri`` if ``uri`` is not a usable MLflow 3 store.

    Accepted: ``sqlite:///rel.db`` / ``sqlite:////abs/path.db`` (its folder must exist),
    ``http(s)://host[:port][/prefix]``, ``postgresql[+driver]://...``, ``mysql[+driver]://...``,
    ``databricks[://profile]``. For http(s) and ``probe=True``, ``<uri>/health`` must answer within
    3 s, else ``ConnectionError``. No message ever contains the URI's ``user:password@``.
    """
    shown = _redact(uri) if isinstance(uri, str) else repr(uri)
    allowed = ("allowed: sqlite:///path/to/mlflow.db, http(s)://host:port, postgresql://..., "
               "mysql://..., databricks")
    if not isinstance(uri, str) or not uri.strip() or uri != uri.strip():
        raise ValueError(f"tracking_uri: {shown!r} is not a tracking URI; {allowed}")
    if uri == "databricks":
        return
    scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][\w+.-]*:", uri) else ""
    if scheme == "file" or not scheme or (len(scheme) == 1 and os.name == "nt"):
        raise ValueError(f"tracking_uri: {shown!r} is a file store, which MLflow 3 refuses; it needs a "
                         f"database: use {default_tracking_uri()} (or a server)")
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri in ("sqlite:///", "sqlite:///:memory:"):
            raise ValueError(f"tracking_uri: {shown!r} names no database file; use sqlite:///<path>/mlflow.db")
        path = sqlite_file(uri)
        if not path.parent.is_dir():
            raise ValueError(f"tracking_uri: folder {path.parent.as_posix()!r} of {shown!r} does not exist")
        if path.is_file():
            _check_sqlite(path, shown)
        return
    if scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        try:
            parts.port  # raises ValueError on a non-numeric or out-of-range port
        except ValueError:
            raise ValueError(f"tracking_uri: {shown!r} has a bad port; expected {scheme}://host[:port]") from None
        if not parts.hostname:
            raise ValueError(f"tracking_uri: {shown!r} has no host; expected {scheme}://host[:port]")
        if probe:
            _probe_server(uri)
        return
    if scheme.split("+", 1)[0] in _DB_SCHEMES:
        if not re.match(r"^[\w+]+://[^/]+", uri):
            raise ValueError(f"tracking_uri: {shown!r} has no host; expected {scheme}://user@host/db")
        return
    if scheme == "databricks" and uri.startswith("databricks://"):
        return
    raise ValueError(f"tracking_uri: scheme {scheme!r} of {shown!r} is not supported; {allowed}")


def _check_sqlite(path: Path, shown: str) -> None:
    """An existing SQLite store must open as a database and read its schema (a copy cut short, a full disk's
    torn write fail here). Not ``PRAGMA quick_check``: that reads every page, ~10 s for a 1 GB store."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        if "locked" in str(e) or "readonly" in str(e):
            # another sweep is writing it (busy), or a killed writer left a hot journal that only a
            # writable connection rolls back (MLflow's own, next): not broken either way
            return
        raise ValueError(f"tracking_uri: {shown!r} is not a readable MLflow store ({str(e)[:120]}); restore "
                         "it from a copy, or give --tracking-uri a new file") from None


def _probe_server(uri: str, timeout: float = 3.0) -> None:
    """GET ``<uri>/health``; any HTTP answer counts as reachable (auth or a proxy may answer 401/404)."""
    parts = urllib.parse.urlsplit(uri)
    clean = _redact(uri).rstrip("/")
    request = urllib.request.Request(clean + "/health")
    if parts.username is not None:  # urllib does not take user:password from the URL itself
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConnectionError(
            f"tracking_uri: cannot reach MLflow server at {clean} ({_redact(str(reason))}); "
            "start one with `mlflow server --backend-store-uri sqlite:///mlflow.db` or fix the address"
        ) from None


# ---- sweep (parent run), on the driver ------------------------------------------------------------
def _skip_when_unreachable(default: Any) -> Any:
    """For the driver's calls after the trials: a server that does not answer /health (3 s) is a warning
    and ``default()`` is returned, instead of minutes of MLflow's own retries and then an exception."""
    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def inner(tracking_uri: str, *args: Any, **kwargs: Any) -> Any:
            if tracking_uri.startswith(("http://", "https://")):
                try:
                    _probe_server(tracking_uri)
                except ConnectionError:
                    log.warning("MLflow at %s unreachable: %s skipped; once it is back, `python -m analysis sync "
                                "--experiment NAME --sweep-dir FOLDER` fills in what is missing",
                                _redact(tracking_uri), fn.__name__)
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


def _check_name(field: str, value: Any) -> str:
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
    _check_name("sweep_name", sweep_name)
    _check_name("experiment", experiment)
    check_tracking_uri(tracking_uri, probe=False)
    with store_lock(tracking_uri):  # the client creates (migrates) a fresh store
        client = _client(tracking_uri)
        exp = client.get_experiment_by_name(experiment)
    if exp is not None and exp.lifecycle_stage != "active":
        raise ValueError(f"experiment: {experiment!r} is deleted in {_redact(tracking_uri)}; restore it "
                         "(mlflow experiments restore) or pick another name")
    if exp is None:
        if resume:
            raise ValueError(f"resume: no sweep named {sweep_name!r} in experiment {experiment!r} "
                             f"(the experiment does not exist in {_redact(tracking_uri)})")
        try:
            experiment_id = client.create_experiment(experiment, artifact_location=artifact_location(tracking_uri, experiment),
                                                     tags=_EXPERIMENT_KIND)
        except Exception:  # created meanwhile by someone else
            exp = client.get_experiment_by_name(experiment)
            if exp is None:
                raise
            experiment_id = exp.experiment_id
    else:
        experiment_id = exp.experiment_id
        for k, v in _EXPERIMENT_KIND.items():
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
    all_tags = {_key(k): _text(v, _MAX_TAG) for k, v in tags.items()}
    all_tags.update({TAG_SWEEP: sweep_name, TAG_ROLE: "sweep", _RUN_NAME: sweep_name, TAG_SETTING_UP: "true"})
    run = client.create_run(experiment_id, tags=all_tags, run_name=sweep_name)
    _log_params(client, run.info.run_id, _flatten(params))
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
    tagged ``srrl.interrupted`` with how many."""
    client = _client(tracking_uri)
    wanted = set(trial_ids)
    exp = client.get_run(parent_run_id).info.experiment_id
    for run in child_runs(client, exp, parent_run_id):
        if run.data.tags.get(TAG_TRIAL_ID) in wanted:
            client.set_tag(run.info.run_id, TAG_STATUS, "interrupted")
            client.set_terminated(run.info.run_id, status="KILLED")
    client.set_tag(parent_run_id, "srrl.interrupted", str(len(wanted)))


@_skip_when_unreachable(lambda: None)
def log_verdict(tracking_uri: str, parent_run_id: str, verdict: Any, best_search: Optional[Mapping[str, Any]] = None) -> None:
    """Put a confirmation verdict (``tuner.verdict.Verdict``) on the sweep's parent run and mark the
    recommended child runs: the sentence as tag ``srrl.verdict``, the recommended configuration's
    params as tags ``srrl.recommended.<name>`` and its confirmed means and 95% CIs as metrics
    ``verdict_<metric>_mean|ci_low|ci_high``, the best search trial as ``best_search_<metric>`` (and
    its text fields, e.g. ``trial_id``, as tags ``srrl.best_search_<name>``),
    and the whole verdict as ``verdict/verdict.json``."""
    import json
    import tempfile

    from mlflow.entities import Metric, RunTag

    client = _client(tracking_uri)
    now = int(time.time() * 1000)
    # the sentence is also the run's description, the first thing the MLflow UI shows of it
    tags = {TAG_VERDICT: _text(verdict.sentence, _MAX_TAG), "mlflow.note.content": _text(verdict.sentence, _MAX_TAG)}
    metrics = []
    rec = verdict.config(verdict.recommended)
    if rec is not None:
        tags.update({_key(f"srrl.recommended.{k}"): _text(v, _MAX_TAG) for k, v in rec.params.items()})
        tags["srrl.recommended"] = rec.label
        for name, iv in rec.metrics.items():
            metrics += [Metric(f"verdict_{name}_{part}", float(getattr(iv, attr)), now, 0)
                        for part, attr in (("mean", "mean"), ("ci_low", "low"), ("ci_high", "high"))]
    for k, v in (best_search or {}).items():
        value = _number(v)
        if value is not None and math.isfinite(value):
            metrics.append(Metric(_key(f"best_search_{k}"), value, now, 0))
        elif isinstance(v, str):
            tags[_key(f"srrl.best_search_{k}")] = _text(v, _MAX_TAG)
    client.log_batch(parent_run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()], synchronous=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "verdict.json"
        path.write_text(json.dumps(verdict.to_dict(), indent=2))
        client.log_artifact(parent_run_id, str(path), "verdict")
    exp = client.get_run(parent_run_id).info.experiment_id
    for run in child_runs(client, exp, parent_run_id):
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
    flt = f"tags.`{_PARENT}` = '{parent_run_id}'"
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
        raise ValueError(f"experiment: no experiment named {experiment!r} in {_redact(tracking_uri)}")
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


# ---- helpers ----------------------------------------------------------------------------------------
def _key(key: Any) -> str:
    """An MLflow-legal key: letters, digits, ``_ - . / space :``; at most 250 characters."""
    return re.sub(r"[^\w\-./ :]", "_", str(key))[:_MAX_KEY] or "_"


def _text(value: Any, limit: int) -> str:
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``, keys made legal, values stringified and truncated."""
    out: Dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[_key(key)] = _text(v, _MAX_PARAM)
    return out


def _log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[i:i + MAX_PARAMS_PER_BATCH], synchronous=True)


def _number(value: Any) -> Optional[float]:
    """A float for real numbers (numpy scalars included), None for bools and everything else."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def result_step(result: Mapping[str, Any]) -> int:
    """The epoch a Tune result is logged at: its ``epoch``, else ``training_iteration``, else 0."""
    step = _number(result.get(M.EPOCH))
    if step is None or not math.isfinite(step):
        step = _number(result.get("training_iteration")) or 0.0
    return int(step)


def result_metrics(result: Mapping[str, Any], keys: Sequence[str]) -> Tuple[int, int, Dict[str, float], List[str]]:
    """``(step, timestamp_ms, {key: finite value}, [keys whose value is NaN/inf])`` of one Tune result:
    the rules by which both the callback and ``analysis sync`` log it (bools and non-numbers are skipped)."""
    stamp = _number(result.get("timestamp"))
    ms = int(stamp * 1000) if stamp is not None else int(time.time() * 1000)
    finite: Dict[str, float] = {}
    nonfinite: List[str] = []
    for key in keys:
        value = _number(result.get(key))
        if value is not None:
            if math.isfinite(value):
                finite[key] = value
            else:
                nonfinite.append(key)
    return result_step(result), ms, finite, nonfinite


def trial_tags(parent_run_id: str, trial_id: str, config: Optional[Mapping[str, Any]] = None,
               name_keys: Sequence[str] = (), stage: str = "search") -> Dict[str, str]:
    """The tags of a trial's child run: nested under the sweep's parent, found by trial id, named by
    what it is (``run_name``), its stage and the config's labels (``srrl.origin``, ``srrl.config_id`` ...)."""
    config = config or {}
    tags = {_PARENT: parent_run_id, _RUN_NAME: run_name(config, name_keys, stage) or trial_id, TAG_TRIAL_ID: trial_id,
            TAG_ROLE: "trial", TAG_STAGE: stage}
    # a config's labels (tuner.config.LABEL_KEYS) are also tagged srrl.<label>
    tags.update({f"srrl.{k}": _text(config[k], _MAX_TAG) for k in LABEL_KEYS if config.get(k) not in (None, "")})
    return tags


_ABBREV = {"alpha": "a", "beta": "b", "gamma": "g", "weight_decay": "wd"}


def run_name(config: Mapping[str, Any], keys: Sequence[str], stage: str = "search") -> str:
    """A run's name in the MLflow UI: ``a=8.12 b=8.27``; ``CE+FM seed=1``; ``confirm a=1 b=1 seed=3``."""
    parts = [str(config["arm"])] if config.get("arm") else []
    if config.get("config_role") == "ce":
        parts, keys = ["CE only"], ()
    for k in keys:
        if k in config and k not in LABEL_KEYS and k != "seed":
            v = config[k]
            parts.append(f"{_ABBREV.get(k, k)}={f'{v:.3g}' if isinstance(v, float) else v}")
    if (stage == "confirm" or "seed" in keys) and "seed" in config:
        parts.append(f"seed={config['seed']}")
    name = " ".join(parts)
    return f"confirm {name}".strip() if stage == "confirm" else name


def _retryable(exc: BaseException) -> bool:
    code = getattr(exc, "error_code", None)
    return code not in _NOT_RETRYABLE


def _error_summary(text: str) -> str:
    """The most telling line of a Tune error file: the last ``SomeError: message`` line of the last failure."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Ray colours the actor name
    blocks = re.split(r"^Failure # \d+.*$", text, flags=re.M)
    last = blocks[-1] if blocks else text
    lines = [ln.strip() for ln in last.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Diverged)\b\s*(:|$)", ln):
            return ln
    return lines[-1] if lines else "unknown error"


@contextlib.contextmanager
def _fail_fast_http(uri: str) -> Iterator[None]:
    """MLflow's own HTTP retries (7, backoff 2: minutes) would stall the Tune loop; we retry and buffer
    instead. Applies only where the user set nothing, and only for the duration of one call."""
    if not uri.startswith(("http://", "https://", "databricks")):
        yield
        return
    set_here = [k for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT") if k not in os.environ]
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    for k in set_here:
        os.environ[k] = defaults[k]
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)


# ---- the Tune callback --------------------------------------------------------------------------------
# An op is a plain tuple (kind, trial_id, payload) so the buffer pickles with the callback:
#   ("start", tid, None)                         create the child run or set it back to RUNNING
#   ("log", tid, (metrics, tags))                metrics = [(key, value, ms, step)], tags = {k: v}
#   ("end", tid, (tags, mlflow_status))          final tags, then set_terminated
Op = Tuple[str, str, Any]


class _MLflowTrackingImpl:
    """The callback's logic, free of ray; ``MLflowTracking`` adds ``ray.tune.Callback`` as a base."""

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
        self._configs[trial.trial_id] = _flatten({**self.base_params, **config})
        self._tags[trial.trial_id] = trial_tags(self.parent_run_id, trial.trial_id, config, self.name_keys, self.stage)
        self._submit(("start", trial.trial_id, None))

    def on_trial_result(self, iteration: int, trials: List[Any], trial: Any, result: Dict, **info: Any) -> None:
        tid = trial.trial_id
        step, ms, finite, nonfinite = result_metrics(result, self.metric_keys)
        once = self._once.setdefault(tid, set())
        finite = {k: v for k, v in finite.items() if k not in M.PER_TRIAL or k not in once}
        once.update(k for k in finite if k in M.PER_TRIAL)
        metrics = [(_key(key), value, ms, step) for key, value in finite.items()]
        tags = {}
        for key in nonfinite:
            if (tid, key) not in self._nonfinite:
                self._nonfinite.add((tid, key))
                tags[_key(TAG_NONFINITE + key)] = str(step)
        self._last[tid] = (step, bool(result.get(DIVERGED_KEY)))
        if metrics or tags:
            self._submit(("log", tid, (metrics, tags)))

    def on_trial_complete(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        epoch, diverged = self._last_of(trial)
        planned = self._planned(trial)
        tags = {TAG_LAST_EPOCH: str(epoch)}
        if diverged:
            status = "diverged"
            tags[TAG_DIVERGED_EPOCH] = str(epoch)
        elif epoch >= planned:
            status = "finished"
        else:
            status = "stopped_early"
            tags[TAG_STOPPED_AT] = str(epoch)
        self._end(trial, status, tags)

    def on_trial_error(self, iteration: int, trials: List[Any], trial: Any, **info: Any) -> None:
        epoch, _ = self._last_of(trial)
        tags = {TAG_LAST_EPOCH: str(epoch), TAG_ERROR: _text(self._error_line(trial), 1000)}
        self._end(trial, "errored", tags)

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
                        "`python -m analysis sync --experiment NAME --sweep-dir FOLDER` backfills them from "
                        "Tune's result files", _redact(self.tracking_uri), len(self._pending))

    # -- internals ---------------------------------------------------------------------------------
    def _planned(self, trial: Any) -> int:
        cfg = getattr(trial, "config", None) or {}
        value = _number(cfg.get("epochs")) if isinstance(cfg, Mapping) else None
        return int(value) if value is not None else self.epochs

    def _last_of(self, trial: Any) -> Tuple[int, bool]:
        if trial.trial_id in self._last:
            return self._last[trial.trial_id]
        last = getattr(trial, "last_result", None) or {}  # e.g. a trial restored from an earlier run
        return result_step(last), bool(last.get(DIVERGED_KEY))

    @staticmethod
    def _error_line(trial: Any) -> str:
        path = getattr(trial, "error_file", None)
        if path:
            try:
                return _error_summary(Path(path).read_text(errors="replace"))
            except OSError:
                pass
        try:
            err = trial.get_error()  # Ray 2.60: the error file's text, read through the trial's storage
        except Exception:
            err = None
        return _error_summary(str(err)) if err else "unknown error (no error file)"

    def _end(self, trial: Any, status: str, tags: Dict[str, str]) -> None:
        tags[TAG_STATUS] = status
        self._submit(("end", trial.trial_id, (tags, _MLFLOW_END[status])))

    @property
    def _client(self) -> Any:
        if self._client_obj is None:
            self._client_obj = _client(self.tracking_uri)
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
                    with _fail_fast_http(self.tracking_uri):
                        self._execute(op)
                    break
                except Exception as e:  # noqa: BLE001 - tracking must never crash the sweep
                    if faults.is_no_space(e):  # kept for --resume, and the sweep stops: every trial would add to it
                        self._down = True
                        faults.stop_sweep(faults.no_space(e, faults.places_of(None, self.tracking_uri, None),
                                                          "tracking_uri"))
                        return
                    if not _retryable(e):
                        log.warning("MLflow rejected %s for trial %s; dropped: %s", op[0], op[1], _redact(str(e)))
                        break
                    if attempt == len(delays):
                        self._down = True
                        log.warning("MLflow at %s unreachable (%s); %d tracking requests buffered",
                                    _redact(self.tracking_uri), _redact(str(e)).splitlines()[0][:200],
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
            run = self._client.create_run(self.experiment_id, tags=tags, run_name=tags[_RUN_NAME])
            run_id = self._runs[tid] = run.info.run_id
            self._fresh.add(tid)
            created = True
            self._link_optuna(tags.get("srrl.optuna_trial"), run_id, tid)
        if tid in self._fresh:
            try:
                _log_params(self._client, run_id, self._configs.get(tid, {}))
            except Exception as e:  # noqa: BLE001
                if _retryable(e):
                    raise
                log.warning("MLflow rejected the params of trial %s: %s", tid, _redact(str(e)))
            self._fresh.discard(tid)
        if kind == "start":
            if not created:  # a resumed or restarted trial: same run, running again
                if not self._client.get_run(run_id).data.params:  # its driver was killed between creating it
                    _log_params(self._client, run_id, self._configs.get(tid, {}))  # and logging its params
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


def _build_callback_class() -> type:
    from ray.tune import Callback

    class MLflowTracking(_MLflowTrackingImpl, Callback):
        """Ray Tune callback (driver side): a nested MLflow child run per trial under the sweep's parent.

        Per result: the numeric ``metric_keys`` at ``step = result["epoch"]``, merged with the trial's
        other held results into one ``log_batch`` (sent after ``flush_interval_s`` or at the trial's end)
        (``training_iteration`` when absent); NaN/inf are not logged but tagged ``srrl.nonfinite.<key>``
        with the epoch. At the end: ``srrl.status`` in ``TRIAL_STATUSES`` (+ ``srrl.stopped_at_epoch``,
        ``srrl.diverged_epoch`` or ``srrl.error``), run status FINISHED or FAILED. Picklable: the client
        is dropped and child runs are found again by tag after resume. MLflow outages are retried with
        backoff, then buffered in memory and flushed on the next successful call and at experiment end.
        """

    MLflowTracking.__module__ = __name__
    MLflowTracking.__qualname__ = "MLflowTracking"
    return MLflowTracking


def __getattr__(name: str) -> Any:  # PEP 562: build the ray-based class on first use only
    if name == "MLflowTracking":
        cls = _build_callback_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
