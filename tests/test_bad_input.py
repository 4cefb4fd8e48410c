"""Every user-facing input is refused before Ray starts: one line naming the field, exit code 2, nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import run_search
from tests._helpers import run_search as run_cli
from tuner.core.models import build_model



def _files(tmp: Path) -> dict:
    (tmp / "bad.yaml").write_text("alpha: [1, 2\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "unknown.yaml").write_text("space: loss_weights\nalpah: 1\n")
    (tmp / "search.yaml").write_text("search:\n  alpha: {loguniform: [0.01, 100]}\n  connectr: {choice: [linear]}\n")
    (tmp / "points.yaml").write_text("search_points: [{alpha: 1000.0}]\n")
    (tmp / "evil.yaml").write_text("alpha: !!python/object/apply:os.system ['echo pwned']\n")
    (tmp / "cifar" / "cifar-10-batches-py").mkdir(parents=True)
    torch.save(build_model("digits_cnn2x8", 10, in_channels=1).state_dict(), tmp / "wrong.pt")
    (tmp / "afile").write_text("not a folder")
    # nested aliases under a known key: 9**9 strings if expanded; and a chain past the alias bound
    (tmp / "nested.yaml").write_text("lr_milestones: [&a [x, x, x, x, x, x, x, x, x]"
                                     + "".join(f", &{b} [{', '.join(['*' + a] * 9)}]" for a, b in zip("abcdefgh", "bcdefghi"))
                                     + "]\n")
    (tmp / "aliases.yaml").write_text("lr_milestones: [&a0 [0.5]" + "".join(f", &a{i} [*a{i - 1}]" for i in range(1, 120)) + "]\n")
    evil = tmp / "evil-cifar" / "cifar-10-batches-py"
    evil.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:  # unpickling runs os.system under pickle.load
        (evil / name).write_bytes(b"cos\nsystem\n(S'touch " + str(tmp / "pwned").encode() + b"'\ntR.")
    import sqlite3

    with sqlite3.connect(tmp / "half.db") as db:  # a store cut short: a full disk's torn write, a copy interrupted
        db.execute("create table t (x text)")
        db.executemany("insert into t values (?)", [("x" * 200,)] * 2000)
    (tmp / "half.db").write_bytes((tmp / "half.db").read_bytes()[: (tmp / "half.db").stat().st_size // 2])
    from tuner.core.config import TrialConfig
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep_file import SWEEP_FILE, sweep_yaml

    (tmp / "copied").mkdir()  # another sweep's settings file, copied into a folder of another name
    (tmp / "copied" / SWEEP_FILE).write_text(sweep_yaml(SweepConfig(name="lost", storage_path="/nowhere"), TrialConfig()))
    from tests._helpers import free_port

    return {"tmp": str(tmp), "port": str(free_port())}


CASES = [  # (argv, field, a fragment of what the line must say)
    (["--space", "loss_weight"], "space", 'did you mean "loss_weights"'),
    (["--searcher", "tpee"], "searcher", 'did you mean "tpe"'),
    (["--scheduler", "hyperband"], "scheduler", "choose from: asha, fifo"),
    (["--dataset", "cifar1000"], "dataset", 'did you mean "cifar100"'),
    (["--teacher", "resnet32x5"], "teacher", 'did you mean "resnet32x4"'),
    (["--student", "resnt8x4"], "student", 'did you mean "resnet8x4"'),
    (["--connector", "conv1x1"], "connector", "did you mean"),
    (["--num-samples", "0"], "num_samples", "out of range; allowed: [1, inf]"),
    (["--num-samples", "many"], "num_samples", "must be an integer, got 'many'"),
    (["--epochs", "-1"], "epochs", "out of range"),
    (["--cpus-per-trial", "0"], "cpus_per_trial", "out of range"),
    (["--gpus-per-trial", "-1"], "gpus_per_trial", "out of range"),
    (["--max-concurrent", "-2"], "max_concurrent", "out of range"),
    (["--reduction-factor", "1"], "reduction_factor", "out of range; allowed: (1, inf]"),
    (["--alpha", "-1"], "alpha", "out of range; allowed: [0, inf]"),
    (["--set", "lr=0"], "lr", "out of range; allowed: (0, inf]"),
    (["--set", "momentum=2"], "momentum", "out of range; allowed: [0, 1)"),
    (["--set", "nesterov=maybe"], "nesterov", "must be true or false"),
    (["--set", "lrr=0.1"], "lrr", 'unknown config field (did you mean "lr"?)'),
    (["--set", "lr"], "set", "must look like FIELD=VALUE"),
    (["--name", "bad name"], "name", "letters, digits"),
    (["--config", "{tmp}/missing.yaml"], "config", "does not exist"),
    (["--config", "{tmp}/bad.yaml"], "config", "is not valid YAML"),
    (["--config", "{tmp}/list.yaml"], "config", "must hold a mapping"),
    (["--config", "{tmp}/unknown.yaml"], "alpah", 'did you mean "alpha"'),
    (["--config", "{tmp}/evil.yaml"], "config", "is not valid YAML"),
    (["--dataset", "cifar100", "--teacher", "resnet32x4", "--student", "resnet8x4", "--data-dir", "{tmp}/nowhere"],
     "cifar100", "missing"),
    (["--dataset", "cifar10", "--teacher", "resnet32x4", "--student", "resnet8x4", "--data-dir", "{tmp}/cifar"],
     "cifar10", "data_batch_1"),
    (["--connector", "identity"], "connector", "cannot join student digits_cnn2x4 (4 channels) to teacher digits_cnn4x64"),
    (["--teacher-checkpoint", "{tmp}/absent.pt"], "teacher_checkpoint", "does not exist"),
    (["--teacher-checkpoint", "{tmp}/wrong.pt"], "teacher_checkpoint", "does not match architecture 'digits_cnn4x64'"),
    (["--tracking-uri", "file:///tmp/mlruns"], "tracking_uri", "sqlite:///"),
    (["--tracking-uri", "nonsense"], "tracking_uri", ""),
    (["--storage-path", "{tmp}/afile/sub"], "storage_path", "cannot write to"),
    (["--resume", "{tmp}/no-sweep-here"], "resume", "holds no sweep"),
    (["--optuna-storage", "notaurl"], "optuna_storage", "cannot open"),
    (["--config", "{tmp}/nested.yaml"], "lr_milestones", "must be a number, got ['x', 'x', 'x', 'x', ...]"),
    (["--config", "{tmp}/aliases.yaml"], "config", "uses more than 100 YAML aliases"),
    (["--dataset", "cifar10", "--teacher", "resnet20", "--student", "resnet20", "--data-dir", "{tmp}/evil-cifar"],
     "data_dir", "data_batch_1 is not a CIFAR python batch (UnpicklingError: it names os.system"),
    (["--confirm", "-1"], "confirm", "out of range; allowed: [0, inf]"),
    (["--confirm-seeds", "1"], "confirm_seeds", "out of range; allowed: [2, inf]"),
    (["--warm-start", "nowhere"], "warm_start", "no experiment named 'nowhere'"),
    (["--seed", "4294967296"], "seed", "out of range; allowed: [0, 4294967295]"),
    (["--set", "teacher_seed=-1"], "teacher_seed", "out of range; allowed: [0, 4294967295]"),
    (["--name", ""], "name", "must not be empty"),
    (["--experiment", " "], "experiment", "must not be empty"),
    (["--study-name", ""], "study_name", "must not be empty"),
    (["--address", "127.0.0.1:{port}"], "address", "nothing answers at 127.0.0.1:"),
    (["--address", "nowhere"], "address", "is not 'auto' or host:port"),
    (["--optuna-storage", "sqlite:///{tmp}/absent/optuna.db"], "optuna_storage", "does not exist"),
    (["--tracking-uri", "sqlite:///{tmp}/half.db"], "tracking_uri", "is not a readable MLflow store"),
    (["--set", "gpu_decode=true"], "gpu_decode", "decodes on the trial's GPU, and trials get none"),
    (["--workers-per-trial", "0"], "workers_per_trial", "out of range; allowed: [1, inf]"),
    (["--stall-timeout", "-1"], "stall_timeout", "out of range; allowed: [0, inf]"),
    (["--cpus-per-worker", "1"], "cpus_per_worker", "applies only with workers_per_trial > 1; for one-worker trials use cpus_per_trial"),
    (["--workers-per-trial", "2", "--gpus-per-worker", "-1"], "gpus_per_worker", "out of range"),
    (["--search", "lrr=loguniform:0.01,0.5"], "search.lrr", 'unknown config field (did you mean "lr"?)'),
    (["--search", "lr=uniform:0,0.5"], "search.lr", "out of range; allowed: (0, inf]"),
    (["--search", "lr=loguniform:0.5,0.1"], "search.lr", "low 0.5 must be below high 0.1"),
    (["--search", "lr=int:1,4"], "search.lr", "int does not fit a field of type float"),
    (["--search", "epochs=int:10,30"], "search.epochs", "is fixed for a whole sweep"),
    (["--search", "student=choice:digits_cnn2x8,resnt8x4"], "search.student", 'did you mean "resnet8x4"'),
    (["--search", "connector=choice:identity"], "search.connector", "'identity' does not fit student 'digits_cnn2x4'"),
    (["--search", "lr=sobol:1,2"], "search.lr", "kind 'sobol' is not allowed; choose from: loguniform"),
    (["--search", "lr"], "search", "must look like FIELD=KIND:A,B"),
    (["--space", "ablation", "--search", "lr=loguniform:0.01,0.1"], "search", "space 'ablation' is an exhaustive grid"),
    (["--config", "{tmp}/search.yaml"], "search.connectr", 'did you mean "connector"'),
    (["--config", "{tmp}/points.yaml"], "search_points", "alpha = 1000.0 is outside [0.01, 100]"),
    (["--resume", "{tmp}/copied", "--num-samples", "5"], "resume",
     "--num-samples cannot change a sweep being resumed (its settings are the srrl_sweep.yaml in its folder); with "
     "--resume only --tracking-uri, --optuna-storage, --address, --confirm, --confirm-seeds apply"),
    (["--resume", "{tmp}/copied", "--set", "lr=0.1"], "resume", "--set cannot change a sweep being resumed"),
    (["--resume", "{tmp}/copied"], "resume", "holds the settings of sweep 'lost', not of a folder named 'copied' "
                                             "(renamed, or another sweep's srrl_sweep.yaml copied in)"),
    (["--workers-per-trial", "40", "--set", "batch_size=64"], "batch_size",
     "64 cannot be split across workers_per_trial=40 workers; allowed: >= 80"),
]


@pytest.mark.parametrize("argv, field, says", CASES, ids=[" ".join(c[0])[:40] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, field, says, tmp_path, monkeypatch, capsys):
    fmt = _files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = set(os.listdir(tmp_path))
    import ray

    assert run_search.main([a.format(**fmt) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and len(err) < 2000
    assert err.startswith(f"error: {field}: ") and says in err, err
    assert set(os.listdir(tmp_path)) == before  # no mlflow.db, optuna.db or ray_results left behind
    assert not (tmp_path / "pwned").exists()  # data files are data, never code
    assert not ray.is_initialized()


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25


@pytest.mark.slow
def test_refusal_from_the_shell_is_quick_and_clean(tmp_path, env):
    """As a user sees it: a new process, exit code 2, one line on stderr, nothing on stdout."""
    start = time.monotonic()
    proc = run_cli(tmp_path, env, "--student", "resnt8x4", timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: student: 'resnt8x4' is not allowed")
    assert elapsed < 30  # a generous bound for a loaded CI machine; typical is ~0.3 s (no torch: the test below)
    assert list(tmp_path.iterdir()) == []


#: a bad name of each registry, wherever it is written: (argv, field)
NAME_REFUSALS = [
    (["--student", "nope"], "student"),
    (["--teacher", "nope"], "teacher"),
    (["--connector", "nope"], "connector"),
    (["--dataset", "nope"], "dataset"),
    (["--set", "student=nope"], "student"),
    (["--config", "{tmp}/names.yaml"], "connector"),
    (["--space", "nope_space"], "space"),
    (["--search", "student=choice:digits_cnn2x8,nope"], "search.student"),
    (["--config", "{tmp}/search.yaml"], "search.connector"),
    (["--alpha", "-1"], "alpha"),
]


def test_a_bad_name_is_refused_without_importing_torch(tmp_path, env):
    """Issue 27.9: the names and facts of models, connectors, data sets and spaces are read from the catalog
    (tuner/core/catalog.py), so a bad one is refused in one line before torch, Ray, MLflow or Optuna load."""
    (tmp_path / "names.yaml").write_text("dataset: digits\nconnector: conv1x1\n")
    (tmp_path / "search.yaml").write_text("search:\n  alpha: {loguniform: [0.01, 100]}\n  connector: {choice: [linear, nope]}\n")
    code = textwrap.dedent("""
        import contextlib, io, json, sys
        import run_search
        results = []
        for argv in json.loads(sys.argv[1]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                results.append([run_search.main(argv), err.getvalue()])
        heavy = sorted(m for m in ("torch", "torchvision", "ray", "mlflow", "optuna", "pyarrow") if m in sys.modules)
        print(json.dumps({"results": results, "heavy": heavy}))
    """)
    argvs = [[a.format(tmp=tmp_path) for a in argv] for argv, _ in NAME_REFUSALS]
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(argvs)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    for (argv, field), (rc, err) in zip(NAME_REFUSALS, out["results"]):
        assert rc == 2 and err.count("\n") == 1 and err.startswith(f"error: {field}: "), (argv, err)
    assert out["heavy"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.yaml", "search.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("argv, says", [
    (["--cpus-per-trial", "1000"], f"cpus_per_trial: 1000 is more than this machine has ({os.cpu_count()} CPUs); "
                                   f"allowed: (0, {os.cpu_count()}]"),
    (["--gpus-per-trial", "1000"], "gpus_per_trial: 1000 is more than this machine has ("),
    (["--workers-per-trial", "2", "--gpus-per-worker", "1000"], "gpus_per_worker: 1000 is more than this machine has"),
    (["--workers-per-trial", "1000", "--cpus-per-worker", "1", "--set", "batch_size=2048"],
     "workers_per_trial: 1000 workers (1000 CPUs, and 0.1 CPU for the trial) do not fit this machine, which holds "),
], ids=["cpus", "gpus", "gpus-per-worker", "workers"])
def test_a_trial_larger_than_this_machine_is_refused_before_ray_starts(argv, says, tmp_path, env):
    """Without --address the sweep's Ray is this machine's, whose CPUs and GPUs are known before it starts:
    refused with no Ray session folder and no file written (a cluster's nodes are checked once Ray is up:
    tests/test_placement.py)."""
    proc = run_cli(tmp_path, env, *argv, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith(f"error: {says}"), proc.stderr[-2000:]
    assert not (Path(env["RAY_TMPDIR"]) / "ray").exists() and list(tmp_path.iterdir()) == []


def test_help_shows_each_real_default_once(capsys):
    with pytest.raises(SystemExit):
        run_search.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: None)" not in text
    assert "CPUs per trial (also its torch threads) (default: 1.0)" in text
    assert "(default: a fresh local Ray)" in text and "fresh local Ray) (default" not in text


def test_a_missing_file_error_names_its_path_or_the_vanished_working_directory(tmp_path, monkeypatch):
    assert run_search._missing_file(FileNotFoundError(2, "No such file or directory", "/x/y.pt")) == \
        "No such file or directory: /x/y.pt"
    gone = tmp_path / "job"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # as Ray does to a job's working_dir under a running driver
    assert run_search._missing_file(FileNotFoundError(2, "No such file or directory")).startswith(
        "the working directory was removed while the sweep ran")


def test_printed_commands_paste_into_a_shell_as_they_are_meant(tmp_path, capsys):
    """A sweep folder with a space (and a quote) in its path: every printed command splits into the arguments
    it names (issue 27.8: they were printed unquoted)."""
    import shlex

    import run_search
    from tuner.core.config import TrialConfig
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import SweepResult

    home = tmp_path / "my runs" / "it's here"
    result = SweepResult(SweepConfig(), TrialConfig(), str(home / "ray_results" / "s 1"), f"sqlite:///{home / 'mlflow.db'}",
                         "exp one", f"sqlite:///{home / 'optuna.db'}", "exp one", rows=[], note="no trials")
    run_search.print_summary(result)
    lines = [line.split("      #")[0].strip() for line in capsys.readouterr().out.splitlines()]
    commands = {" ".join(shlex.split(line)[:2 if line.startswith("python") else 1]): shlex.split(line) for line in lines
                if line.startswith(("python ", "mlflow ", "optuna-dashboard "))}
    assert commands["python -m"][3:] == ["report", "--experiment", "exp one", "--tracking-uri", f"sqlite:///{home / 'mlflow.db'}"]
    assert commands["mlflow"][2:] == ["--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}"]
    assert commands["optuna-dashboard"][1:] == [f"sqlite:///{home / 'optuna.db'}"]
    assert commands["python run_search.py"][2:] == ["--resume", str(home / "ray_results" / "s 1")]


def test_resume_reads_the_sweep_where_its_folder_lies_with_the_flags_that_may_change(tmp_path):
    """A moved folder: its storage path is where it lies now; --tracking-uri and --confirm given with --resume apply."""
    from tuner.core.config import TrialConfig
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep_file import SWEEP_FILE, load_for_resume, sweep_yaml

    folder = tmp_path / "moved" / "lost"
    folder.mkdir(parents=True)
    (folder / SWEEP_FILE).write_text(sweep_yaml(SweepConfig(name="lost", storage_path="/old/place", tracking_uri=
                                                            "sqlite:////old/place/mlflow.db", confirm=1), TrialConfig()))
    sweep, _ = load_for_resume(str(folder), {})
    assert (sweep.storage_path, sweep.tracking_uri, sweep.confirm) == (str(tmp_path / "moved"), "sqlite:////old/place/mlflow.db", 1)
    new = f"sqlite:///{tmp_path}/mlflow.db"
    sweep, _ = load_for_resume(str(folder), {"tracking_uri": new, "confirm": 3})
    assert (sweep.storage_path, sweep.tracking_uri, sweep.confirm) == (str(tmp_path / "moved"), new, 3)


def test_a_started_confirmation_keeps_its_counts_on_resume(tmp_path, env):
    """--confirm or --confirm-seeds changed on --resume apply until the stage starts; after, Tune restores the
    stage with its points, so a change is refused in one line (it left the sweep 'interrupted' for good)."""
    import hashlib

    from tuner.core.config import TrialConfig
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep_file import SWEEP_FILE, sweep_yaml

    folder = tmp_path / "ray_results" / "cs"
    (folder / "confirm").mkdir(parents=True)
    (folder / SWEEP_FILE).write_text(sweep_yaml(SweepConfig(name="cs", storage_path=str(folder.parent), confirm=2,
                                                            confirm_seeds=5), TrialConfig()))
    (folder / "confirm" / "tuner.pkl").write_bytes(b"the stage's")
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()}
    for flags, field in ((["--confirm", "3"], "confirm"), (["--confirm-seeds", "8"], "confirm_seeds")):
        proc = run_cli(tmp_path, env, "--resume", str(folder), *flags, timeout=60)
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            f"error: {field}: the confirmation stage of {folder} started with --confirm 2 --confirm-seeds 5 and keeps "
            f"them; continue it with python run_search.py --resume {folder}"], proc.stderr[-2000:]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*") if p.is_file()} == before
