"""The Tune callback that turns a full disk into a stopped, resumable sweep (docs/architecture.md, "Faults");
the rules it applies are ``tuner.core.faults``'s."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ray.tune import Callback

from tuner.core import faults

__all__ = ["StopOnNoSpace"]


class StopOnNoSpace(Callback):
    """Tune callback (driver): a trial that failed on a full disk, or a full disk under Tune's own state
    sync, stops the sweep (``faults.stop_sweep``). ``places``: ``{field: local folder}`` (``faults.places_of``)."""

    def __init__(self, places: Mapping[str, str]) -> None:
        self.places = dict(places)

    def _check_trial(self, trial: Any) -> None:
        path = getattr(trial, "error_file", None)  # the driver's local copy: the storage may be the full disk
        try:
            text = Path(path).read_text(errors="replace") if path else ""
        except OSError:
            text = ""
        if faults.is_no_space(text):
            faults.stop_sweep(faults.no_space(text, self.places, default_field="storage_path"))

    def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self._check_trial(trial)

    def on_trial_recover(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
        self._check_trial(trial)  # a retry would fail the same way

    def on_step_end(self, iteration: int, trials: Any, **info: Any) -> None:
        if faults.noted() is not None:  # Tune's state sync (this process) hit a full disk
            faults.stop_sweep(faults.no_space(f"'{faults.noted()}'", self.places, default_field="storage_path"))
