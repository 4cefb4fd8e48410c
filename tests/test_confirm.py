"""The confirmation stage and warm starts end to end, with real Ray, Optuna and MLflow (SQLite): what the
records say, an interrupted confirmation resumed, a sweep confirmed later, a study seeded from earlier sweeps."""
from __future__ import annotations

import json

import pytest

from tests._helpers import cli_env, cli_study, ray_tmpdir, run_search, trial_runs, tune_results

pytestmark = pytest.mark.slow


def _client(folder):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")


def _parent(folder, name):
    client = _client(folder)
    exp = client.get_experiment_by_name(name)
    return next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("srrl.role") == "sweep")


def _stage(runs, stage):
    return [r for r in runs if r.data.tags.get("srrl.stage") == stage]


@pytest.fixture(scope="module")
def confirmed(tmp_path_factory):
    """``run_search.py --smoke``: 4 search trials, then 1 candidate + (1, 1) + CE-only x 2 seeds."""
    tmp = tmp_path_factory.mktemp("confirmed")
    with ray_tmpdir() as ray_tmp:
        # the (alpha, beta) space: these tests are about the stage's mechanics, whatever the default searches
        proc = run_search(tmp, cli_env(ray_tmp), "--name", "cf", "--smoke", "--space", "loss_weights")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, proc


def test_confirmation_runs_belong_to_the_sweep_and_its_verdict_is_on_the_parent(confirmed):
    tmp, proc = confirmed
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    runs = trial_runs(uri, "cf")
    search, confirm = _stage(runs, "search"), _stage(runs, "confirm")
    assert len(search) == 4 and len(confirm) == 6 and len(runs) == 10
    groups = {}
    for r in confirm:
        groups.setdefault(r.data.tags["srrl.config_id"], []).append(r)
    assert sorted(groups) == ["c1", "ce", "ref"]
    for cid, members in groups.items():
        assert sorted(int(r.data.params["seed"]) for r in members) == [1, 2]  # fresh seeds, not the search's 0
        assert all(r.data.tags["srrl.status"] == "finished" for r in members)
        assert len({(r.data.params["alpha"], r.data.params["beta"]) for r in members}) == 1
    assert {r.data.tags["srrl.config_role"] for r in groups["ref"]} == {"reference"}
    assert {(r.data.params["alpha"], r.data.params["beta"]) for r in groups["ref"]} == {("1.0", "1.0")}
    assert {(r.data.params["alpha"], r.data.params["beta"]) for r in groups["ce"]} == {("0.0", "0.0")}
    assert sorted(r.info.run_name for r in groups["ce"]) == ["confirm CE only seed=1", "confirm CE only seed=2"]
    assert sorted(r.info.run_name for r in groups["ref"]) == ["confirm a=1 b=1 seed=1", "confirm a=1 b=1 seed=2"]
    assert {r.info.run_name for r in search} >= {"a=1 b=1", "a=1 b=5", "a=10 b=1"}
    assert sorted(r.data.tags["srrl.origin"] for r in search) == ["authors"] * 3 + ["search"]

    parent = _parent(tmp, "cf")
    sentence = parent.data.tags["srrl.verdict"]
    assert f"Verdict: {sentence}" in proc.stdout
    client = _client(tmp)
    verdict = json.loads(open(client.download_artifacts(parent.info.run_id, "verdict/verdict.json")).read())
    assert verdict["sentence"] == sentence and verdict["recommended"] in groups
    rec = next(c for c in verdict["configs"] if c["config_id"] == verdict["recommended"])
    # the parent's metrics are named by what they describe, rounded as every table shows them
    for role, cid in (("recommended", verdict["recommended"]), ("reference", "ref"), ("ce", "ce"), ("candidate", "c1")):
        conf = next(c for c in verdict["configs"] if c["config_id"] == cid)
        assert parent.data.metrics[f"{role}_seeds"] == 2
        for m in ("best_val_acc", "test_acc"):
            assert parent.data.metrics[f"{role}_{m}_mean"] == round(conf["metrics"][m]["mean"], 2), (role, m)
            assert parent.data.metrics[f"{role}_{m}_ci_low"] == round(conf["metrics"][m]["low"], 2), (role, m)
    assert parent.data.metrics["search_top_seeds"] == 1 and "search_top_best_val_acc" in parent.data.metrics
    assert not [k for k in parent.data.metrics if k.startswith(("verdict_", "best_search_"))]
    tests = [r.data.metrics["test_acc"] for r in groups[verdict["recommended"]]]
    assert rec["metrics"]["test_acc"]["mean"] == pytest.approx(sum(tests) / 2)
    tagged = {r.data.tags["srrl.config_id"] for r in confirm if r.data.tags.get("srrl.recommended") == "true"}
    assert tagged == {verdict["recommended"]}
    assert parent.data.tags["srrl.recommended.alpha"] == str(rec["params"]["alpha"])


def test_the_mlflow_record_reads_as_a_model_training_experiment(confirmed):
    tmp, _ = confirmed
    client = _client(tmp)
    exp = client.get_experiment_by_name("cf")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = _parent(tmp, "cf")
    # the verdict is the experiment's Description (MLflow's experiment list) and the parent run's description
    sentence = parent.data.tags["srrl.verdict"]
    for note in (exp.tags["mlflow.note.content"], parent.data.tags["mlflow.note.content"]):
        assert note.startswith("### Sweep cf\n**Verdict:** " + sentence) and "| **recommended** |" in note, note
    # a saved runs-table view with the columns that say how each trial did, best first
    view = json.loads(exp.tags["mlflow.sharedViewState.srrl"])
    state = json.loads(view["state"])
    assert {"metrics.`best_val_acc`", "metrics.`test_acc`", "tags.`srrl.stage`", "params.`alpha`"} <= set(state["selectedColumns"])
    assert state["orderByKey"] == "metrics.`best_val_acc`" and state["orderByAsc"] is False
    assert isinstance(view["createdAt"], int) and view["name"]
    assert parent.data.params and all(k.startswith("sweep.") for k in parent.data.params)
    run = next(r for r in _stage(trial_runs(f"sqlite:///{tmp / 'mlflow.db'}", "cf"), "search")
               if r.data.tags["srrl.status"] == "finished")
    assert "alpha" in run.data.params and "epochs" in run.data.params  # children keep every trial field
    assert "epoch" not in run.data.metrics and "train_loss" not in run.data.metrics
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss_total")] == [1, 2, 3]
    for once in ("student_params", "student_macs", "teacher_val_acc", "test_acc"):
        assert len(client.get_metric_history(run.info.run_id, once)) == 1, once


def test_each_ended_trial_keeps_only_the_checkpoint_its_last_result_names(confirmed):
    """Both stages are over: older checkpoints are deleted (a streamed ImageNet smoke left 2.6 GB of them, issue
    27.8); the last, which the export, --sync and a resumed log read, stays."""
    tmp, _ = confirmed
    folder = tmp / "ray_results" / "cf"
    epochs = []
    for stage in (folder, folder / "confirm"):
        for trial, rows in tune_results(stage, by_dir=True).items():
            assert [p.name for p in (stage / trial).glob("checkpoint_*")] == [rows[-1]["checkpoint_dir_name"]], trial
            epochs.append(len(rows))
    assert len(epochs) == 10 and max(epochs) == 3  # the trials reported 3 checkpoints each, at most: 2 went


def test_a_trial_folders_name_gives_its_trial_id_in_both_stages(confirmed):
    """What a trial that never logged has for an id (``storage.trial_id_of``): both stages' folder names, as this Ray
    names them, and an older srrl-tune's confirmation folders (``BasicVariantGenerator``'s ``xxxxx_NNNNN``)."""
    from tuner.driver.storage import trial_id_of

    tmp, _ = confirmed
    folder = tmp / "ray_results" / "cf"
    ids = {stage.name: {trial_id_of(trial): rows[-1]["trial_id"] for trial, rows in tune_results(stage, by_dir=True).items()}
           for stage in (folder, folder / "confirm")}
    assert all(ids[stage] and all(k == v for k, v in ids[stage].items()) for stage in ids), ids
    assert trial_id_of("train_srrl_2f1ef_00003_3_alpha=0.3000,config_id=c1_2026-12-01_10-00-00") == "2f1ef_00003"


def test_optuna_trials_and_mlflow_runs_point_at_each_other(confirmed):
    tmp, _ = confirmed
    study = cli_study(tmp, "cf")
    assert study.metric_names == ["best_val_acc"]
    # optuna-dashboard shows the confirmed answer: the study's attributes and note
    from optuna_dashboard import get_note

    parent = _parent(tmp, "cf")
    attrs = study.user_attrs
    assert attrs["verdict"] == parent.data.tags["srrl.verdict"] and attrs["mlflow_parent_run"] == parent.info.run_id
    assert attrs["recommended"]["label"] == parent.data.tags["srrl.recommended"]
    assert attrs["confirmed"]["recommended_test_acc_mean"] == parent.data.metrics["recommended_test_acc_mean"]
    note = get_note(study)
    assert note.startswith("### Study cf\n**Verdict:** " + attrs["verdict"]) and parent.info.run_id in note
    search = _stage(trial_runs(f"sqlite:///{tmp / 'mlflow.db'}", "cf"), "search")
    by_number = {int(r.data.tags["srrl.optuna_trial"]): r for r in search}
    assert sorted(by_number) == sorted(t.number for t in study.trials)
    for t in study.trials:
        run = by_number[t.number]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert t.user_attrs["tune_trial_id"] == run.data.tags["srrl.trial_id"]


def test_both_stages_of_a_sweep_an_older_srrl_tune_wrote_are_rebuilt_on_resume(confirmed, tmp_path, env):
    """The confirmed sweep as an srrl-tune before the stall watch left it (no ``tuner_pkl`` in its sweep file, no
    watch in either stage's tuner.pkl), interrupted: --resume rebuilds both tuner.pkl from the sweep file, both
    stages restore, no run is added or redone, and the verdict stands. A first --resume is SIGKILLed once the
    search stage's file is rebuilt: the sweep file says today's version only if the confirmation's is too.

    And the kill skew of a loaded round, set up exactly: the driver died after Tune's experiment state (the trial
    ended) reached storage but before the trial's last result.json did. ``--resume`` completes the log from the
    newest checkpoint's history, so table, study and MLflow agree with what the trial ran."""
    import json
    import re
    import shutil

    import yaml

    from tests._helpers import (as_an_older_srrl_tune_wrote_it, assert_records_agree, kill_when, stall_watched,
                                start_run_search)
    from tuner.driver.sweep_file import TUNER_PKL, TUNER_PKL_ADDED

    src, first = confirmed
    folder = tmp_path / "ray_results" / "cf"  # a copy with its own stores: the fixture's stay as they are
    shutil.copytree(src / "ray_results" / "cf", folder)
    shutil.copy(src / "optuna.db", tmp_path / "optuna.db")
    settings = (folder / "srrl_sweep.yaml").read_text()
    (folder / "srrl_sweep.yaml").write_text(settings.replace(f"sqlite:///{src}", f"sqlite:///{tmp_path}"))
    synced = run_search(tmp_path, env, "--sync", str(folder), timeout=300)  # its MLflow record, rebuilt here
    assert synced.returncode == 0, synced.stderr[-3000:]
    _client(tmp_path).update_run(_parent(tmp_path, "cf").info.run_id, status="RUNNING")  # as a killed driver left it
    # a search trial whose best is not its first epoch, its result log cut after epoch 1 and a torn line
    full = tune_results(folder, by_dir=True)
    trial, rows = max(((name, rows) for name, rows in full.items() if len(rows) >= 2),
                      key=lambda kv: max(r["val_acc"] for r in kv[1][1:]))
    (folder / trial / "result.json").write_text(json.dumps(rows[0]) + "\n" + json.dumps(rows[1])[:40])
    as_an_older_srrl_tune_wrote_it(folder)

    def watched(stage) -> bool:
        try:
            return stall_watched(stage)
        except Exception:  # being written
            return False

    kill_when(start_run_search(tmp_path, env, "--resume", str(folder)), lambda: watched(folder))
    version = yaml.safe_load((folder / "srrl_sweep.yaml").read_text())["tuner_pkl"]
    # today's version only once the confirmation's file is today's too; the kill may come before the search's file
    # is saved (1, False), after the confirmation's is rebuilt but before the sweep file says so (1, True), or after
    assert (version, watched(folder / "confirm")) in {(1, False), (1, True), (TUNER_PKL, True)}, version
    # the result log is completed before any restore: by the killed resume
    assert "completed the result.json of 1 trial(s) from their newest checkpoints" in (tmp_path / "driver-1.log").read_text()

    proc = run_search(tmp_path, env, "--resume", str(folder))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the resume that found the old version in the sweep file rebuilt both stages' files: this one, or the killed
    # one when the kill came after it said today's (a loaded round's kill landed there)
    rebuilder = proc.stdout if version == 1 else (tmp_path / "driver-1.log").read_text()
    for stage in (folder, folder / "confirm"):
        assert f"{stage}/tuner.pkl was written by an older srrl-tune (version 1 of its Tune objects, not {TUNER_PKL}: no " \
               f"stall watch, no {TUNER_PKL_ADDED[3]}); rebuilt it from srrl_sweep.yaml" in rebuilder, rebuilder[-3000:]
        assert stall_watched(stage)
    assert f"tuner_pkl: {TUNER_PKL}" in (folder / "srrl_sweep.yaml").read_text()
    assert "confirmation: continuing" in proc.stdout
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "cf")
    before = trial_runs(f"sqlite:///{src / 'mlflow.db'}", "cf")
    ended = [sorted((r.data.tags["srrl.trial_id"], r.data.tags["srrl.status"]) for r in rs) for rs in (runs, before)]
    assert ended[0] == ended[1] and len(runs) == 10  # the same trials, ended as they were: none added or redone
    verdict = next(line for line in first.stdout.splitlines() if line.startswith("Verdict: "))
    assert verdict in proc.stdout.splitlines()

    rebuilt = tune_results(folder, by_dir=True)[trial]
    assert [r["epoch"] for r in rebuilt] == [r["epoch"] for r in rows]
    assert [r.get("rebuilt_from_checkpoint", False) for r in rebuilt] == [False] + [True] * (len(rows) - 1)
    for key in ("val_acc", "best_val_acc", "loss_total", "lr", "test_acc", "student_params"):
        assert [r.get(key) for r in rebuilt] == [r.get(key) for r in rows], key  # bit-equal: the checkpoint's own
    assert rebuilt[-1]["trial_id"] == rows[-1]["trial_id"] and rebuilt[-1]["config"] == rows[-1]["config"]
    assert rebuilt[-1]["checkpoint_dir_name"] == rows[-1]["checkpoint_dir_name"]
    best = f"{max(r['val_acc'] for r in rows):.2f}"
    assert re.search(rf"^\s*1 .*{best}", proc.stdout, re.M) or best in proc.stdout, proc.stdout[-2000:]
    assert_records_agree(f"sqlite:///{tmp_path / 'mlflow.db'}", "cf", folder, cli_study(tmp_path, "cf"))


def test_warm_start_then_confirm_later(confirmed, tmp_path, env):
    """A sweep seeded from earlier ones (one point fits, one lies outside), run without confirmation,
    then confirmed with ``python run_search.py --confirm-sweep NAME``."""
    src, _ = confirmed
    for f in ("mlflow.db",):
        (tmp_path / f).write_bytes((src / f).read_bytes())
    client = _client(tmp_path)
    parent = _parent(tmp_path, "cf")
    for k, v in (("srrl.recommended.alpha", "0.3"), ("srrl.recommended.beta", "2.0")):
        client.set_tag(parent.info.run_id, k, v)  # as if cf's confirmation had recommended (0.3, 2.0)
    far = client.create_experiment("far")
    far_parent = client.create_run(far, tags={"srrl.role": "sweep", "srrl.sweep": "far",
                                              "srrl.recommended.alpha": "1000", "srrl.recommended.beta": "1"})
    client.set_terminated(far_parent.info.run_id)

    proc = run_search(tmp_path, env, "--name", "ws", "--smoke", "--space", "loss_weights", "--confirm", "0",
                      "--warm-start", "cf", "--warm-start", "far")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warm start: far skipped: alpha = 1000.0 is outside [0.01, 100]" in proc.stdout
    assert "No confirmation: the confirmation stage is off (--confirm 0)" in proc.stdout
    runs = trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "ws")
    warm = [r for r in runs if r.data.tags.get("srrl.origin") == "warm-start"]
    assert [(r.data.params["alpha"], r.data.params["beta"]) for r in warm] == [("0.3", "2.0")]
    assert json.loads(_parent(tmp_path, "ws").data.tags["srrl.warm_start"]) == [
        {"experiment": "cf", "source": "confirmed", "params": {"alpha": 0.3, "beta": 2.0}}]
    assert "warm-start" in proc.stdout  # the leaderboard's origin column
    assert not _stage(runs, "confirm")

    later = run_search(tmp_path, env, "--confirm-sweep", "ws", "--confirm", "1", "--confirm-seeds", "2",
                       "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", timeout=300)
    assert later.returncode == 0, later.stderr[-3000:]
    confirm = _stage(trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "ws"), "confirm")
    assert len(confirm) == 6
    sentence = _parent(tmp_path, "ws").data.tags["srrl.verdict"]
    assert sentence in later.stdout


def test_the_verdict_is_two_clicks_from_mlflows_landing_page(confirmed, tmp_path):
    """As a user opens ``mlflow ui`` in a fresh browser (docs/tracking.md, "Finding the answer"): the landing page
    lists the experiment with the verdict as its Description; click "Model training", click the experiment: the
    runs table, not the GenAI overview, with the verdict on the page; the printed link opens the saved view
    with the accuracy columns. Fails when an MLflow release moves any of it."""
    from tests._browser import browser_page, chromium
    from tests._outages import MlflowServer

    chromium()  # skips where no browser can run
    tmp, proc = confirmed
    sentence = _parent(tmp, "cf").data.tags["srrl.verdict"]
    server = MlflowServer(tmp_path, store=tmp / "mlflow.db")
    server.start()
    try:
        with browser_page() as page:
            page.goto(server.uri + "/#/")
            page.wait_for("document.body.innerText.includes('cf') && document.body.innerText.includes('Model training')",
                          what="the landing page with the experiment and the workflow switch")
            landing = page.text()
            assert sentence[:40] in landing, landing[:2000]  # the Description column: the verdict
            assert page.click_text("Model training"), "no 'Model training' switch on the landing page"  # click 1
            page.wait_for("localStorage.getItem('mlflow.workflowType_v1') === '\"machine_learning\"' || "
                          "(localStorage.getItem('mlflow.workflowType_v1') || '').includes('machine_learning')",
                          what="the switch to Model training")
            link = page.js("""(() => { const a = [...document.querySelectorAll('a')]
                .find(a => a.textContent.trim() === 'cf'); if (!a) return ''; a.click(); return a.href; })()""")
            assert link, "no link to the experiment on the landing page"  # click 2
            page.wait_for("location.hash.includes('/runs')", what="the runs table after two clicks")
            assert "genai" not in page.js("location.href")
            page.wait_for(f"document.body.innerText.includes({json.dumps(sentence[:40])})",
                          what="the verdict on the experiment's runs page")

            printed = next(line.split()[-1] for line in proc.stdout.splitlines() if "viewStateShareKey" in line)
            # as pasted into a new tab: a fresh load of the app (a hash change inside it keeps the table's state)
            page.goto("about:blank")
            page.wait_for("location.href === 'about:blank'", what="a blank tab")
            page.goto(printed.replace("http://127.0.0.1:5000", server.uri))
            headers = page.wait_for("""(() => { const h = [...document.querySelectorAll('[role=columnheader]')]
                .map(e => e.innerText.trim()).join('|'); return h.includes('best_val_acc') ? h : ''; })()""",
                                    what="the saved view's best_val_acc column")
            assert "test_acc" in headers and "alpha" in headers, headers
    finally:
        server.stop()


def _record(folder, name):
    """(parent, {trial id: child run}) of sweep ``name`` in the store beside ``folder``."""
    client = _client(folder)
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    parent = next(r for r in runs if r.data.tags.get("srrl.role") == "sweep")
    return parent, {r.data.tags["srrl.trial_id"]: r for r in runs if r.data.tags.get("srrl.role") == "trial"}


def test_a_lost_store_is_refused_by_resume_and_rebuilt_from_the_sweep_folder(confirmed, tmp_path, env, capsys):
    """The sweep folder holds all its record is made of (issue 27.6): with mlflow.db gone, --resume says how to
    rebuild it, before Ray starts; --sync rebuilds parent, child runs of both stages and the verdict, run for run
    as the driver logged them; a second --sync adds nothing."""
    import shutil
    from pathlib import Path

    import run_search as cli

    tmp, _ = confirmed
    moved = tmp_path / "ray_results" / "cf"  # the folder moved, its settings naming stores that no longer exist
    shutil.copytree(tmp / "ray_results" / "cf", moved)
    settings = (moved / "srrl_sweep.yaml").read_text()
    (moved / "srrl_sweep.yaml").write_text(settings.replace(f"sqlite:///{tmp}", f"sqlite:///{tmp_path}"))
    proc = run_search(tmp_path, env, "--resume", str(moved), timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: resume: no MLflow database at '{tmp_path}/mlflow.db'; rebuild the record from the sweep folder with "
        f"`python run_search.py --sync {moved}`, then resume"], proc.stderr[-2000:]
    assert not (Path(env["RAY_TMPDIR"]) / "ray").exists() and not (tmp_path / "mlflow.db").exists()

    capsys.readouterr()
    assert cli.main(["--sync", str(moved)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"sync 'cf' (experiment 'cf'): record rebuilt from the sweep folder (no MLflow database at "
                           f"'{tmp_path}/mlflow.db'): 10 trials, 10 runs created, "), line
    assert "parent run ended FINISHED; verdict logged: " in line, line
    parent, children = _record(tmp, "cf")
    rebuilt_parent, rebuilt = _record(tmp_path, "cf")
    assert sorted(rebuilt) == sorted(children) and len(children) == 10
    for tid, run in children.items():
        again = rebuilt[tid]
        assert (again.info.run_name, again.info.status, again.data.params, again.data.metrics) == \
               (run.info.run_name, run.info.status, run.data.params, run.data.metrics), tid
        same = {k: v for k, v in run.data.tags.items() if k.startswith("srrl.")}
        assert {k: again.data.tags.get(k) for k in same} == same, tid
    moved_params = {k: v.replace(f"sqlite:///{tmp}", f"sqlite:///{tmp_path}") for k, v in parent.data.params.items()}
    assert rebuilt_parent.info.status == "FINISHED" and rebuilt_parent.data.params == moved_params
    assert rebuilt_parent.data.metrics == parent.data.metrics  # the verdict's role-named means and intervals
    teacher = ("srrl.teacher", "srrl.teacher_hash", "srrl.teacher_path", "srrl.teacher_val_acc", "srrl.teacher_test_acc")
    for tag in ("srrl.verdict", "mlflow.note.content", "srrl.recommended", "srrl.space", "srrl.student", *teacher):
        assert rebuilt_parent.data.tags[tag] == parent.data.tags[tag], tag
    artifacts = [[f.path for f in _client(where).list_artifacts(run.info.run_id, "teacher")]
                 for where, run in ((tmp, parent), (tmp_path, rebuilt_parent))]
    assert artifacts[0] == artifacts[1] and len(artifacts[0]) == 1, artifacts  # the teacher's weights, as the driver logged them
    assert rebuilt_parent.data.tags["srrl.rebuilt_from"].startswith(f"{moved} at ")

    assert cli.main(["--sync", str(moved)]) == 0  # nothing left to add
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert ": 10 trials, 0 runs created, 0 metrics backfilled, 0 runs ended, 0 students exported; parent run already " \
           "FINISHED" in line and "rebuilt" not in line and "verdict" not in line, line
    # the moved folder resumes where it lies (its settings' storage_path is the old place): finished, it prints its
    # verdict and the command that continues it there
    proc = run_search(tmp_path, env, "--resume", str(moved), timeout=120)
    assert proc.returncode == 0 and f"python run_search.py --resume {moved} " in proc.stdout, proc.stderr[-2000:]
    assert rebuilt_parent.data.tags["srrl.verdict"] in " ".join(proc.stdout.split())
