"""The verdict in the Optuna study, so optuna-dashboard shows the confirmed answer beside its single-seed "best
trial" (docs/tracking.md, "Finding the answer"): study user attributes and the study's note."""
from __future__ import annotations

import logging
from typing import Any

from tuner.core.uri import redact

__all__ = ["record_verdict"]

log = logging.getLogger(__name__)


def record_verdict(storage: str, study_name: str, verdict: Any, tracking_uri: str, parent_run_id: str,
                   experiment_id: str) -> None:
    """Study user attributes ``verdict``, ``recommended`` (label and params), ``confirmed`` (the role-named
    means, intervals and seeds), ``mlflow_parent_run`` and ``mlflow_tracking_uri``; the note: the verdict's
    Markdown and where its runs are. A study that cannot be written is reported, not raised: the sweep's
    records stand without it."""
    import optuna
    from optuna_dashboard import save_note

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
        rec = verdict.config(verdict.recommended)
        study.set_user_attr("verdict", verdict.sentence)
        if rec is not None:
            study.set_user_attr("recommended", {"label": rec.label, "params": rec.params})
        study.set_user_attr("confirmed", verdict.summary_metrics())
        study.set_user_attr("mlflow_parent_run", parent_run_id)
        study.set_user_attr("mlflow_tracking_uri", redact(tracking_uri))
        where = (f"\n\nThe confirmation's runs: MLflow experiment {experiment_id}, parent run `{parent_run_id}` in "
                 f"`{redact(tracking_uri)}`. The trials below are the search: one seed each, ranked by best_val_acc "
                 "(max over epochs); stopped trials are PRUNED at the epoch ASHA stopped them.")
        save_note(study, verdict.markdown(f"Study {study_name}") + where)
    except Exception as exc:  # noqa: BLE001 - a dashboard note must not fail a finished sweep
        log.warning("could not write the verdict to Optuna study %r: %s", study_name, exc)
