"""Shared by every scenario: the ``Row`` it returns, torch threads, the digits preset and teacher, Ray, temp folders."""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

__all__ = ["Row", "skipped", "torch_threads", "digits_base", "digits_teacher", "ensure_ray", "quiet",
           "scratch_dir", "runs_main", "train_curves", "train_pool"]


@dataclass
class Row:
    """One line of the table: our figure against a baseline measured in the same run.

    ``ratio`` is always ``ours / baseline``; ``target`` is a comparison on it (``">= 0.95"``) or
    ``None`` for a figure shown for information beside a scenario (``met`` is then ``None``).
    """

    scenario: str
    ours: Optional[float]
    baseline: Optional[float]
    unit: str
    target: Optional[str]
    note: str = ""
    name: str = ""  # the module that produced it (what --only takes); filled in by bench.__main__
    ratio: Optional[float] = None
    met: Optional[bool] = None
    skipped: bool = False
    error: Optional[str] = None
    seconds: float = 0.0  # wall time of the scenario
    beside: List["Row"] = field(default_factory=list)  # information rows printed under this one

    def __post_init__(self) -> None:
        if self.ratio is None and self.ours is not None and self.baseline:
            self.ratio = self.ours / self.baseline
        if self.met is None and self.target and self.ratio is not None and math.isfinite(self.ratio):
            op, value = self.target.split()
            self.met = self.ratio >= float(value) if op == ">=" else self.ratio <= float(value)

    def to_dict(self) -> Dict[str, Any]:
        out = asdict(self)
        out.pop("beside")
        return out


def skipped(scenario: str, unit: str, target: str, why: str) -> Row:
    return Row(scenario, None, None, unit, target, note=why, skipped=True)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads (``Trainer`` sets them process-wide); restore after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def digits_base(quick: bool, **changes: Any) -> "Any":
    """The embedded default preset (``configs/digits.yaml``) as a TrialConfig, on CPU, one thread.

    Quick mode trains its teacher for 8 epochs instead of 30; every digits scenario of a run uses
    the same teacher recipe, so the teacher is trained (or loaded from ``SRRL_CACHE_DIR``) once.
    """
    from tuner.core.sweep_config import SweepConfig

    base = SweepConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "digits.yaml")[1]
    fixed = {"device": "cpu", "threads": 1, **({"teacher_epochs": 8} if quick else {})}
    return base.replace(**{**fixed, **changes})


def digits_teacher(base: Any) -> Tuple[Any, Any]:
    """``(splits, teacher)`` for ``base``: the teacher from the cache, or trained now (one-time, not timed)."""
    from tuner.core.teacher import ensure_teacher
    from tuner.core.trainer import load_splits

    splits = load_splits(base)
    with torch_threads(1):
        teacher = ensure_teacher(base, splits)
    return splits, teacher


def ensure_ray() -> None:
    """A local Ray with every CPU, unless one is up already (``bench.__main__`` starts it once)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count(), log_to_driver=False)


def fit_in_tune(trainable: Any, storage: Path, name: str, num_to_keep: int, **tune_config: Any) -> Any:
    """``tune.Tuner(...).fit()`` on ``storage`` as a sweep runs it (the same Tune settings, storage
    filesystem, logger callbacks and checkpoint retention); ``tune_config`` takes ``param_space`` and
    ``TuneConfig`` fields. Raises on a failed trial."""
    from ray import tune

    from tuner.driver import sweep_build
    from tuner.driver.storage import SweepFolder

    sweep_build.tune_env()
    storage_path, fs = SweepFolder.of(str(storage)).for_tune()
    param_space = tune_config.pop("param_space", {})
    grid = tune.Tuner(trainable, param_space=param_space, tune_config=tune.TuneConfig(**tune_config),
                      run_config=tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=fs, verbose=0,
                                                callbacks=sweep_build.callbacks(),
                                                checkpoint_config=tune.CheckpointConfig(num_to_keep=num_to_keep))).fit()
    for result in grid:
        if result.error:
            raise RuntimeError(f"a Tune trial failed: {result.error}")
    return grid


def quiet(_: str) -> None:
    """A ``log`` callback that drops the message (the table is the output)."""


def scratch_dir(prefix: str) -> tempfile.TemporaryDirectory:
    """A temporary folder for one scenario's stores (MLflow, Optuna, Ray storage); removed afterwards."""
    return tempfile.TemporaryDirectory(prefix=f"srrl-bench-{prefix}-")



def runs_main(doc: str, run: Any, report: Any, workers: int, seeds: int = 5) -> None:
    """The command line of a bench that trains runs over seeds and reports on them: ``--config``, ``--seeds``,
    ``--workers``; ``--json FILE`` keeps the raw runs (those it already holds are not trained again; it is
    rewritten as runs end, so a killed bench continues) and ``--from FILE`` reports on them without training.
    ``run(config, seeds, workers, done, save)`` returns every run; ``save(runs)`` keeps what it has so far."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--config", default="configs/digits.yaml")
    p.add_argument("--seeds", type=int, default=seeds)
    p.add_argument("--workers", type=int, default=workers)
    p.add_argument("--json", help="write the raw per-run histories here (runs it already holds are not trained again)")
    p.add_argument("--from", dest="src", help="read raw histories from this file instead of training")
    args = p.parse_args()
    if args.src:
        runs = json.loads(Path(args.src).read_text())
    else:
        done = json.loads(Path(args.json).read_text()) if args.json and Path(args.json).exists() else []

        def save(rows: List[Dict[str, Any]]) -> None:
            if args.json:
                Path(args.json).write_text(json.dumps(rows))

        runs = run(args.config, args.seeds, args.workers, done, save)
        save(runs)
    report(runs)


def train_curves(job: Dict[str, Any]) -> Dict[str, Any]:
    """One run as a sweep's trial trains it: ``job["cfg"]`` distilled from ``job["base"]``'s teacher, the epochs
    through ``tuner.driver.trainable.run_epochs``. Returns ``job["label"]`` plus the seed, the val curve, the final test
    accuracy, the test curve where ``job["test_curve"]``, and ``diverged`` (the epoch, or None)."""
    from tuner.core import metrics as M
    from tuner.core.config import TrialConfig
    from tuner.core.teacher import ensure_teacher
    from tuner.driver.trainable import run_epochs
    from tuner.core.trainer import Trainer, load_splits

    cfg, base = TrialConfig.from_dict(job["cfg"]), TrialConfig.from_dict(job["base"])
    # the base recipe's teacher, as in a sweep: a teacher_lr left unset follows the student's lr, so a
    # changed recipe would otherwise train (and distil from) a teacher of its own
    teacher = ensure_teacher(base, load_splits(base), log=lambda _: None)
    trainer = Trainer(cfg, teacher.model, load_splits(cfg))
    out: Dict[str, Any] = {**job["label"], "seed": cfg.seed, "val": [], "test": None, "diverged": None}
    if job.get("test_curve"):
        out["test_curve"] = []

    def report(metrics: Dict[str, Any], _state: Any) -> None:
        if metrics[M.DIVERGED_KEY]:
            out["diverged"] = metrics[M.EPOCH]
            return
        out["val"].append(metrics[M.VAL_ACC])
        test = metrics.get(M.TEST_ACC)
        if job.get("test_curve"):
            out["test_curve"].append(test if test is not None else trainer.evaluate("test")[0])
        if test is not None:
            out["test"] = test

    run_epochs(trainer, {}, report)
    return out


def train_pool(jobs: List[Dict[str, Any]], base: Any, workers: int, done: List[Dict[str, Any]], every: int,
               save: Any) -> List[Dict[str, Any]]:
    """``train_curves`` over ``jobs`` in ``workers`` spawned processes, after ``done``; every ``every`` runs
    it prints progress and ``save``s the runs so far."""
    import multiprocessing as mp
    import time

    from tuner.core.teacher import ensure_teacher
    from tuner.core.trainer import load_splits

    ensure_teacher(base, load_splits(base), log=print)  # trained once, before the workers read the cache
    start, out = time.perf_counter(), list(done)
    with mp.get_context("spawn").Pool(workers) as pool:
        for i, row in enumerate(pool.imap_unordered(train_curves, jobs), 1):
            out.append(row)
            if i % every == 0 or i == len(jobs):
                save(out)
                print(f"{i}/{len(jobs)} runs, {time.perf_counter() - start:.0f} s", flush=True)
    return out
