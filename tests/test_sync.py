"""python run_search.py --sync: MLflow backfilled from Tune's own files.

A tiny real sweep (2 trials x 3 epochs, FIFO, best student exported) runs once in-process with
tracking on; each test then gives a FRESH SQLite store that only has the sweep's parent run (made by
``tuner.tracking.start_sweep``, as the driver makes it before any trial) and checks that sync puts
every epoch of every trial there, exactly as Tune's result.json has it, and ends the sweep as its
driver did: parent run FINISHED, the best student exported.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Dict, List

import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from run_search import main  # noqa: E402
from tests._helpers import free_port, local_ray, trial_runs, tune_results  # noqa: E402
from tuner.core import metrics as M  # noqa: E402
from tuner import tracking as T  # noqa: E402
from tuner.tracking.callback import MLflowTracking  # noqa: E402

NAME, EPOCHS, TOP_K = "syn", 3, 1
STUDENT = "model/student.pt"


# ---- one real sweep per module ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The sweep's folder, its experiment and the parent params of the store it was tracked in."""
    import mlflow

    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("sync-sweep")
    uri = f"sqlite:///{tmp / 'tracked.db'}"
    sweep, base = SweepConfig.split({"name": NAME, "confirm": 0, "num_samples": 2, "epochs": EPOCHS, "teacher_epochs": 3,
                                     "scheduler": "fifo", "top_k": TOP_K, "storage_path": str(tmp / "ray"),
                                     "tracking_uri": uri, "optuna_storage": f"sqlite:///{tmp / 'optuna.db'}"})
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        with local_ray():
            result = run_sweep(sweep, base, verbose=0)
    finally:
        os.chdir(cwd)
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(result.experiment).experiment_id])
    parent = next(r for r in runs if r.data.tags.get(T.TAG_ROLE) == "sweep")
    children = {r.data.tags[T.TAG_TRIAL_ID]: r for r in runs if r.data.tags.get(T.TAG_ROLE) == "trial"}
    return SimpleNamespace(path=Path(result.path), experiment=result.experiment, uri=uri,
                           parent_params=dict(parent.data.params), children=children)


def _fresh_store(folder: Path, swept) -> str:
    """A new store with only the sweep's parent run, as the driver leaves it before the first trial."""
    import mlflow

    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.MlflowClient(uri).create_experiment(swept.experiment, artifact_location=(folder / "artifacts").as_uri())
    T.start_sweep(uri, swept.experiment, NAME, swept.parent_params, {}, resume=False)
    return uri


def _students(uri: str, experiment: str) -> Dict[str, str]:
    """trial id -> run id of the child runs that carry an exported student (one list call per run)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    return {r.data.tags[T.TAG_TRIAL_ID]: r.info.run_id for r in trial_runs(uri, experiment)
            if [a.path for a in client.list_artifacts(r.info.run_id, "model")] == [STUDENT]}


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _expected(rows: List[dict]) -> Dict[tuple, float]:
    """(metric, epoch) -> value: every finite per-epoch metric of every reported epoch, and each per-trial
    metric once, at the first epoch that reported it (the callback's rule)."""
    out = {(k, r["epoch"]): float(r[k]) for r in rows for k in M.PER_EPOCH if _finite(r.get(k))}
    for k in M.PER_TRIAL:
        first = next((r for r in rows if _finite(r.get(k))), None)
        if first is not None:
            out[(k, first["epoch"])] = float(first[k])
    return out


def _parent_id(uri: str, experiment: str) -> str:
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`srrl.role` = 'sweep'")
    return parent.info.run_id


def _logged(uri: str, experiment: str) -> Dict[str, Dict[tuple, float]]:
    """trial id -> (metric, epoch) -> value, every value of every logged step (repeats would show)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    out: Dict[str, Dict[tuple, float]] = {}
    for run in trial_runs(uri, experiment):
        got = out.setdefault(run.data.tags[T.TAG_TRIAL_ID], {})
        for key in run.data.metrics:
            history = client.get_metric_history(run.info.run_id, key)
            assert len({m.step for m in history}) == len(history), f"{key} logged twice at a step"
            got.update({(key, m.step): m.value for m in history})
    return out


def _sync(uri: str, folder: Path, capsys, experiment: str = "syn") -> str:
    capsys.readouterr()
    assert main(["--sync", str(folder), "--experiment", experiment, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return out.strip()


# ---- tests --------------------------------------------------------------------------------------------
@pytest.mark.slow  # needs the module's real sweep (Ray workers)
def test_sync_fills_a_store_that_has_only_the_parent(swept, tmp_path, capsys):
    uri = _fresh_store(tmp_path / "fresh", swept)
    results = tune_results(swept.path)
    total = sum(len(_expected(rows)) for rows in results.values())
    assert len(results) == 2 and total > 2 * EPOCHS * 10

    line = _sync(uri, swept.path, capsys)
    assert line == (f"sync 'syn' (experiment 'syn'): 2 trials, 2 runs created, {total} metrics backfilled, "
                    f"2 runs ended, {TOP_K} students exported; parent run ended FINISHED")
    assert _logged(uri, swept.experiment) == {tid: _expected(rows) for tid, rows in results.items()}

    parent_id = _parent_id(uri, swept.experiment)
    for child in trial_runs(uri, swept.experiment):
        tid = child.data.tags[T.TAG_TRIAL_ID]
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == parent_id
        tracked = swept.children[tid]  # named and labelled as the callback names and labels them
        assert child.info.run_name == tags["mlflow.runName"] == tracked.info.run_name != tid
        for key in ("srrl.stage", "srrl.origin", "srrl.optuna_trial"):
            assert tags[key] == tracked.data.tags[key], key
        assert tags[T.TAG_STATUS] == "finished" and tags[T.TAG_LAST_EPOCH] == str(EPOCHS)
        assert child.info.status == "FINISHED" and child.info.end_time >= child.info.start_time
        # params: the base config of the folder's srrl_sweep.yaml (with the per-trial resources) overridden
        # by the trial's config: the very params the callback logged
        assert child.data.params == swept.children[tid].data.params

    assert _sync(uri, swept.path, capsys).endswith("2 trials, 0 runs created, 0 metrics backfilled, 0 runs ended, "
                                                   "0 students exported; parent run already FINISHED")


@pytest.mark.slow  # needs the module's real sweep (Ray workers)
def test_sync_completes_runs_the_callback_started(swept, tmp_path, capsys):
    """The server died after trial A's first epoch: its run exists (made by the real callback) and
    is RUNNING with epoch 1; trial B has no run at all. Sync finds A's run by tag and completes both."""
    uri = _fresh_store(tmp_path / "partial", swept)
    results = tune_results(swept.path)
    first = sorted(results)[0]
    callback = MLflowTracking(uri, None, _parent_id(uri, swept.experiment), epochs=EPOCHS,
                              flush_interval_s=0)  # epoch 1 is sent at once, not held to batch
    trial = SimpleNamespace(trial_id=first, config=json.loads((next(swept.path.glob(f"train_srrl_{first}_*")) /
                                                               "params.json").read_text()))
    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(0, [trial], trial, results[first][0])
    assert [c.info.status for c in trial_runs(uri, swept.experiment)] == ["RUNNING"]

    total = sum(len(_expected(rows)) for rows in results.values())
    already = len(_expected(results[first][:1]))
    line = _sync(uri, swept.path, capsys)
    assert line.endswith(f"2 trials, 1 runs created, {total - already} metrics backfilled, 2 runs ended, "
                         f"{TOP_K} students exported; parent run ended FINISHED"), line
    children = trial_runs(uri, swept.experiment)
    assert sorted(c.data.tags[T.TAG_TRIAL_ID] for c in children) == sorted(results)  # one run per trial
    assert all(c.info.status == "FINISHED" and c.data.tags[T.TAG_STATUS] == "finished" for c in children)
    assert _logged(uri, swept.experiment) == {tid: _expected(rows) for tid, rows in results.items()}
    assert _sync(uri, swept.path, capsys).endswith(
        "0 runs created, 0 metrics backfilled, 0 runs ended, 0 students exported; parent run already FINISHED")


def _edited_copy(swept, tmp_path: Path, keep_state: bool) -> Path:
    """The sweep folder copied (same name), its first trial cut after epoch 2 with a NaN val_loss at
    epoch 2, its second trial diverged at its last epoch; Tune's experiment state kept or removed."""
    folder = tmp_path / ("with-state" if keep_state else "no-state") / NAME
    shutil.copytree(swept.path, folder)  # with its checkpoints: a copy with Tune's state is over, its best exported
    if not keep_state:
        for state in folder.glob("experiment_state-*.json"):
            state.unlink()
    files = sorted(folder.glob("train_srrl_*/result.json"), key=lambda p: p.parent.name)
    cut = [json.loads(line) for line in files[0].read_text().splitlines()][:2]
    cut[1][M.VAL_LOSS] = float("nan")
    files[0].write_text("".join(json.dumps(r) + "\n" for r in cut))
    rows = [json.loads(line) for line in files[1].read_text().splitlines()]
    rows[-1][T.DIVERGED_KEY] = 1.0
    files[1].write_text("".join(json.dumps(r) + "\n" for r in rows))
    if keep_state:  # a trial the state does not know: an orphan of a killed driver, never synced
        orphan = folder / "train_srrl_orphan_00009_9_x"
        orphan.mkdir()
        (orphan / "result.json").write_text("".join(json.dumps({**r, "trial_id": "orphan"}) + "\n" for r in rows))
    return folder


@pytest.mark.slow  # needs the module's real sweep (Ray workers)
@pytest.mark.parametrize("keep_state", [False, True], ids=["no-tune-state", "tune-state"])
def test_sync_ends_only_trials_that_ended(swept, tmp_path, capsys, keep_state):
    """Short of its planned epochs, a trial is still open unless Tune's state says TERMINATED
    (then it stopped early); a diverged last result ends it as diverged; NaN is tagged, not logged."""
    folder = _edited_copy(swept, tmp_path, keep_state)
    uri = _fresh_store(tmp_path / "store", swept)
    line = _sync(uri, folder, capsys)
    assert "2 runs created" in line and f"{2 if keep_state else 1} runs ended" in line, line
    runs = {c.data.tags[T.TAG_TRIAL_ID]: c for c in trial_runs(uri, swept.experiment)}
    results = {tid: rows for tid, rows in tune_results(folder).items() if tid != "orphan"}
    assert sorted(runs) == sorted(results)
    cut, diverged = (tid for tid, _ in sorted(results.items(), key=lambda kv: len(kv[1])))
    assert _logged(uri, swept.experiment)[cut] == _expected(results[cut])
    assert (M.VAL_LOSS, 2) not in _expected(results[cut]) and (M.VAL_ACC, 2) in _expected(results[cut])
    tags = runs[cut].data.tags
    assert tags["srrl.nonfinite.val_loss"] == "2"
    if keep_state:
        assert runs[cut].info.status == "FINISHED" and tags[T.TAG_STATUS] == "stopped_early"
        assert tags[T.TAG_STOPPED_AT] == "2" and tags[T.TAG_LAST_EPOCH] == "2"
    else:
        assert runs[cut].info.status == "RUNNING" and T.TAG_STATUS not in tags
    assert runs[diverged].info.status == "FAILED"
    assert runs[diverged].data.tags[T.TAG_STATUS] == "diverged"
    assert runs[diverged].data.tags[T.TAG_DIVERGED_EPOCH] == str(EPOCHS)
    # without Tune's state nobody can tell whether the sweep is over: its parent run stays open
    parent = "already FINISHED" if keep_state else "left RUNNING: the sweep is not over (no Tune experiment state)"
    assert f"parent run {'ended FINISHED' if keep_state else parent}" in line, line
    assert f"0 runs created, 0 metrics backfilled, 0 runs ended, 0 students exported; parent run {parent}" in \
        _sync(uri, folder, capsys)


def _weights(bundle) -> Dict[str, object]:
    """Every tensor of a loaded student and its connector, by name."""
    modules = {"student": bundle.student, "connector": bundle.connector}
    return {f"{m}.{k}": v for m, module in modules.items() if module is not None
            for k, v in module.state_dict().items()}


def _records(uri: str, experiment: str, artifacts: Path) -> list:
    """Everything sync could add to a store: every run (deleted ones too) with its status, end, tags,
    params and latest metrics; every metric's history; every artifact file with its size and mtime."""
    import mlflow
    from mlflow.entities import ViewType

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = sorted((r.info.run_id, r.info.status, r.info.end_time, r.info.lifecycle_stage, sorted(r.data.tags.items()),
                   sorted(r.data.params.items()), sorted(r.data.metrics.items()))
                  for r in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL))
    files = sorted((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in artifacts.rglob("*") if f.is_file())
    return [runs, _logged(uri, experiment), files]


@pytest.mark.slow  # needs the module's real sweep (Ray workers)
@pytest.mark.parametrize("given", ["path", "uri"])
def test_sync_ends_a_finished_sweep_as_its_driver_does(swept, tmp_path, capsys, given):
    """The outage lasted to the sweep's end: sync ends the parent run FINISHED and exports the best
    TOP_K students (by final val_acc, as the sweep ranks them) with the sweep's own export, the very
    files its driver wrote where tracking never failed; a second sync changes nothing. ``uri``: the
    sweep folder given as a file:// URI, read through pyarrow as an s3:// or gs:// one is."""
    import mlflow
    import torch

    from tuner.core.export import load_student

    uri = _fresh_store(tmp_path / "store", swept)
    folder = f"file://{swept.path}" if given == "uri" else swept.path
    _sync(uri, folder, capsys)
    parent = mlflow.MlflowClient(uri).get_run(_parent_id(uri, swept.experiment))
    assert parent.info.status == "FINISHED" and parent.info.end_time >= parent.info.start_time

    finals = {tid: float(rows[-1][M.VAL_ACC]) for tid, rows in tune_results(swept.path).items()}
    students = _students(uri, swept.experiment)
    assert len(students) == TOP_K < len(finals)
    assert sorted((finals[tid] for tid in students), reverse=True) == sorted(finals.values(), reverse=True)[:TOP_K]
    own = _students(swept.uri, swept.experiment)  # what the driver exported to the store it tracked to
    assert sorted(students) == sorted(own)
    for tid, run_id in students.items():
        loaded = load_student(f"runs:/{run_id}/{STUDENT}", tracking_uri=uri)
        theirs = load_student(f"runs:/{own[tid]}/{STUDENT}", tracking_uri=swept.uri)
        assert loaded.config == theirs.config and loaded.metrics == theirs.metrics
        assert loaded.metrics[M.VAL_ACC] == finals[tid] and loaded.config.epochs == EPOCHS
        mine, their = _weights(loaded), _weights(theirs)
        assert mine.keys() == their.keys() and all(torch.equal(mine[k], their[k]) for k in mine)
        with torch.no_grad():
            assert loaded.student(torch.zeros(2, 1, 8, 8)).shape == (2, 10)  # digits: 1 x 8 x 8, 10 classes

    before = _records(uri, swept.experiment, tmp_path / "store" / "artifacts")
    assert _sync(uri, folder, capsys).endswith(
        "0 runs created, 0 metrics backfilled, 0 runs ended, 0 students exported; parent run already FINISHED")
    assert _records(uri, swept.experiment, tmp_path / "store" / "artifacts") == before


@pytest.mark.slow  # needs the module's real sweep (Ray workers)
def test_sync_removes_runs_of_trials_tune_never_recorded(swept, tmp_path, capsys):
    """A driver killed before Tune's next state snapshot left a run for a trial Tune never recorded; the
    resumed sweep's end, had MLflow been up, would have removed it: sync does, once the sweep is over."""
    import mlflow
    from mlflow.entities import ViewType

    uri = _fresh_store(tmp_path / "store", swept)
    callback = MLflowTracking(uri, None, _parent_id(uri, swept.experiment), epochs=EPOCHS)
    lost = SimpleNamespace(trial_id="lost_00009", config={"alpha": 2.0})
    callback.on_trial_start(0, [lost], lost)
    (orphan,) = trial_runs(uri, swept.experiment)

    assert ", 1 orphan runs removed; parent run ended FINISHED" in _sync(uri, swept.path, capsys)
    run = mlflow.MlflowClient(uri).get_run(orphan.info.run_id)
    assert run.info.lifecycle_stage == "deleted" and run.info.status == "KILLED"
    assert run.data.tags[T.TAG_STATUS] == "orphaned"
    assert sorted(c.data.tags[T.TAG_TRIAL_ID] for c in trial_runs(uri, swept.experiment)) == \
        sorted(tune_results(swept.path))
    exp = mlflow.MlflowClient(uri).get_experiment_by_name(swept.experiment)
    assert len(mlflow.MlflowClient(uri).search_runs([exp.experiment_id], run_view_type=ViewType.ALL)) == 4
    assert _sync(uri, swept.path, capsys).endswith("0 students exported; parent run already FINISHED")


def _unfinished_copy(swept, tmp_path: Path, how: str) -> Path:
    """The sweep folder (same name) as Tune's state records it mid-sweep: one trial still RUNNING after
    epoch 2 (``running``), or one trial ended and the other not started yet (``not-started``)."""
    folder = tmp_path / how / NAME
    shutil.copytree(swept.path, folder)
    (state_file,) = folder.glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    first, *rest = state["trial_data"]  # entries: [trial as JSON, its run metadata as JSON]
    if how == "running":
        trial = {**json.loads(first[0]), "status": "RUNNING"}
        state["trial_data"] = [[json.dumps(trial), first[1]], *rest]
        (result,) = folder.glob(f"train_srrl_{trial['trial_id']}_*/result.json")
        result.write_text("".join(result.read_text().splitlines(keepends=True)[:2]))
    else:
        state["trial_data"] = [first]
    state_file.write_text(json.dumps(state))
    return folder


@pytest.mark.slow  # needs the module's real sweep (Ray workers)
@pytest.mark.parametrize("how, why", [("running", "1 of 2 trials not ended"),
                                      ("not-started", "1 of its 2 trials started")])
def test_sync_leaves_the_parent_of_an_unfinished_sweep_running(swept, tmp_path, capsys, how, why):
    """A sweep still running, or interrupted with trials pending: its trials are synced, its parent run
    stays RUNNING and nothing is exported; once the sweep is over, the next sync ends it."""
    import mlflow

    uri = _fresh_store(tmp_path / "store", swept)
    line = _sync(uri, _unfinished_copy(swept, tmp_path, how), capsys)
    assert f", 0 students exported; parent run left RUNNING: the sweep is not over ({why}); " in line, line
    client = mlflow.MlflowClient(uri)
    parent_id = _parent_id(uri, swept.experiment)
    assert client.get_run(parent_id).info.status == "RUNNING" and _students(uri, swept.experiment) == {}

    line = _sync(uri, swept.path, capsys)
    assert line.endswith(f"{TOP_K} students exported; parent run ended FINISHED"), line
    assert client.get_run(parent_id).info.status == "FINISHED" and len(_students(uri, swept.experiment)) == TOP_K
    assert all(c.info.status == "FINISHED" for c in trial_runs(uri, swept.experiment))


# ---- errors: one line, exit 2 ----------------------------------------------------------------------
def _error(argv: List[str], capsys) -> str:
    capsys.readouterr()  # what came before (MLflow's own log lines while creating a store)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.slow  # needs the module's real sweep (Ray workers)
def test_sync_errors_are_one_line_exit_2(swept, tmp_path, capsys):
    uri = _fresh_store(tmp_path / "err", swept)
    base = ["--tracking-uri", uri]
    assert "no folder" in _error(base + ["--experiment", "syn", "--sync", str(tmp_path / "nope")], capsys)
    (tmp_path / "empty").mkdir()
    assert "holds no Tune trial folders" in _error(base + ["--experiment", "syn", "--sync", str(tmp_path / "empty")], capsys)
    assert "holds no Tune trial folders" in _error(base + ["--experiment", "syn", "--sync", str(swept.path.parent)], capsys)
    other = tmp_path / "other"
    shutil.copytree(swept.path, other / "not-this-sweep", ignore=shutil.ignore_patterns("checkpoint_*"))
    err = _error(base + ["--experiment", "syn", "--sync", str(other / "not-this-sweep")], capsys)
    assert "no sweep run named 'not-this-sweep'" in err
    err = _error(base + ["--experiment", "nope", "--sync", str(swept.path)], capsys)
    assert "no experiment named 'nope'" in err and "syn" in err
    err = _error(["--experiment", "syn", "--sync", str(swept.path), "--tracking-uri", f"sqlite:///{tmp_path}/no/none.db"],
                 capsys)
    assert f"tracking_uri: folder '{tmp_path}/no' of " in err
    # a store that lost the sweep is rebuilt from the folder, not refused (tests/test_confirm.py checks it run for run)
    assert main(["--experiment", "syn", "--sync", str(swept.path), "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 0
    assert "record rebuilt from the sweep folder (no MLflow database at " in capsys.readouterr().out
    port = free_port()
    err = _error(["--experiment", "syn", "--sync", str(swept.path), "--tracking-uri", f"http://127.0.0.1:{port}"], capsys)
    assert "cannot reach MLflow server" in err
