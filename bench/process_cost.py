"""Sweep process cost: the CPU every process of a small local sweep spends, with and without Ray's idle workers.

``python run_search.py`` on digits, 2 trials of 3 epochs, FIFO, no confirmation, its own local Ray; each
process of the driver's tree is polled (psutil) until the driver exits. Ours: the CPU seconds of the
whole tree as the driver runs it (``RAY_prestart_worker_first_driver=0``, set by ``tuner/driver/sweep_build.py``).
Baseline: the same sweep with Ray's default, an idle worker started per CPU for the first driver (Tune's trial
actors never use them: each is started with a runtime env those workers lack). The runs alternate; beside the
row, the CPU of each kind of process in our runs: what a test or a user pays per sweep before any training.

``python -m bench.process_cost [--quick]``
"""
from __future__ import annotations

import collections
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import psutil

from bench._common import Row, scratch_dir

SCENARIO = "sweep process CPU"
REPO = Path(__file__).resolve().parents[1]
ARGS = ("--name", "pc", "--confirm", "0", "--num-samples", "2", "--epochs", "3", "--teacher-epochs", "2",
        "--scheduler", "fifo", "--max-concurrent", "2")


def _cmdline(proc: psutil.Process) -> str:
    """A process's command line (a Ray worker's is its title, ``ray::ImplicitFunc ...``), or "" once it is gone."""
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def _kind(cmd: str) -> str:
    """What a process is: the driver, a trial actor, an idle worker, or one of Ray's own."""
    if "run_search.py" in cmd:
        return "driver"
    if cmd.startswith("ray::"):
        return {"ray::ImplicitFunc": "trial actors", "ray::IDLE": "idle workers"}.get(cmd.split()[0], "Ray's agents")
    return "Ray's agents" if "python" in cmd.split()[0].rsplit("/", 1)[-1] else "Ray's servers (C++)"


def _sweep(folder: Path, prestart: str) -> Dict[str, float]:
    """CPU s per kind of process of one sweep run in ``folder``."""
    folder.mkdir(parents=True)
    ray_tmp = tempfile.mkdtemp(prefix="rp", dir="/tmp")  # short: Ray's socket paths must stay under 107 characters
    env = {**os.environ, "RAY_prestart_worker_first_driver": prestart, "RAY_TMPDIR": ray_tmp,
           "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(REPO)}
    log = folder / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen([sys.executable, str(REPO / "run_search.py"), *ARGS], cwd=folder, env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
    seen: Dict[int, Tuple[float, str]] = {}
    root = psutil.Process(driver.pid)
    while driver.poll() is None:
        with contextlib.suppress(psutil.Error):
            for proc in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    cpu, cmd = sum(proc.cpu_times()[:2]), _cmdline(proc)
                    if cmd:  # a zombie's command line is empty: its last reading stands
                        seen[proc.pid] = (max(cpu, seen.get(proc.pid, (0.0, ""))[0]), cmd)
        time.sleep(0.1)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    if driver.returncode != 0:
        raise RuntimeError(f"the sweep exited {driver.returncode}: {log.read_text()[-500:]}")
    kinds: Dict[str, float] = collections.defaultdict(float)
    for cpu, cmd in seen.values():
        kinds[_kind(cmd)] += cpu
    return dict(kinds)


def run(quick: bool) -> Row:
    repeats = 1 if quick else 3
    runs: Dict[str, List[Dict[str, float]]] = {"0": [], "1": []}
    with scratch_dir("process-cost") as tmp:
        for i in range(repeats):
            for prestart in ("1", "0"):  # alternating: a slow spell of the machine falls on both
                runs[prestart].append(_sweep(Path(tmp) / f"{prestart}-{i}", prestart))
    total = {k: statistics.median(sum(r.values()) for r in rs) for k, rs in runs.items()}
    row = Row(SCENARIO, total["0"], total["1"], "s", "<= 1.0",
              note=f"CPU s of a local 2-trial digits sweep's processes, median of {repeats}: Ray's idle workers off "
                   "(ours) / Ray's default")
    kinds = sorted({k for r in runs["0"] + runs["1"] for k in r})
    for kind in kinds:
        ours, base = (statistics.median(r.get(kind, 0.0) for r in runs[k]) for k in ("0", "1"))
        row.beside.append(Row(kind, ours, base, "s", None, note=f"CPU s of the {kind}, median of {repeats}"))
    return row


if __name__ == "__main__":
    from bench.__main__ import main

    sys.exit(main(["--only", "process_cost", *sys.argv[1:]]))
