"""The sweep's parent run as the driver records it, and its rebuild from the sweep folder where a store lost it.

A sweep folder holds everything its MLflow record is made of (docs/tracking.md, "A lost store"): the settings
(``srrl_sweep.yaml``), every trial's results (Tune's ``result.json``, search and confirmation) and the
confirmation's results, from which the driver's own code gives the verdict again. ``run_search.py --sync DIR``
uses these to rebuild a deleted ``mlflow.db`` or fill a fresh server; the driver and the rebuild create the
parent run with the same ``parent_record``.
"""
from __future__ import annotations

import datetime as _dt
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

from tuner.core import metrics as M
from tuner.core.config import TrialConfig
from tuner.core.sweep_config import SweepConfig
from tuner.core.uri import redact, sqlite_file
from tuner.core.ranking import by_config
from tuner import tracking

__all__ = ["parent_record", "teacher_tags", "search_top", "recorded", "rebuild_parent", "folder_verdict", "SPACE_FILE"]

SPACE_FILE = "srrl_space.yaml"  # the parent run's artifact space/srrl_space.yaml
TAG_REBUILT = "srrl.rebuilt_from"  # on a parent run rebuilt from its sweep folder: the folder and when


def parent_record(shown: SweepConfig, base: TrialConfig, extra_tags: Mapping[str, str]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """(params, tags) of a sweep's parent run: the sweep's own settings as ``sweep.*`` params (``shown``:
    credentials already redacted), what it searched and with which models as tags, plus ``extra_tags``."""
    params = {f"sweep.{k}": v for k, v in shown.to_dict().items()}
    tags = {**tracking.set_git_and_version_tags(), "srrl.space": str(shown.space), "srrl.searcher": str(shown.searcher),
            "srrl.scheduler": str(shown.scheduler), "srrl.dataset": base.dataset, "srrl.teacher": base.teacher,
            "srrl.student": base.student, **extra_tags}
    return params, tags


def teacher_tags(info: Mapping[str, Any]) -> Dict[str, str]:
    """The parent run's tags of the sweep's teacher (``Teacher.info()``: architecture, hash, file, accuracies)."""
    return {f"srrl.{k}": str(v) for k, v in info.items()}


def search_top(rows: List[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The search's best finished configuration as the parent run records it beside the verdict, or None: the
    printed leaderboard's first (a raced search's: the mean over its seeds, ``ranking.by_config``)."""
    best = next((r for r in by_config(rows) if r["status"] == M.FINISHED), None)
    return {k: best[k] for k in ("trial_id", M.RANK_VAL_ACC, M.TEST_ACC, "seeds")} if best else None


def recorded(tracking_uri: str, experiment: str, name: str) -> Optional[str]:
    """Why the store at ``tracking_uri`` has no parent run of sweep ``name`` in ``experiment``, or None when it
    has one; reads only (a missing SQLite file is not created)."""
    path = sqlite_file(tracking_uri)
    if path is not None and not path.is_file():
        return f"no MLflow database at {path.as_posix()!r}"
    client = tracking.client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage != "active":
        return f"no experiment {experiment!r} in {redact(tracking_uri)}"
    if not tracking.find_parent(client, exp.experiment_id, name):
        return f"no sweep named {name!r} in experiment {experiment!r} of {redact(tracking_uri)}"
    return None


def rebuild_parent(folder: Path, sweep: SweepConfig, base: TrialConfig, space: Any, tracking_uri: str,
                   experiment: str) -> str:
    """A new parent run for the sweep in ``folder`` (settings and teacher from its ``srrl_sweep.yaml``, the config,
    space and teacher artifacts as the driver logs them), tagged ``srrl.rebuilt_from``; returns its run id. ``tracking_uri`` is
    checked already (``tuner.tracking.check_tracking_uri``)."""
    from search_spaces import declaration_yaml
    from tuner.driver.sweep_file import SWEEP_FILE, saved_teacher

    when = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    teacher = saved_teacher(str(folder))
    params, tags = parent_record(sweep, base, {TAG_REBUILT: f"{folder} at {when}", **teacher_tags(teacher)})
    run_id = tracking.start_sweep(tracking_uri, experiment, folder.name, params=params, tags=tags, resume=False)
    weights = Path(teacher.get("teacher_path", ""))  # the driver logs the teacher's file too, where it still is
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SPACE_FILE).write_text(declaration_yaml(space))
        tracking.log_artifacts_once(tracking_uri, run_id, {"config": folder / SWEEP_FILE, "space": Path(tmp) / SPACE_FILE,
                                                           **({"teacher": weights} if weights.is_file() else {})})
    tracking.sweep_started(tracking_uri, run_id)
    return run_id


def folder_verdict(folder: Path, sweep: SweepConfig, base: TrialConfig, space: Any,
                   splits: Callable[[], Any]) -> Optional[Tuple[Any, Optional[Dict[str, Any]]]]:
    """(verdict, search top) of the sweep in ``folder`` as its driver computed them, read without Ray; None
    while its confirmation stage is absent or not over (fewer ended runs than its configurations x seeds).
    ``splits()`` gives the sweep's data (loaded on first call: only a finished confirmation needs it)."""
    from search_spaces import SpaceContext
    from tuner.driver import confirm
    from tuner.driver.results import leaderboard_rows, saved_results
    from tuner.driver.storage import SweepFolder

    store = SweepFolder.of(str(folder.parent)).child(folder.name)
    search, confirmed = saved_results(store), saved_results(store.child(confirm.CONFIRM_DIR))
    if confirm.applies(space) or search is None or confirmed is None:
        return None
    rows = leaderboard_rows(search[0], base, search[1])
    data = splits()
    ctx = SpaceContext.for_config(base, num_classes=data.num_classes, in_channels=data.in_channels,
                                  input_size=data.image_size)
    configs = confirm.confirm_configs(by_config(rows), max(sweep.confirm, 1), space.reference_point(ctx), base)
    grid, statuses = confirmed
    ended = sum(s in ("TERMINATED", "ERROR") for s in statuses.values())
    if ended < len(statuses) or ended < len(configs) * sweep.confirm_seeds:
        return None
    return confirm.verdict_of(grid, space.reference_name(ctx)), search_top(rows)
