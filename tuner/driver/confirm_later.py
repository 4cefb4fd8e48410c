"""Confirm a finished sweep later (one that ran with ``--confirm 0``): ``python run_search.py --confirm-sweep NAME``.

It continues the sweep's Tune experiment with the confirmation stage on, so it lives above the driver
(``tuner.driver.sweep``) and ``tuner.driver.confirm`` (the stage itself) alike.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

from tuner import tracking
from tuner.core.uri import redact
from tuner.core.config import ConfigError
from tuner.driver.sweep import run_sweep
from tuner.driver.sweep_file import load_sweep_dir
from tuner.tracking.read import resolve_uri
from tuner.core.verdict import Verdict, format_verdict

__all__ = ["confirm_sweep"]


def confirm_sweep(experiment: str, tracking_uri: Optional[str] = None, top: int = 2, seeds: int = 5,
                  log: Callable[[str], None] = print) -> Verdict:
    """Confirm a finished sweep later (one that ran with ``--confirm 0``): find its folder from its
    MLflow parent run, then continue it with the confirmation stage on. Returns the verdict."""
    uri = resolve_uri(tracking_uri)  # an existing store: a missing SQLite file is refused, not created
    tracking.check_tracking_uri(uri)
    client = tracking.client(uri)
    exp_id = tracking.experiment_id(uri, experiment)
    parents = tracking.sweep_parents(client, exp_id)
    if not parents:
        raise ConfigError(f"experiment: {experiment!r} holds no sweep run in {redact(uri)}")
    params = parents[-1].data.params
    location = params.get("sweep.storage_path"), params.get("sweep.name")
    if not all(location):
        raise ConfigError(f"experiment: the sweep run of {experiment!r} does not say where its folder is")
    path = location[0].rstrip("/") + "/" + location[1]
    if "***" in path:
        raise ConfigError(f"experiment: the sweep folder {path} was recorded without its credentials; "
                          "run `python run_search.py --resume <folder> --confirm K` instead")
    sweep, base = load_sweep_dir(path, field="experiment")
    sweep = dataclasses.replace(sweep, confirm=int(top), confirm_seeds=int(seeds), tracking_uri=uri)
    sweep.validate()
    if sweep.confirm < 1:
        raise ConfigError("confirm: needs at least 1 configuration")
    result = run_sweep(sweep, base, resume=True, log=log)
    if result.verdict is None:
        raise ConfigError(f"experiment: the sweep {sweep.name!r} cannot be confirmed ({result.note})")
    log("\n" + format_verdict(result.verdict))
    return result.verdict
