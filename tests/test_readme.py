"""The README is tested: every command in its code blocks is run here in a shrunk form, or by the test
named beside it, or marked with why this machine cannot run it. A README command that matches no
entry of ``COVERAGE`` fails ``test_every_readme_command_is_run_somewhere``.

The cluster block runs for real: ``ray start --head`` (dashboard and job server) and a second node on
127.0.0.1, a driver with ``--address auto``, and ``ray job submit --working-dir .``; a fresh shell then
opens the job's MLflow records and students with the commands the job printed.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from tests._helpers import REPO, cli_env, free_port, kill_processes_mentioning, ray_tmpdir

README = REPO / "README.md"
HERE = "here"  # run by a test of this file
NOT_HERE = "not run here: "  # + why


def readme_blocks() -> List[Tuple[str, str]]:
    """``(language, text)`` of each fenced code block of the README."""
    return re.findall(r"^```(\w+)\n(.*?)^```", README.read_text(), flags=re.M | re.S)


def readme_commands() -> List[str]:
    """Each shell command of the README (continuation lines joined, comments dropped), and each Python
    or YAML block as its first line."""
    commands = []
    for lang, text in readme_blocks():
        if lang in ("python", "yaml"):
            commands.append(text.splitlines()[0])
            continue
        for line in text.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


# (regex matched at the start of a README command, where it runs); the order is the README's
COVERAGE: List[Tuple[str, str]] = [
    (r"pip install -e \. && python run_search\.py$", "tests/test_sweep.py::test_default_sweep_smoke_end_to_end "
     "(--smoke; the full default run, ~4 min, is the main job measured by hand)"),
    (r"pip install -e '\.\[test\]' && python -m pytest$", ".ci/run (test_ci_runs_the_readme_test_command)"),
    (r"python run_search\.py --list-spaces", HERE),
    (r"python run_search\.py --list-models", HERE),
    (r"python run_search\.py --smoke$", "tests/test_sweep.py::test_default_sweep_smoke_end_to_end"),
    (r"python run_search\.py --space connectors", HERE),
    (r"python run_search\.py --space ablation", HERE),
    (r"python run_search\.py --space pareto", HERE),
    (r"python run_search\.py --config configs/cifar100_resnet32x4_resnet8x4\.yaml .*--gpus-per-trial",
     NOT_HERE + "needs a GPU (--gpus-per-trial 0.25) and the CIFAR-100 files, which cannot be downloaded here; "
     "the CIFAR loader runs on files in the real format in tests/test_data.py"),
    (r"python run_search\.py --resume", HERE),
    (r"python run_search\.py --dataset imagefolder", "tests/test_sweep.py::test_an_image_folder_sweep_runs_at_the_image_size_asked"),
    (r"python run_search\.py --confirm 3 --confirm-seeds 8", "tests/test_confirm.py::test_confirmation_runs_belong_to_the_sweep_and_its_verdict_is_on_the_parent "
     "(--smoke: 1 candidate, 2 seeds)"),
    (r"python run_search\.py --warm-start", "tests/test_confirm.py::test_warm_start_then_confirm_later"),
    (r"python run_search\.py --search", HERE),
    (r"python run_search\.py --race 3", "tests/test_race.py::test_a_raced_sweep_runs_more_seeds_of_what_holds_up_and_confirms_on_fresh_ones "
     "(--race 3, 9 trials of 3 epochs)"),
    (r"# my_sweep\.yaml", "tests/test_readme.py::test_the_readme_search_yaml_declares_a_valid_space"),
    (r"from tuner\.core\.export import load_student", HERE),
    (r"python -m analysis report", HERE),
    (r"python -m analysis leaderboard", HERE),
    (r"python -m analysis ablation", HERE),
    (r"python -m analysis export", HERE),
    (r"python run_search\.py --confirm-sweep", "tests/test_confirm.py::test_warm_start_then_confirm_later"),
    (r"python run_search\.py --sync", "tests/test_tracking_outage.py::test_server_down_until_the_end_then_sync_backfills"),
    (r"from analysis import", HERE),
    (r"ray start --head", HERE),
    (r"ray start --address", HERE),
    (r"python run_search\.py --address auto (?!.*--workers-per-trial)", HERE),
    (r"ray job submit", HERE),
    (r"python run_search\.py --workers-per-trial 2", "tests/test_workers.py::test_a_two_worker_trial_follows_a_one_worker_"
     "trial_and_frees_its_workers_for_the_next (2 gloo workers of 0.5 CPU, 3 epochs)"),
    (r"python run_search\.py --address auto .*--workers-per-trial", NOT_HERE + "needs ImageNet and GPU nodes; its parts "
     "run apart: 2-worker trials in tests/test_workers.py, the subset preset in test_the_imagenet_preset_sweeps_a_"
     "class_subset_of_a_tiny_ilsvrc_folder, a driver on a cluster in test_a_driver_on_the_cluster_and_the_readme_sweeps_shrunk"),
    (r"python run_search\.py --config configs/imagenet_resnet34_resnet18\.yaml .*--class-subset",
     "tests/test_sweep.py::test_the_imagenet_preset_sweeps_a_class_subset_of_a_tiny_ilsvrc_folder (a tiny JPEG "
     "folder in the ILSVRC layout, --smoke, 32 px)"),
    (r"python run_search\.py --config configs/imagenet_resnet34_resnet18\.yaml .*--warm-start", NOT_HERE + "needs "
     "ImageNet (1.28 M images) and a GPU; the preset runs in test_the_imagenet_preset_sweeps_a_class_subset_of_a_tiny_"
     "ilsvrc_folder and the warm start in tests/test_confirm.py::test_warm_start_then_confirm_later"),
    (r"python -m tuner\.core\.train --config configs/digits\.yaml", "tests/test_train.py::test_cli_runs_one_distillation"),
    (r"python -m tuner\.core\.train --config configs/cifar100", NOT_HERE + "needs the CIFAR-100 files, which cannot be "
     "downloaded here"),
    (r"from tuner\.core\.sweep_config import SweepConfig", HERE),
    (r"python -m bench \[--quick\]", "tests/test_bench.py::test_one_quick_scenario_runs_end_to_end_into_the_table_and_the_json (one scenario)"),
    (r"python -m bench --gpu", NOT_HERE + "needs a GPU; without one it refuses in one line "
     "(tests/test_bench.py::test_gpu_rows_refuse_to_start_without_cuda)"),
    (r"pip install -e '\.\[test\]' && python -m pytest -m \"not slow\"", ".ci/run (test_ci_runs_the_readme_test_command)"),
    (r"ruff check && lint-imports", ".ci/run (test_ci_runs_the_readme_test_command)"),
    (r"python -m bench\.\w+", NOT_HERE + "a benchmark, minutes to hours of CPU; run by hand, figures in the "
     "closing notes of the issues that asked for them"),
]


def _where(command: str) -> List[str]:
    return [where for pattern, where in COVERAGE if re.match(pattern, command)]


def test_every_readme_command_is_run_somewhere():
    commands = readme_commands()
    assert len(commands) > 30, commands  # the parser found the blocks
    for command in commands:
        where = _where(command)
        assert len(where) == 1, f"README command {command!r} is run by {len(where)} COVERAGE entries: {where}"
    for pattern, where in COVERAGE:
        assert any(re.match(pattern, c) for c in commands), f"COVERAGE entry {pattern!r} matches no README command"
        if where == HERE or where.startswith(NOT_HERE):
            continue
        path, _, rest = where.partition("::")
        if path == ".ci/run (test_ci_runs_the_readme_test_command)":
            continue
        name = rest.split()[0]
        assert re.search(rf"^def {name}\(", (REPO / path).read_text(), flags=re.M), f"{where}: no such test"


def test_ci_runs_the_readme_test_command():
    command = next(c for c in readme_commands() if "python -m pytest" in c)
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in ci
    assert "ruff check" in ci and "lint-imports --no-cache" in ci  # the Developing section's checks


# ---- the commands run here --------------------------------------------------------------------------
def _run(args: List[str], cwd: Path, env: Dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{shlex.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _readme(pattern: str) -> List[str]:
    """The README command that ``pattern`` matches, as argv (this interpreter for ``python``, this
    checkout's ``run_search.py``: the README's commands run from the checkout)."""
    command = next(c for c in readme_commands() if re.match(pattern, c))
    argv = shlex.split(command)
    if argv[0] != "python":
        return argv
    return [sys.executable] + [str(REPO / a) if a == "run_search.py" else a for a in argv[1:]]


def _without(argv: List[str], *flags: str) -> List[str]:
    """``argv`` less each ``flag`` and its value, and less a trailing ``...``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        elif arg != "...":
            out.append(arg)
    return out


def _printed(stdout: str, pattern: str) -> str:
    """The line of a sweep's "Look further" block that starts with ``pattern`` (its comment dropped)."""
    line = next(l.strip() for l in stdout.splitlines() if l.strip().startswith(pattern))
    return re.sub(r"\s+#.*$", "", line)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Dict[str, object]]:
    """The README's cluster block on 127.0.0.1: a head with the job server and one more node."""
    with ray_tmpdir() as ray_tmp, ray_tmpdir() as worker_tmp:
        port, dash, agents = free_port(), free_port(), [free_port(), free_port()]
        env = cli_env(ray_tmp, RAY_ADDRESS=f"127.0.0.1:{port}")
        if (Path.home() / ".ray" / "auth_token").exists():  # what the README tells a user to export there
            env["RAY_AUTH_MODE"] = "token"
        head = _readme(r"ray start --head")
        assert head[:3] == ["ray", "start", "--head"] and "--dashboard-host" in head
        # the README's flags, on free ports (a second Ray on this machine may hold the defaults)
        head = _without(head, "--port") + ["--port", str(port), "--node-ip-address", "127.0.0.1",
                                           "--dashboard-port", str(dash), "--dashboard-agent-listen-port", str(agents[0]),
                                           "--include-dashboard=true", "--num-cpus", "2", "--temp-dir", ray_tmp,
                                           "--disable-usage-stats"]
        worker = [a.replace("HEAD_IP", "127.0.0.1") for a in _readme(r"ray start --address")]
        worker = _without(worker, "--address") + ["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1",
                                                  "--dashboard-agent-listen-port", str(agents[1]), "--num-cpus", "1",
                                                  # its own temp dir, as on another machine: two nodes unpacking a
                                                  # job's working_dir into one folder delete it under each other
                                                  "--temp-dir", worker_tmp, "--disable-usage-stats"]
        try:
            _run(head, REPO, env, timeout=180)
            _run(worker, REPO, env, timeout=180)
            yield {"env": env, "dashboard": f"http://127.0.0.1:{dash}", "tmp": tmp_path_factory.mktemp("cluster"),
                   "temp_dirs": (ray_tmp, worker_tmp)}
        finally:
            for folder in (worker_tmp, ray_tmp):  # not `ray stop`: it would stop every Ray on the machine
                kill_processes_mentioning(folder)


def _submit(cluster, args: List[str]) -> subprocess.CompletedProcess:
    """``ray job submit`` as the README writes it, against the test's head, retried while its job agent starts."""
    submit = _readme(r"ray job submit")
    dash = submit.index("--address")
    submit[dash + 1] = cluster["dashboard"]
    entry = submit.index("--")
    argv = submit[:entry + 1] + [sys.executable] + args
    deadline = time.monotonic() + 120
    while True:
        proc = subprocess.run(argv, cwd=REPO, env=cluster["env"], capture_output=True, text=True, timeout=900)
        if proc.returncode == 0 or "No available agent" not in proc.stdout + proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert proc.returncode == 0, f"{shlex.join(argv)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.mark.slow
def test_a_job_keeps_its_records_where_asked_and_a_fresh_shell_opens_them(cluster):
    """The README's ``ray job submit`` sweep: records beside --storage-path (none in Ray's working-dir copy),
    and the printed commands, the README's analysis commands and its Python blocks work afterwards."""
    env, tmp = cluster["env"], cluster["tmp"]
    keep = tmp / "nfs" / "ray_results"
    submit = _readme(r"ray job submit")
    args = _without(submit[submit.index("--") + 2:], "--storage-path")
    assert args[:3] == ["run_search.py", "--address", "auto"]
    proc = _submit(cluster, args + ["--storage-path", str(keep), "--smoke", "--confirm", "0", "--name", "job"])
    out = proc.stdout
    assert "Sweep job: 4 trials" in out, out[-3000:]
    assert (keep / "mlflow.db").is_file() and (keep / "optuna.db").is_file() and (keep / "job" / "srrl_sweep.yaml").is_file()
    students = sorted((keep / "mlruns" / "job").glob("*/artifacts/model/student.pt"))
    assert students, sorted(p.name for p in keep.iterdir())
    copies = [c for tmp_dir in cluster["temp_dirs"] for c in Path(tmp_dir).glob("session_2*/runtime_resources/working_dir_files/*")
              if c.is_dir()]
    left = [p for c in copies for p in c.iterdir() if p.name in ("mlflow.db", "optuna.db", "mlruns", "ray_results")]
    assert copies and not left, left

    shell = tmp / "fresh-shell"  # a new terminal, somewhere else, after the job ended
    shell.mkdir()
    fresh = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    uri = f"sqlite:///{keep / 'mlflow.db'}"
    report = _printed(out, "python -m analysis report")
    assert uri in report
    _run([sys.executable] + shlex.split(report)[1:] + ["--out", str(shell / "report")], shell, fresh)
    assert (shell / "report" / "report.html").is_file()
    board = _run(_without(_readme(r"python -m analysis leaderboard"), "--experiment") +
                 ["--experiment", "job", "--tracking-uri", uri], shell, fresh).stdout
    run_ids = re.findall(r"\b[0-9a-f]{32}\b", board)
    assert len(run_ids) == 4, board
    export = _without(_readme(r"python -m analysis export"), "--experiment", "--out")
    _run(export[:export.index("[--format")] + ["--experiment", "job", "--out", str(shell / "trials.parquet"),
                                              "--tracking-uri", uri], shell, fresh)
    assert (shell / "trials.parquet").stat().st_size > 0
    resume = _printed(out, "python run_search.py --resume")
    again = _run([sys.executable, str(REPO / "run_search.py")] + shlex.split(resume)[2:], shell, fresh)
    assert "finished already" in again.stdout, again.stdout

    finished = next(r for r in run_ids if any(r in str(p) for p in students))
    code = next(text for lang, text in readme_blocks() if lang == "python")  # the first: load an exported student
    code = code.replace("<run id>", finished).replace("sqlite:////abs/path/mlflow.db", uri)
    _run([sys.executable, "-c", textwrap.dedent("""
        import numpy as np, torch
        from sklearn.datasets import load_digits
        images = torch.tensor(load_digits().images[:8, None], dtype=torch.float32)   # raw 0..16, as the data set holds them
    """) + code + "\nassert logits.shape == (8, 10), logits.shape\n"], shell, fresh)


@pytest.mark.slow
def test_a_driver_on_the_cluster_and_the_readme_sweeps_shrunk(cluster):
    """``python run_search.py --address auto`` on the README's cluster, with each README sweep flag set
    not run elsewhere (connectors, ablation, pareto) shrunk to ``--smoke``; then the ablation's table,
    the analysis Python block and the ``python -m tuner.core.train`` Python block."""
    env, tmp = cluster["env"], cluster["tmp"]
    work = tmp / "driver"
    work.mkdir()
    driver = _without(_readme(r"python run_search\.py --address auto"), "--storage-path", "--gpus-per-trial")
    base = driver + ["--storage-path", str(work / "ray_results"), "--smoke", "--confirm", "0"]
    for name, pattern in (("conn", r"python run_search\.py --space connectors"),
                          ("abl", r"python run_search\.py --space ablation"),
                          ("decl", r"python run_search\.py --search"),
                          ("par", r"python run_search\.py --space pareto")):  # pareto last: its table is checked below
        flags = _readme(pattern)[2:]
        out = _run(base + flags + ["--name", name], work, env).stdout
        assert f"Sweep {name}:" in out and "error" not in out.lower(), out[-3000:]
        if name == "decl":  # the recipe space with weight_decay searched and beta fixed: the leaderboard shows it
            header = next(line for line in out.splitlines() if line.lstrip().startswith("#"))
            assert "weight_decay" in header and "lr" in header, out[-3000:]
    assert "student_macs" in out  # the pareto table ranks by cost too
    uri = f"sqlite:///{work / 'mlflow.db'}"
    table = _run(_without(_readme(r"python -m analysis ablation"), "--experiment") + ["--experiment", "abl", "--tracking-uri", uri],
                 work, env).stdout
    assert all(re.search(rf"^{re.escape(arm)} +1 ", table, flags=re.M) for arm in ("CE", "CE+FM", "CE+SR", "CE+FM+SR")), table
    spaces = _run(_readme(r"python run_search\.py --list-spaces"), work, env).stdout
    models = _run(_readme(r"python run_search\.py --list-models"), work, env).stdout
    assert "connectors" in spaces and "resnet8x4" in models

    blocks = [text for lang, text in readme_blocks() if lang == "python"]
    analysis_block = next(b for b in blocks if b.startswith("from analysis import"))
    analysis_block = (analysis_block.replace("sqlite:////abs/path/mlflow.db", uri)
                      .replace("loss_weights-digits-20261128-000632", "conn").replace("ablation-digits-...", "abl"))
    _run([sys.executable, "-c", analysis_block + "\nassert len(trials) == 4 and not history.empty\n"], work, env)

    trainer_block = next(b for b in blocks if b.startswith("from tuner.core.sweep_config import SweepConfig"))
    shrunk = trainer_block.replace('{"alpha": 1, "beta": 5}', '{"alpha": 1, "beta": 5, "epochs": 1, "teacher_epochs": 1}')
    assert shrunk != trainer_block
    printed = _run([sys.executable, "-c", shrunk], REPO, env).stdout.split()
    assert 0 <= float(printed[-2]) <= 100 and 0 <= float(printed[-1]) <= 100, printed


def test_the_readme_search_yaml_declares_a_valid_space(tmp_path):
    """The README's sweep file: a search: mapping alone is the whole space; its points lie inside it."""
    from search_spaces import SpaceContext
    from tuner.core.config import load_yaml
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.prepare import check_space

    text = next(t for lang, t in readme_blocks() if lang == "yaml" and "search:" in t)
    (tmp_path / "my_sweep.yaml").write_text(text)
    sweep, base = SweepConfig.split(load_yaml(tmp_path / "my_sweep.yaml"))
    space = check_space(sweep, base)
    assert sweep.space is None and space.name == "declared"
    assert list(space.declaration) == ["alpha", "beta", "lr", "weight_decay", "schedule", "batch_size"]
    ctx = SpaceContext.for_config(base)
    assert space.reference_point(ctx) == {"alpha": 1.0, "beta": 1.0, "lr": 0.05, "weight_decay": 5e-4,
                                          "schedule": "multistep", "batch_size": 64}
    assert [space.outside(ctx, p) for p in sweep.search_points] == [None]
    assert len(space.initial_points(ctx)) == 3  # the reference, then the authors' (1, 5) and (10, 1)
