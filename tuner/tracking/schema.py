"""The MLflow record of a sweep: its tag names, trial statuses, MLflow's size limits, and the rules by
which a Tune result, a trial's config and its error become metrics, params and tags.

Both writers follow these rules: the Tune callback (``tuner.tracking.callback``) while the sweep runs,
and ``run_search.py --sync`` when it backfills a run from Tune's files afterwards.
"""
from __future__ import annotations

import json
import math
import numbers
import re
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tuner.core import metrics as M
from tuner.core.config import LABEL_KEYS, fmt_param

__all__ = [
    "TAG_SWEEP", "TAG_ROLE", "TAG_TRIAL_ID", "TAG_STATUS", "TAG_STOPPED_AT", "TAG_DIVERGED_EPOCH", "TAG_ERROR",
    "TAG_LAST_EPOCH", "end_tags", "TAG_NONFINITE", "TAG_NUM_FAILURES", "TAG_RESUMES", "TAG_STAGE", "TAG_RECOMMENDED",
    "TAG_VERDICT", "TAG_SETTING_UP", "STAGES", "EXPERIMENT_KIND", "NOTE", "RUNS_VIEW", "runs_view_tag", "TRIAL_STATUSES", "DIVERGED_KEY", "METRIC_KEYS",
    "PARENT", "RUN_NAME", "MLFLOW_END", "MAX_PARAMS_PER_BATCH", "MAX_METRICS_PER_BATCH", "MAX_PARAM", "MAX_TAG",
    "MAX_KEY", "legal_key", "text", "flatten", "number", "result_step", "result_metrics", "trial_tags", "run_name",
    "error_summary",
]

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
#: the experiment's kind; MLflow 3.17's UI does not read it yet (its GenAI/Model training switch and the
#: link's ``workflowType`` decide, docs/tracking.md "Finding the answer") but it says what the experiment is
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: what MLflow's experiment list shows as Description, and the run page as the run's description
NOTE = "mlflow.note.content"
#: a saved runs-table view on each experiment (``?viewStateShareKey=srrl``): the columns that say how each trial did
RUNS_VIEW = "srrl"
_RUNS_VIEW_COLUMNS = [f"tags.`{TAG_STAGE}`", f"tags.`{TAG_STATUS}`", "params.`seed`", "params.`alpha`", "params.`beta`",
                      "params.`lr`", f"metrics.`{M.RANK_VAL_ACC}`", f"metrics.`{M.TEST_ACC}`"]
#: what ``srrl.status`` says, and the result key of a diverged epoch: the status rule's names (tuner.core.metrics)
TRIAL_STATUSES = M.TRIAL_STATUSES
DIVERGED_KEY = M.DIVERGED_KEY
#: the result keys logged as metrics unless a callback is given others
METRIC_KEYS = tuple(M.PER_EPOCH + M.PER_TRIAL)

PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"
#: a trial's ``srrl.status`` -> the MLflow status its run ends with
MLFLOW_END = {M.FINISHED: "FINISHED", M.STOPPED_EARLY: "FINISHED", M.DIVERGED: "FAILED", M.ERRORED: "FAILED", M.STALLED: "FAILED"}
MAX_PARAMS_PER_BATCH = 100  # MLflow: at most 100 params + tags per log_batch
MAX_METRICS_PER_BATCH = 1000  # MLflow: at most 1000 metrics per log_batch
MAX_PARAM = 6000  # MLflow: longest param value
MAX_TAG = 8000
MAX_KEY = 250


def runs_view_tag() -> Dict[str, str]:
    """The experiment tag that saves the ``RUNS_VIEW`` view, in the envelope MLflow 3.17's UI reads
    (name, createdAt, updatedAt, state: the table's state as a JSON string)."""
    state = {"selectedColumns": _RUNS_VIEW_COLUMNS, "orderByKey": f"metrics.`{M.RANK_VAL_ACC}`", "orderByAsc": False}
    now = int(time.time() * 1000)
    envelope = {"name": "srrl: how each trial did", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    return {f"mlflow.sharedViewState.{RUNS_VIEW}": json.dumps(envelope)}


def legal_key(key: Any) -> str:
    """An MLflow-legal key: letters, digits, ``_ - . / space :``; at most 250 characters."""
    return re.sub(r"[^\w\-./ :]", "_", str(key))[:MAX_KEY] or "_"


def text(value: Any, limit: int) -> str:
    s = value if isinstance(value, str) else str(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def flatten(data: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``, keys made legal, values stringified and truncated."""
    out: Dict[str, str] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[legal_key(key)] = text(v, MAX_PARAM)
    return out


def end_tags(status: str, epoch: int, error: Optional[str] = None) -> Dict[str, str]:
    """THE tags of a trial's run when it ends (the callback's and ``run_search.py --sync``'s), beside
    ``srrl.status``: its last epoch and, by status, the epoch it diverged or was stopped at, or its one-line error."""
    tags = {TAG_LAST_EPOCH: str(epoch)}
    if status in (M.ERRORED, M.STALLED):
        tags[TAG_ERROR] = text(error or "unknown error (no error file)", 1000)
    elif status == M.DIVERGED:
        tags[TAG_DIVERGED_EPOCH] = str(epoch)
    elif status == M.STOPPED_EARLY:
        tags[TAG_STOPPED_AT] = str(epoch)
    return tags


def number(value: Any) -> Optional[float]:
    """A float for real numbers (numpy scalars included), None for bools and everything else."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def result_step(result: Mapping[str, Any]) -> int:
    """The epoch a Tune result is logged at: its ``epoch``, else ``training_iteration``, else 0."""
    step = number(result.get(M.EPOCH))
    if step is None or not math.isfinite(step):
        step = number(result.get("training_iteration")) or 0.0
    return int(step)


def result_metrics(result: Mapping[str, Any], keys: Sequence[str]) -> Tuple[int, int, Dict[str, float], List[str]]:
    """``(step, timestamp_ms, {key: finite value}, [keys whose value is NaN/inf])`` of one Tune result:
    the rules by which both the callback and ``analysis sync`` log it (bools and non-numbers are skipped)."""
    stamp = number(result.get("timestamp"))
    ms = int(stamp * 1000) if stamp is not None else int(time.time() * 1000)
    finite: Dict[str, float] = {}
    nonfinite: List[str] = []
    for key in keys:
        value = number(result.get(key))
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
    tags = {PARENT: parent_run_id, RUN_NAME: run_name(config, name_keys, stage) or trial_id, TAG_TRIAL_ID: trial_id,
            TAG_ROLE: "trial", TAG_STAGE: stage}
    # a config's labels (tuner.core.config.LABEL_KEYS) are also tagged srrl.<label>
    tags.update({f"srrl.{k}": text(config[k], MAX_TAG) for k in LABEL_KEYS if config.get(k) not in (None, "")})
    return tags


_ABBREV = {"alpha": "a", "beta": "b", "gamma": "g", "weight_decay": "wd"}


def run_name(config: Mapping[str, Any], keys: Sequence[str], stage: str = "search") -> str:
    """A run's name in the MLflow UI: ``a=8.12 b=8.27``; ``CE+FM seed=1``; ``confirm a=1 b=1 seed=3``."""
    parts = [str(config["arm"])] if config.get("arm") else []
    if config.get("config_role") == "ce":
        parts, keys = ["CE only"], ()
    for k in keys:
        if k in config and k not in LABEL_KEYS and k != "seed":
            parts.append(f"{_ABBREV.get(k, k)}={fmt_param(config[k])}")
    if (stage == "confirm" or "seed" in keys) and "seed" in config:
        parts.append(f"seed={config['seed']}")
    name = " ".join(parts)
    return f"confirm {name}".strip() if stage == "confirm" else name


def error_summary(text: str) -> str:
    """The most telling line of a Tune error file: the last ``SomeError: message`` line of the last failure."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Ray colours the actor name
    blocks = re.split(r"^Failure # \d+.*$", text, flags=re.M)
    last = blocks[-1] if blocks else text
    lines = [ln.strip() for ln in last.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Diverged)\b\s*(:|$)", ln):
            return ln
    return lines[-1] if lines else "unknown error"
