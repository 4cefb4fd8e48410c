#!/usr/bin/env python
"""Launch an SRRL hyperparameter sweep: Ray Tune trials, Optuna proposals, ASHA early stopping, MLflow records.

With no arguments it runs the embedded default: the `recipe` space (alpha, beta, lr) on scikit-learn's digits
(teacher trained once and cached), TPE + ASHA, then the confirmation stage and its verdict, a few minutes on 2 CPUs.
``--sync DIR`` and ``--confirm-sweep NAME`` write to an existing sweep's records (README, "Reading the results").
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
from typing import Any, Dict, List, Optional

# light: run_search reports bad input before it pays torch's and Ray's imports (docs/architecture.md)
from tuner.core import metrics as M
from tuner.core.config import ConfigError, TrialConfig, fmt_param, load_yaml
from tuner.core.sweep_config import SweepConfig
from tuner.core.faults import NoSpace
from tuner.core.uri import redact
from tuner.core.verdict import format_verdict
from tuner.tracking.schema import RUNS_VIEW

# flag -> help; the YAML key is the flag without dashes (underscores for dashes)
SWEEP_FLAGS = {
    "space": "named search space, a preset (see --list-spaces; default: recipe, or none when a search: mapping is given)",
    "searcher": "tpe | random | gp | grid | nsga2 (default: the space's)",
    "scheduler": "asha | fifo (default: the space's; multi-objective spaces use fifo)",
    "num_samples": "trials to run (exhaustive spaces such as ablation run their whole grid)",
    "seeds": "seeds per cell of exhaustive spaces (ablation)",
    "max_concurrent": "trials at once (default: as many as the cluster's resources hold)",
    "cpus_per_trial": "CPUs per trial (also its torch threads)",
    "gpus_per_trial": "GPUs per trial; 0.25 packs four trials on one GPU",
    "workers_per_trial": "Ray Train workers per trial (DDP; the global batch is split across them)",
    "cpus_per_worker": "CPUs per worker of a multi-worker trial (default: --cpus-per-trial)",
    "gpus_per_worker": "GPUs per worker of a multi-worker trial (default: --gpus-per-trial)",
    "address": "Ray cluster to join: 'auto' or host:port (default: a fresh local Ray)",
    "storage_path": "where Tune keeps trial checkpoints; shared storage (NFS, s3://, gs://) on a cluster",
    "tracking_uri": "MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)",
    "experiment": "MLflow experiment (default: the sweep name)",
    "name": "sweep name (default: <space>-<dataset>-<time>)",
    "study_name": "continue this existing Optuna study on purpose",
    "optuna_storage": "SQLAlchemy URL of the Optuna study (default: sqlite beside the MLflow store)",
    "seed": "seed of the searcher and of every trial",
    "grace_period": "ASHA: epochs every trial gets before the first cut (default 0.4 x epochs, where the rung ranks well)",
    "reduction_factor": "ASHA reduction factor",
    "max_failures": "retries of a trial whose worker died or stalled",
    "stall_timeout": "stop a trial that sends no result for this many seconds, and retry it (default: 10 x its "
                     "slowest epoch, at least 600; 0: never)",
    "top_k": "best trials whose checkpoints are kept as MLflow artifacts",
    "race": "race configurations over up to N seeds inside the search: more seeds for what holds up, drop what "
            "loses on shared seeds (0: off)",
    "confirm": "confirmation stage: re-run the search's best K over seeds beside the reference point and CE-only (0: off)",
    "confirm_seeds": "seeds per configuration in the confirmation stage",
}
TRIAL_FLAGS = {
    "dataset": "data set (digits, cifar10, cifar100, imagefolder, imagenet, synthetic)",
    "data_dir": "folder with the data set files (cifar*, imagefolder, imagenet)",
    "image_size": "imagefolder, imagenet: pixels of the model's input (default 32, 224)",
    "class_subset": "imagefolder, imagenet: train on this many classes (the same ones in every sweep)",
    "train_fraction": "imagefolder, imagenet: a fixed stratified share of the train split, e.g. 0.1",
    "teacher": "teacher architecture (see --list-models)",
    "teacher_checkpoint": "load the teacher's weights from this file instead of training it",
    "student": "student architecture (see --list-models)",
    "connector": "connector design",
    "alpha": "feature-matching weight (fixed unless the space searches it)",
    "beta": "softmax-regression weight (fixed unless the space searches it)",
    "epochs": "epochs per trial (ASHA's max_t)",
    "teacher_epochs": "epochs to train the teacher when it is not cached",
}


def build_parser() -> argparse.ArgumentParser:

    p = argparse.ArgumentParser(prog="run_search.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", metavar="YAML", help="flat YAML of sweep and trial fields; flags override it")
    # a flag's own value is None (unset: the YAML or the config's default applies); its help shows that default
    defaults = {f.name: f.default for cls in (SweepConfig, TrialConfig) for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING}
    for key, text in {**SWEEP_FLAGS, **TRIAL_FLAGS}.items():
        if "default" not in text and defaults.get(key) is not None:
            text = f"{text} (default: {defaults[key]})"
        p.add_argument("--" + key.replace("_", "-"), dest=key, metavar=key.upper(), help=text)
    p.add_argument("--warm-start", action="append", dest="warm_start", metavar="EXPERIMENT",
                   help="seed the study with this earlier sweep's confirmed (else best) point; repeatable")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any other TrialConfig field, e.g. --set lr=0.01")
    p.add_argument("--search", action="append", default=[], metavar="FIELD=KIND:A,B",
                   help="search this field too (over the space's): KIND loguniform | uniform | int | choice, e.g. "
                        "--search lr=loguniform:0.01,0.5, --search connector=choice:conv1x1_bn,linear; FIELD=fixed "
                        "takes it out; repeatable")
    p.add_argument("--resume", metavar="PATH", help="continue the interrupted sweep in this folder")
    p.add_argument("--sync", metavar="SWEEP_DIR", help="backfill MLflow (--experiment, --tracking-uri) from the Tune files of "
                                                       "this sweep folder (after a tracking outage); end the sweep if it is over")
    p.add_argument("--confirm-sweep", metavar="EXPERIMENT", help="run the confirmation stage of this finished sweep "
                                                                 "(one that ran with --confirm 0): --confirm K configurations "
                                                                 "x --confirm-seeds S seeds; print the verdict")
    p.add_argument("--smoke", action="store_true", help="a tiny, fast version of whatever was asked")
    p.add_argument("--list-spaces", action="store_true", help="print the named search spaces as YAML to copy and exit")
    p.add_argument("--list-models", action="store_true", help="print the model zoo and exit")
    return p


def _collect(args: argparse.Namespace) -> Dict[str, Any]:
    data: Dict[str, Any] = load_yaml(args.config) if args.config else {}
    data.update({k: v for k, v in vars(args).items() if k in SWEEP_FLAGS or k in TRIAL_FLAGS if v is not None})
    if args.warm_start:
        data["warm_start"] = args.warm_start
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"set: {item!r} must look like FIELD=VALUE")
        data[key.strip()] = value.strip()
    if args.search:  # laid over the YAML's search: mapping if it has one, else over the (default) preset
        from search_spaces.declared import parse_flag
        from search_spaces.presets import DEFAULT_SPACE

        search = data.get("search") or {}
        if isinstance(search, dict):  # else SweepConfig refuses the YAML's search: in one line
            if not search and not data.get("space"):
                data["space"] = DEFAULT_SPACE
            data["search"] = {**search, **dict(parse_flag(item) for item in args.search)}
    if args.smoke:
        data["smoke"] = True
    return data


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_spaces:
        from search_spaces import declaration_yaml, get_space, list_spaces

        print("# Copy a search: block into your sweep YAML (or give --search FIELD=KIND:A,B) and edit it.\n"
              "# Bounds may be relative to the base config: base/4, base*8. Default space: recipe.\n")
        print("\n".join(declaration_yaml(get_space(n)) for n in list_spaces()))
        return 0
    if args.list_models:
        from tuner.core.catalog import list_models, model_info  # the names and facts alone: no torch

        for name in list_models():
            info = model_info(name)
            print(f"{name:<16} {info['family']:<9} native input {info['input_size']}x{info['input_size']}")
        return 0

    if args.sync or args.confirm_sweep:
        return _records_command(args)
    try:
        if not args.resume:  # every field's check first: a bad value costs no torch or Ray import
            sweep, base = SweepConfig.split(_collect(args))
        from tuner.driver.prepare import check_space, smoke

        if args.resume:
            from tuner.driver.sweep_file import load_for_resume  # pyarrow's file systems: not for a refused space

            sweep, base = load_for_resume(args.resume, _resume_changes(args))
        else:
            check_space(sweep, base)
            if sweep.smoke:
                shrunk = smoke(sweep, base)
                print(_shrank((sweep, base), shrunk))
                sweep, base = shrunk
        from tuner.driver.sweep import run_sweep  # Ray Tune's import (~1.5 s) only once the space is known good

        try:
            result = run_sweep(sweep, base, resume=bool(args.resume))
        finally:
            _stop_ray()
    except FileNotFoundError as e:
        print(f"error: {_missing_file(e)}", file=sys.stderr)
        return 2
    except (ConfigError, ConnectionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NoSpace as e:
        print(_no_space_line(e), file=sys.stderr)
        return 1
    print_summary(result)
    if result.fault is not None:
        print("\n" + _no_space_line(result.fault), file=sys.stderr)
        return 1
    if result.interrupted:
        print(f"\ninterrupted: {result.note}; continue it with:\n  python run_search.py --resume {_q(redact(result.path))}",
              file=sys.stderr)
        return 130
    if result.failed:  # exit 3: not bad input (2), not interrupted (130); README, "When things go wrong"
        print(f"\nerror: {result.failed}", file=sys.stderr)
        return 3
    return 0


def _records_command(args: argparse.Namespace) -> int:
    """``--sync`` and ``--confirm-sweep``: the driver's commands that write to a sweep that exists already."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is the command's own line
    try:
        if args.sync:
            from tuner.driver.sync import sync_sweep

            print(sync_sweep(args.experiment, args.sync, args.tracking_uri).line())
            return 0
        from tuner.driver.confirm_later import confirm_sweep

        given = {k: _count(f, v) for k, f, v in (("top", "confirm", args.confirm),
                                                  ("seeds", "confirm_seeds", args.confirm_seeds)) if v is not None}
        try:
            confirm_sweep(experiment=args.confirm_sweep, tracking_uri=args.tracking_uri, **given)  # prints the verdict
        finally:
            _stop_ray()
        return 0
    except (ValueError, ConnectionError) as e:  # ConfigError is a ValueError
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


def _resume_changes(args: argparse.Namespace) -> Dict[str, Any]:
    """What the flags given with ``--resume`` change (``RESUME_FIELDS``: a moved folder's stores, a confirmation
    stage widened); any other flag is refused in one line, not ignored."""
    from tuner.driver.sweep_file import RESUME_FIELDS, SWEEP_FILE

    given = {k: v for k, v in vars(args).items() if (k in SWEEP_FLAGS or k in TRIAL_FLAGS) and v is not None}
    others = [k for k in given if k not in RESUME_FIELDS] + [k for k in ("config", "set", "search", "warm_start", "smoke")
                                                            if getattr(args, k)]
    if others:
        allowed = ", ".join("--" + k.replace("_", "-") for k in RESUME_FIELDS)
        raise ConfigError(f"resume: --{others[0].replace('_', '-')} cannot change a sweep being resumed (its settings are "
                          f"the {SWEEP_FILE} in its folder); with --resume only {allowed} apply")
    return {k: _count(k, v) if k in ("confirm", "confirm_seeds") else v for k, v in given.items()}


def _count(field: str, value: str) -> int:
    """A flag's whole positive number, or the one-line refusal that names it."""
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1 or str(n) != value.strip():
        raise ConfigError(f"{field}: must be a whole number >= 1, got {value!r}")
    return n


def _stop_ray() -> None:
    """Shut Ray down before the last lines: its workers' output, forwarded late, would otherwise follow them."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _missing_file(e: FileNotFoundError) -> str:
    """A missing file's error with its path; with none, the one file every process has: its working directory."""
    import os
    import traceback

    if e.filename is not None:
        return f"{e.strerror or 'no such file'}: {e.filename}"
    if "Errno" not in str(e):  # this package's own (a data set not found ...): they name the field and the path
        return str(e)
    try:
        os.getcwd()
    except FileNotFoundError:
        return ("the working directory was removed while the sweep ran (a Ray job's working_dir is unpacked "
                "again under a running driver); pass --storage-path and --tracking-uri outside it")
    where = traceback.extract_tb(e.__traceback__)[-1]
    return f"{e} (in {where.filename}:{where.lineno})"


def _shrank(asked: Any, shrunk: Any) -> str:
    """What ``--smoke`` changed of what was asked, field by field (the same code paths run, smaller)."""
    changes = [f"{k} {a[k]} -> {b[k]}" for before, after in zip(asked, shrunk)
               for a, b in [(before.to_dict(), after.to_dict())] for k in a if a[k] != b[k]]
    return "smoke: " + (", ".join(changes) if changes else "nothing to shrink")


def _no_space_line(fault: Any) -> str:
    """The one line a full disk ends in: where, and the command that continues (or restarts) the sweep."""
    then = (f"continue with: python run_search.py --resume {_q(redact(fault.resume))}" if fault.resume
            else "run the same command again (the sweep had not started)")
    return f"error: {fault}, then {then}"


def print_summary(result: Any, top: int = 10) -> None:
    """Leaderboard of the best trials and the commands to look further."""
    from tuner.core.config import RACE
    from tuner.core.ranking import by_config

    raced = any(r.get("origin") == RACE for r in result.rows)
    rows = by_config(result.rows)  # a raced search: one row per configuration, its mean over seeds
    params = [k for k in dict.fromkeys(k for r in rows for k in r.get("params", {})) if k != "seed"]  # declared order
    keys = list(dict.fromkeys(["arm", "alpha", "beta", *params, "seed"]))
    rows = [{**r, **{k: r.get("params", {}).get(k) for k in params if k not in r}} for r in rows]
    searched = [k for k in keys if len({str(r.get(k)) for r in rows}) > 1 or k in ("alpha", "beta")]
    origin = ["origin"] if any(r.get("origin") for r in rows) else []
    if "student" in searched:  # students differ in cost: show it beside the score
        searched.append(M.STUDENT_MACS)
    trials = result.rows
    print(f"\nSweep {result.sweep.name}: {len(trials)} trials, "
          + ", ".join(f"{sum(r['status'] == s for r in trials)} {s}" for s in
                      (M.FINISHED, M.STOPPED_EARLY, M.DIVERGED, M.ERRORED, M.STALLED, M.INTERRUPTED, M.PENDING)
                      if s in (M.FINISHED, M.STOPPED_EARLY) or any(r["status"] == s for r in trials))
          + f"; ranked by {M.RANK_VAL_ACC}, trials that ran every epoch first"
          + (f"; {len(rows)} configurations raced over up to {result.sweep.race} seeds: most seeds first, each "
             "value a mean over its seeds" if raced else ""))
    seeds = ["seeds"] if raced else []  # how many seeds stand behind each number
    table = [[str(i)] + ["-" if r.get(k) is None else fmt_param(r[k]) for k in searched] + [_fmt(r.get(k)) for k in origin]
             + [r["status"], str(r["epochs"])] + [str(r["seeds"]) for _ in seeds]
             + [_fmt(r[M.RANK_VAL_ACC]), _fmt(r.get(M.TEST_ACC))]
             for i, r in enumerate(rows[:top], 1)]
    _table(["#"] + searched + origin + ["status", "epochs"] + seeds + [M.RANK_VAL_ACC, "test_acc"], table)
    if result.verdict is not None:
        print("\n" + format_verdict(result.verdict))
    elif result.note and not result.interrupted:
        print(f"\nNo confirmation: {result.note}")
    print("\nLook further:")
    # every printed command is shell-quoted: a path with a space pastes as one argument
    print(f"  python -m analysis report --experiment {_q(result.experiment)} --tracking-uri {_q(redact(result.tracking_uri))}")
    # one worker answers in ~7 s on 2 CPUs where the default four take 12-18 s (docs/tracking.md)
    print(f"  mlflow ui --workers 1 --backend-store-uri {_q(redact(result.tracking_uri))}      # experiment {result.experiment!r}")
    if result.experiment_id is not None:  # MLflow 3.17 opens its GenAI view unless told otherwise (docs/tracking.md)
        print(f"    then open http://127.0.0.1:5000/#/experiments/{result.experiment_id}/runs?workflowType=machine_learning"
              f"&viewStateShareKey={RUNS_VIEW}")
    if result.optuna_storage:
        print(f"  optuna-dashboard {_q(redact(result.optuna_storage))}      # study {result.study_name!r}")
    print(f"  python run_search.py --resume {_q(redact(result.path))}      # continue it if it was interrupted")


def _q(text: str) -> str:
    return shlex.quote(str(text))


def _table(header: List[str], rows: List[List[str]]) -> None:
    widths = [max(len(h), *(len(c[j]) for c in rows)) if rows else len(h) for j, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for cells in rows:
        print("  ".join(c.rjust(w) for c, w in zip(cells, widths)))


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) >= 1e5:  # MACs, parameter counts
        return f"{v:.3g}"
    if isinstance(v, float):
        return f"{v:.2f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3g}"
    return str(v)


if __name__ == "__main__":
    from tuner.core.process import exit_now

    exit_now(main())  # less the interpreter's teardown: ~3 s of CPU (docs/architecture.md, "How a command ends")
