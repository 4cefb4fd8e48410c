"""Tune's per-trial ``result.json`` brought level with the trial's newest checkpoint, before a restore.

Tune uploads a snapshot's files one at a time (docs/architecture.md, "Faults"). A driver
killed between two uploads can leave a trial's ``result.json`` older than its checkpoints and than the
experiment state. Tune never rewrites the log of a trial it restores as ended, and a restarted trial
appends to the log it downloads, so the lost epochs would be lost for good: the sweep's table, the
study's settling and ``analysis sync`` would read the shorter history (seen in a loaded round: a
trial ranked at 20.28, its epoch 1, while MLflow and the study held 23.33, its epoch 4).

The checkpoint is written with the epoch it ends and carries the run's history
(``Trainer.state_dict``), so the lost rows are rebuilt from it. A rebuilt row holds the history's
metrics and the trial's constants; Tune's timings of that epoch are gone, and ``rebuilt_from_checkpoint``
says so.
"""
from __future__ import annotations

import io
import json
import re
from typing import Any, Callable, Dict, List

from tuner.core import metrics as M
from tuner.driver.storage import SweepFolder, trial_id_of
from tuner.core.trainer import STATE_FILE

__all__ = ["RESULT_FILE", "REBUILT_KEY", "read_result_lines", "complete_trial_logs"]

RESULT_FILE = "result.json"  # Tune's per-trial log: one reported result per line
REBUILT_KEY = "rebuilt_from_checkpoint"

#: what every result of a trial repeats: Tune's identity of the trial and the trainable's per-trial values
_CONSTANT = ("trial_id", "config", "node_id", "pid", "hostname", "node_ip", M.WORKERS, M.STUDENT_PARAMS,
             M.STUDENT_MACS, M.TEACHER_VAL_ACC, M.TEACHER_TEST_ACC)
_CHECKPOINT = re.compile(r"checkpoint_(\d+)$")


def read_result_lines(text: str) -> List[Dict[str, Any]]:
    """The results of a ``result.json``'s text; a torn line (its driver died mid-write) is skipped."""
    rows = []
    for line in text.splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def complete_trial_logs(stage: SweepFolder, log: Callable[[str], None] = print) -> List[str]:
    """Append to each trial's ``result.json`` under ``stage`` (a folder of a Tune experiment: the trial
    folders are those holding checkpoints) the epochs its newest checkpoint holds and the log lacks;
    says so through ``log`` and returns the trial folders it completed."""
    completed = []
    for trial in stage.subfolders():
        checkpoints = [n for n in stage.child(trial).subfolders("checkpoint_") if _CHECKPOINT.match(n)]
        if not checkpoints:
            continue
        newest = max(checkpoints, key=lambda n: int(_CHECKPOINT.match(n).group(1)))
        path = f"{trial}/{RESULT_FILE}"
        rows = read_result_lines(stage.read_text(path)) if stage.has_file(path) else []
        logged = max((int(r.get(M.EPOCH, 0)) for r in rows), default=0)
        # Tune numbers a trial's checkpoints 0, 1, ... one per report, so checkpoint_<i> ends epoch i + 1 or
        # later: a log that already reaches that epoch needs no checkpoint read
        if logged >= int(_CHECKPOINT.match(newest).group(1)) + 1 or not stage.has_file(f"{trial}/{newest}/{STATE_FILE}"):
            continue
        history = _history(stage.read_bytes(f"{trial}/{newest}/{STATE_FILE}"))
        lost = [h for h in history if int(h.get(M.EPOCH, 0)) > logged]
        if not lost:
            continue
        template = rows[-1] if rows else _first_template(stage, trial)
        rows += _rebuilt(template, lost, newest)
        stage.write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        completed.append(trial)
    if completed:
        log(f"{stage.shown}: completed the result.json of {len(completed)} trial(s) from their newest "
            "checkpoints (the interrupted driver's last upload of them was lost)")
    return completed


def _first_template(stage: SweepFolder, trial: str) -> Dict[str, Any]:
    """A trial that logged nothing: its id from its folder's name (``storage.trial_id_of``), its config
    from Tune's ``params.json``."""
    trial_id = trial_id_of(trial)
    out: Dict[str, Any] = {"trial_id": trial_id} if trial_id else {}
    if stage.has_file(f"{trial}/params.json"):
        out["config"] = json.loads(stage.read_text(f"{trial}/params.json"))
    return out


def _history(state_bytes: bytes) -> List[Dict[str, float]]:
    import torch

    state = torch.load(io.BytesIO(state_bytes), map_location="cpu", weights_only=True)
    return [dict(r) for r in state.get("history", [])]


def _rebuilt(template: Dict[str, Any], lost: List[Dict[str, float]], newest: str) -> List[Dict[str, Any]]:
    """Tune-shaped results for the ``lost`` history rows: the trial's constants from ``template`` (its last
    logged result), the epoch's metrics, Tune's iteration count carried on; the newest checkpoint's name
    on the last row, which it ends."""
    constants = {k: template[k] for k in _CONSTANT if k in template}
    iteration = int(template.get("training_iteration", 0))
    start = int(template.get(M.EPOCH, 0))
    out = []
    for i, row in enumerate(lost):
        out.append({**constants, **row, M.DIVERGED_KEY: 0.0, "done": False, REBUILT_KEY: True,
                    "training_iteration": iteration + int(row[M.EPOCH]) - start,
                    **({"checkpoint_dir_name": newest} if i == len(lost) - 1 else {})})
    return out
