"""Checks a sweep passes before it writes anything: the Ray address answers, one trial fits on a node,
the study name is free. Each failure is one ``ConfigError`` line naming the field."""
from __future__ import annotations

import os
import socket
from typing import Any, Dict, List, Optional

from tuner.core.config import ConfigError
from tuner.core.sweep_config import SweepConfig
from tuner.core.sweep_config import worker_resources
from tuner.tracking import store_lock
from tuner.core.uri import check_sqlite_folder
from tuner.driver.workers import TRIAL_CPUS

__all__ = ["check_address", "check_fits", "check_fits_here", "check_study_name"]


def check_address(address: Optional[str]) -> None:
    """A Ray address that answers nothing is refused in seconds (``ray.init`` would wait 20-40 s)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"address: {address!r} is not 'auto' or host:port")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as e:
        raise ConfigError(f"address: nothing answers at {hostport} ({e.strerror or e}); start the cluster with "
                          "`ray start --head` or fix the address") from None


def check_fits(sweep: SweepConfig) -> None:
    """One trial must fit the cluster, or it stays PENDING forever: each of its workers' CPUs and GPUs on some
    node, and a multi-worker trial's workers all at once across the nodes."""
    import ray

    _check_nodes(sweep, [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")], "any node of the cluster has")


def check_fits_here(sweep: SweepConfig) -> None:
    """``check_fits`` for the local Ray a sweep without ``address`` starts, before it starts (seconds sooner):
    Ray gives it ``os.cpu_count()`` CPUs (fewer under a cgroup quota, which ``check_fits`` still catches)
    and the GPUs CUDA shows."""
    if sweep.address:
        return
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    _check_nodes(sweep, [{"CPU": float(os.cpu_count() or 1), "GPU": float(gpus)}], "this machine has")


def _check_nodes(sweep: SweepConfig, nodes: List[Dict[str, Any]], where: str) -> None:
    multi = sweep.workers_per_trial > 1
    cpus, gpus = worker_resources(sweep)
    asks = (("cpus_per_worker" if multi else "cpus_per_trial", "CPU", cpus),
            ("gpus_per_worker" if multi else "gpus_per_trial", "GPU", gpus))
    for field, key, asked in asks:
        most = max((float(r.get(key, 0)) for r in nodes), default=0.0)
        if asked > most:
            largest = f"the largest has {most:g} {key}s" if len(nodes) > 1 else f"{most:g} {key}s"
            raise ConfigError(f"{field}: {asked:g} is more than {where} ({largest}); allowed: "
                              + (f"(0, {most:g}]" if key == "CPU" else f"[0, {most:g}]"))
    if multi:
        slots = max((_worker_slots(nodes, host, asks) for host in range(len(nodes))), default=0)
        if slots < sweep.workers_per_trial:
            need = ", ".join(f"{sweep.workers_per_trial * asked:g} {key}s" for _, key, asked in asks if asked > 0)
            holds = "the cluster, whose nodes hold" if where.startswith("any node") else "this machine, which holds"
            raise ConfigError(f"workers_per_trial: {sweep.workers_per_trial} workers ({need}, and {TRIAL_CPUS:g} CPU for "
                              f"the trial) do not fit {holds} {slots} such workers at once; "
                              f"allowed: [1, {max(slots, 1)}]")


def _worker_slots(nodes: List[Dict[str, Any]], host: int, asks: Any) -> int:
    """Workers the nodes hold at once (each node: what its CPUs and GPUs both allow) beside a multi-worker
    trial's own ``TRIAL_CPUS`` on node ``host``."""
    total = 0
    for i, r in enumerate(nodes):
        free = {key: float(r.get(key, 0)) - (TRIAL_CPUS if i == host and key == "CPU" else 0.0) for _, key, _ in asks}
        total += min(int(max(free[key], 0.0) // asked) for _, key, asked in asks if asked > 0)
    return total


def check_study_name(sweep: SweepConfig, replace: bool = False) -> None:
    """A new sweep never continues an existing Optuna study by accident (only with --study-name); a study
    in which no trial ever ran is what a failed start left, or what a driver now setting up the same sweep
    made: with ``replace`` (only under the sweep's lock, when no other driver can be setting it up) it is
    deleted, to be made again."""
    import optuna

    if sweep.study_name or not sweep.optuna_storage:
        return
    path = check_sqlite_folder("optuna_storage", sweep.optuna_storage)
    if path is not None and not path.exists():
        return  # a storage not yet created holds no study (and opening it would create it)

    try:
        with store_lock(sweep.optuna_storage):  # opening a fresh SQLite storage creates its tables
            existing = optuna.study.get_all_study_names(sweep.optuna_storage)
            unstarted = sweep.name in existing and _never_ran(optuna.load_study(study_name=sweep.name,
                                                                                storage=sweep.optuna_storage))
    except Exception as e:
        raise ConfigError(f"optuna_storage: cannot open {sweep.optuna_storage!r} ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if unstarted:  # left by a start that failed before its first trial (a full disk): it holds nothing measured
        if replace:
            optuna.delete_study(study_name=sweep.name, storage=sweep.optuna_storage)
    elif sweep.name in existing:
        raise ConfigError(f"study_name: an Optuna study {sweep.name!r} already exists in {sweep.optuna_storage}; "
                          "pass --study-name to continue it on purpose, or pick another --name")


def _never_ran(study: Any) -> bool:
    """Only the enqueued starting points, none asked yet: what a sweep's set-up leaves before Tune starts."""
    import optuna

    return all(t.state == optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False))
