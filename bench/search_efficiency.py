"""Search efficiency: epochs TPE + ASHA spends to come within 0.5 points of the grid's best, against the grid.

All sweeps are ``run_sweep`` on the digits ``loss_weights`` space (2 trials at once, 1 CPU each).
The grid is ``--searcher grid`` (5 x 5 alpha, beta), FIFO, every trial for the full epochs; its
best ``best_val_acc`` minus 0.5 is the target and its total epochs the baseline. TPE + ASHA (with
``tuner.driver.search.StudySearch`` telling Optuna which trials ASHA pruned) and random + ASHA run with
the space's defaults for several sampler seeds. Epochs spent = the sum, over trials in start
order (from MLflow via ``analysis.runs.load_trials``), of the epochs each ran, up to and including
the first trial whose best val_acc reaches the target; a sweep that never reaches it counts all
its epochs and is reported as not reached. Ours = mean over seeds.

``python -m bench.search_efficiency [--quick]``
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, List, Tuple

from bench._common import Row, digits_base, digits_teacher, ensure_ray, quiet, scratch_dir
from tuner.tracking import default_tracking_uri

SCENARIO = "search efficiency"
CONCURRENT = 2
MARGIN = 0.5


def _sweep(name: str, searcher: str, scheduler: str, samples: int, seed: int, base: Any, folder: Path) -> Any:
    """The sweep's trials in start order (``analysis.runs.load_trials``)."""
    from analysis.runs import load_trials
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep

    sweep = SweepConfig(name=name, confirm=0, space="loss_weights", searcher=searcher, scheduler=scheduler, num_samples=samples,
                        max_concurrent=CONCURRENT, cpus_per_trial=1, storage_path=str(folder / "ray"),
                        tracking_uri=default_tracking_uri(str(folder)), seed=seed)
    result = run_sweep(sweep, base, log=quiet, verbose=0)
    trials = load_trials(result.experiment, result.tracking_uri)
    if len(trials) != samples:
        raise RuntimeError(f"sweep {name}: expected {samples} trials, MLflow holds {len(trials)}")
    return trials


def epochs_to_target(trials: Any, target: float) -> Tuple[int, bool]:
    """(epochs spent up to and including the first trial reaching ``target``, reached?); all epochs if never."""
    spent = 0
    for epochs, best in zip(trials["epochs_run"], trials["best_val_acc"].fillna(0.0)):
        spent += int(epochs)
        if best >= target:
            return spent, True
    return spent, False


def _searched(label: str, searcher: str, seeds: int, samples: int, target: float, grid_epochs: int, base: Any,
              folder: Path) -> Tuple[Row, int]:
    """The row of one searcher (mean epochs to the target over seeds) and how many seeds never reached it."""
    spent: List[int] = []
    missed = 0
    for seed in range(seeds):
        trials = _sweep(f"{searcher}-asha-s{seed}", searcher, "asha", samples, seed, base, folder)
        epochs, reached = epochs_to_target(trials, target)
        spent.append(epochs)
        missed += not reached
    reach = "reached by every seed" if not missed else f"NOT reached by {missed} of {seeds} seed(s) (all epochs counted)"
    row = Row(label, statistics.mean(spent), grid_epochs, "epochs", None,
              note=f"{samples} trials per sweep, seeds {list(range(seeds))}: {spent} epochs; target {reach}")
    return row, missed


def run(quick: bool) -> Row:
    epochs, seeds, samples = (4, 1, 12) if quick else (30, 3, 25)
    base = digits_base(quick, epochs=epochs)
    digits_teacher(base)
    ensure_ray()
    with scratch_dir("search") as tmp:
        folder = Path(tmp)
        grid = _sweep("grid", "grid", "fifo", 25, 0, base, folder)
        grid_best = float(grid["best_val_acc"].max())
        grid_epochs = int(grid["epochs_run"].sum())
        target = grid_best - MARGIN
        points = len({(a, b) for a, b in zip(grid["alpha"], grid["beta"])})
        tpe, missed = _searched(f"{SCENARIO} (TPE+ASHA)", "tpe", seeds, samples, target, grid_epochs, base, folder)
        rnd, _ = _searched(f"{SCENARIO}, random+ASHA", "random", seeds, samples, target, grid_epochs, base, folder)
    row = Row(SCENARIO, tpe.ours, grid_epochs, "epochs", "<= 0.30", met=False if missed else None,
              note=f"digits loss_weights, {epochs} epochs/trial; grid: {points} distinct (alpha, beta) points, best "
                   f"val_acc {grid_best:.2f}, target {target:.2f}; TPE+ASHA: {tpe.note}")
    row.beside.append(rnd)
    return row


if __name__ == "__main__":
    import sys

    from bench.__main__ import main

    sys.exit(main(["--only", "search_efficiency", *sys.argv[1:]]))
