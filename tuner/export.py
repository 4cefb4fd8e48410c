"""Trained students as files: export a trial's final student + connector, and load them back in one call.

    from tuner.export import load_student
    loaded = load_student("runs:/<child run id>/model/student.pt", tracking_uri="sqlite:///.../mlflow.db")
    logits = loaded.student(images)            # a DistillableModel, eval mode
    loaded.config                              # the trial's TrialConfig
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from tuner.config import TrialConfig
from tuner.connectors import build_connector
from tuner.models import build_model
from tuner.storage import atomic_write

__all__ = ["StudentBundle", "export_student", "load_student", "STUDENT_FILE"]

STUDENT_FILE = "student.pt"


@dataclass
class StudentBundle:
    """A loaded student: the model, its connector (None for a CE-only student) and its config."""

    student: nn.Module
    connector: Optional[nn.Module]
    config: TrialConfig
    metrics: Dict[str, float]


def export_student(trainer_state: Union[str, Path], config: TrialConfig, num_classes: int, in_channels: int,
                   teacher_channels: Optional[int], metrics: Dict[str, float], out: Union[str, Path]) -> Path:
    """Write the compact student file (weights + everything needed to rebuild them) from a trial checkpoint.

    Args:
        trainer_state: the ``trainer_state.pt`` of a trial checkpoint (``Trainer.state_dict()``).
        teacher_channels: C_T, to rebuild the connector (None when the trial used no teacher).
        metrics: numbers to keep beside the weights (e.g. ``test_acc``).
    """
    state = torch.load(trainer_state, map_location="cpu", weights_only=True)
    payload = {"student": state["learnable"]["student"], "connector": state["learnable"]["connector"],
               "config": config.to_dict(), "num_classes": int(num_classes), "in_channels": int(in_channels),
               "teacher_channels": teacher_channels, "metrics": {k: float(v) for k, v in metrics.items()}}
    out = Path(out)
    atomic_write(out, lambda f: torch.save(payload, f))
    return out


def load_student(source: Union[str, Path], tracking_uri: Optional[str] = None) -> StudentBundle:
    """Rebuild a student (and its connector) from a local file or an MLflow ``runs:/`` artifact URI."""
    if str(source).startswith(("runs:/", "mlflow-artifacts:", "models:/")):
        import mlflow

        source = mlflow.artifacts.download_artifacts(artifact_uri=str(source), tracking_uri=tracking_uri)
    payload: Dict[str, Any] = torch.load(source, map_location="cpu", weights_only=True)
    cfg = TrialConfig.from_dict(payload["config"])
    student = build_model(cfg.student, payload["num_classes"], in_channels=payload["in_channels"])
    student.load_state_dict(payload["student"])
    connector = None
    if payload["teacher_channels"] is not None and cfg.needs_teacher:
        connector = build_connector(cfg.connector, student.feature_channels, payload["teacher_channels"])
        connector.load_state_dict(payload["connector"])
        connector.eval()
    return StudentBundle(student.eval(), connector, cfg, dict(payload["metrics"]))
