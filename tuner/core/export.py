"""Trained students as files: export a trial's final student + connector, and load them back in one call.

    from tuner.core.export import load_student
    loaded = load_student("runs:/<child run id>/model/student.pt", tracking_uri="sqlite:///.../mlflow.db")
    logits = loaded.predict(images)            # raw images, as the data set holds them: normalised here
    loaded.student, loaded.config              # the DistillableModel (eval mode), the trial's TrialConfig
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch
from torch import nn

from tuner.core.config import TrialConfig
from tuner.core.connectors import build_connector
from tuner.core.data import Normalize
from tuner.core.models import build_model
from tuner.core.files import atomic_write

__all__ = ["StudentBundle", "export_student", "load_student", "STUDENT_FILE"]

STUDENT_FILE = "student.pt"


@dataclass
class StudentBundle:
    """A loaded student: the model, its connector (None for a CE-only student), its config, the metrics
    logged with it, and the preprocessing it was trained with (``mean``, ``std``, ``scale``, ``image_size``,
    ``in_channels``)."""

    student: nn.Module
    connector: Optional[nn.Module]
    config: TrialConfig
    metrics: Dict[str, float]
    preprocessing: Dict[str, Any]

    def predict(self, images: Any) -> torch.Tensor:
        """Logits ``(N, num_classes)`` of raw images, normalised exactly as in training.

        Args:
            images: ``(N, C, H, W)`` or one ``(C, H, W)`` image, a tensor or numpy array, uint8 or float in
                the data set's own range (0..255 for image files and CIFAR, 0..16 for digits), at the
                student's ``image_size``.
        """
        p = self.preprocessing
        x = torch.as_tensor(images)
        x = x.unsqueeze(0) if x.dim() == 3 else x
        want = (p["in_channels"], p["image_size"], p["image_size"])
        if x.dim() != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"images: shape {tuple(x.shape)} is not (N, {', '.join(map(str, want))}); the student "
                             f"takes {want[1]}x{want[2]} images with {want[0]} channel(s), as its data set holds them")
        with torch.no_grad():
            return self.student.eval()(Normalize(p["mean"], p["std"], p["scale"])(x))


def checkpoint_config(trainer_state: Union[str, Path]) -> TrialConfig:
    """The ``TrialConfig`` a trial checkpoint (``trainer_state.pt``) was trained with."""
    state = torch.load(trainer_state, map_location="cpu", weights_only=True)
    if "config" not in state:
        raise ValueError(f"checkpoint: {trainer_state} was written by an older srrl-tune without its config")
    return TrialConfig.from_dict(state["config"])


def export_student(trainer_state: Union[str, Path], splits: Any, teacher_channels: Optional[int],
                   metrics: Dict[str, float], out: Union[str, Path]) -> Path:
    """Write the compact student file (weights + everything needed to rebuild and feed them) from a trial checkpoint.

    Args:
        trainer_state: the ``trainer_state.pt`` of a trial checkpoint (``Trainer.state_dict()``); its
            ``config`` (the trial's full TrialConfig) goes along.
        splits: the sweep's ``DataSplits``: its class count, channels, image size and normalisation go along.
        teacher_channels: C_T, to rebuild the connector (None when the trial used no teacher).
        metrics: numbers to keep beside the weights (e.g. ``test_acc``).
    """
    state = torch.load(trainer_state, map_location="cpu", weights_only=True)
    config = checkpoint_config(trainer_state)
    preprocessing = {"mean": list(splits.mean), "std": list(splits.std), "scale": float(splits.scale),
                     "image_size": int(splits.image_size), "in_channels": int(splits.in_channels)}
    payload = {"student": state["learnable"]["student"], "connector": state["learnable"]["connector"],
               "config": config.to_dict(), "num_classes": int(splits.num_classes), "in_channels": int(splits.in_channels),
               "teacher_channels": teacher_channels, "metrics": {k: float(v) for k, v in metrics.items()},
               "preprocessing": preprocessing}
    out = Path(out)
    atomic_write(out, lambda f: torch.save(payload, f))
    return out


def load_student(source: Union[str, Path], tracking_uri: Optional[str] = None) -> StudentBundle:
    """Rebuild a student (and its connector) from a local file or an MLflow ``runs:/`` artifact URI."""
    if str(source).startswith(("runs:/", "mlflow-artifacts:", "models:/")):
        import mlflow

        source = mlflow.artifacts.download_artifacts(artifact_uri=str(source), tracking_uri=tracking_uri)
    payload: Dict[str, Any] = torch.load(source, map_location="cpu", weights_only=True)
    if "preprocessing" not in payload:
        raise ValueError(f"student: {source} was exported by an older srrl-tune without its preprocessing; "
                         "export it again with `python -m analysis sync`")
    cfg = TrialConfig.from_dict(payload["config"])
    student = build_model(cfg.student, payload["num_classes"], in_channels=payload["in_channels"])
    student.load_state_dict(payload["student"])
    connector = None
    if payload["teacher_channels"] is not None and cfg.needs_teacher:
        connector = build_connector(cfg.connector, student.feature_channels, payload["teacher_channels"])
        connector.load_state_dict(payload["connector"])
        connector.eval()
    return StudentBundle(student.eval(), connector, cfg, dict(payload["metrics"]), dict(payload["preprocessing"]))
