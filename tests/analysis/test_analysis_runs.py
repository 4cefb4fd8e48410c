"""analysis.runs against a real MLflow SQLite store written by tuner.tracking (see conftest.py)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from _analysis_store import (
    ABL_EPOCHS, ARM_MEANS, CONFIRM, CONFIRM_ERRORED, LW, LW_EPOCHS, LW_SPIKE, LW_STUDENT, N_CONFIRM, PAR,
    RECOMMENDED, RESUMED_EPOCH2, SEEDS, lw_acc, lw_curve,
)

from analysis import runs
from tuner.tracking import read
from tuner.core import metrics as M


def test_one_row_per_trial_deleted_runs_excluded(store, trials_a):
    trials, _ = trials_a
    assert len(trials) == len(LW) + N_CONFIRM + len(PAR)
    assert trials["run_id"].is_unique
    confirm = {f"cf_{n:05d}" for n in range(1, N_CONFIRM + 1)}
    assert set(trials["trial_id"]) == set(LW) | set(PAR) | confirm
    assert store.deleted not in set(trials["run_id"])
    assert set(trials["sweep"]) == {"lw", "par"}
    assert set(trials["experiment"]) == {"srrl-a"}
    assert trials["start_time"].is_monotonic_increasing


def test_params_have_their_real_types(trials_a, trials_b):
    a, _ = trials_a
    b, _ = trials_b
    assert a["alpha"].dtype == np.float64 and a["beta"].dtype == np.float64
    assert a["epochs"].dtype == np.int64 and a["batch_size"].dtype == np.int64
    assert a["nesterov"].dtype == bool
    assert a["val_fraction"].dtype == np.float64 and a["val_fraction"].isna().all()  # "None" -> NaN
    assert a["data_dir"].isna().all()
    assert all(isinstance(v, list) and all(isinstance(x, float) for x in v) for v in a["lr_milestones"])
    assert set(a["student"]) >= {p[0] for p in PAR.values()}
    assert b["seed"].dtype == np.int64 and set(b["seed"]) == set(SEEDS)
    assert set(b["arm"]) == set(ARM_MEANS) and isinstance(b["arm"].iloc[0], str)
    assert b["gamma"].dtype == np.float64
    lw = a.set_index("trial_id")
    for tid, (alpha, beta, _, _) in LW.items():
        assert lw.loc[tid, "alpha"] == alpha and lw.loc[tid, "beta"] == beta
    # every field of each sweep's base config, from the child runs' own params
    assert set(a.groupby("sweep")["epochs"].first().items()) == {("lw", LW_EPOCHS), ("par", 3)}
    assert dict(a.groupby("sweep")["nesterov"].all()) == {"lw": True, "par": False}


def test_every_config_field_comes_from_the_child_runs(store, trials_a):
    """The parent holds only the sweep's own settings (``sweep.*``): the trial config is the child's params."""
    from mlflow.tracking import MlflowClient

    from analysis._params import field_types

    trials, _ = trials_a
    assert set(field_types()) <= set(trials.columns)
    assert trials["lr"].notna().all() and (trials.loc[trials["sweep"] == "lw", "weight_decay"] == 5e-4).all()
    parent = MlflowClient(store.uri).get_run(store.parents["lw"])
    assert parent.data.params and all(k.startswith("sweep.") for k in parent.data.params)


def test_stage_and_label_columns(trials_a, trials_b):
    trials, _ = trials_a
    t = trials.set_index("trial_id")
    assert list(trials.columns[12:19]) == list(runs.LABEL_COLUMNS)
    assert dict(trials.groupby("sweep")["stage"].value_counts()) == {("lw", "search"): len(LW),
                                                                      ("lw", "confirm"): N_CONFIRM,
                                                                      ("par", "search"): len(PAR)}  # no tag: search
    for n, (tid, (_, _, _, origin)) in enumerate(LW.items()):
        assert t.loc[tid, "origin"] == origin and t.loc[tid, "optuna_trial"] == n
        assert pd.isna(t.loc[tid, "config_id"]) and pd.isna(t.loc[tid, "config_rank"])
    confirm = trials[trials["stage"] == "confirm"]
    assert confirm["origin"].isna().all() and confirm["optuna_trial"].isna().all()
    for cid, (role, rank, alpha, beta, vals, _) in CONFIRM.items():
        runs_of = confirm[confirm["config_id"] == cid]
        assert len(runs_of) == len(vals) + (cid == CONFIRM_ERRORED)
        assert (runs_of["config_role"] == role).all() and (runs_of["alpha"] == alpha).all()
        assert list(runs_of["config_rank"].dropna()) == ([rank] * len(runs_of) if rank else [])
        assert (runs_of["recommended"] == (cid == RECOMMENDED)).all()
    assert trials["recommended"].sum() == len(CONFIRM[RECOMMENDED][4])
    assert trials["config_rank"].dtype == "Int64" and trials["optuna_trial"].dtype == "Int64"
    assert trials["recommended"].dtype == bool
    assert trials.loc[trials["sweep"] == "par", "origin"].isna().all()
    b, _ = trials_b
    assert (b["stage"] == "search").all() and b["config_id"].isna().all() and not b["recommended"].any()


def test_status_epochs_and_end_tags(trials_a):
    trials, _ = trials_a
    t = trials.set_index("trial_id")
    expected = {"finished": "finished", "resumed": "finished", "stopped_early": "stopped_early",
                "diverged": "diverged", "errored": "errored", "running": "running"}
    expected["stopped_at_1"] = "stopped_early"
    for tid, (_, _, how, _) in LW.items():
        assert t.loc[tid, "status"] == expected[how]
    assert trials["epochs_run"].dtype == np.int64
    assert t.loc["lw_00001", "epochs_run"] == LW_EPOCHS
    assert t.loc["lw_00004", "epochs_run"] == 2 and t.loc["lw_00004", "stopped_at_epoch"] == 2
    assert t.loc["lw_00009", "epochs_run"] == 1 and t.loc["lw_00009", "stopped_at_epoch"] == 1
    assert t.loc["lw_00005", "epochs_run"] == 2 and t.loc["lw_00005", "diverged_epoch"] == 2
    assert t.loc["lw_00006", "epochs_run"] == 1 and "boom" in t.loc["lw_00006", "error"]
    assert t.loc["lw_00007", "epochs_run"] == 1  # running: no tag yet, the last epoch logged
    assert np.isnan(t.loc["lw_00007", "duration_s"]) and pd.isna(t.loc["lw_00007", "end_time"])
    done = trials[trials["status"] != "running"]
    assert (done["duration_s"] >= 0).all()
    assert set(trials["status"]) <= {"finished", "stopped_early", "diverged", "errored", "running"}


def test_final_best_and_rank_metrics(trials_a):
    trials, _ = trials_a
    t = trials.set_index("trial_id")
    alpha, beta, _, _ = LW["lw_00001"]
    assert t.loc["lw_00001", M.VAL_ACC] == pytest.approx(lw_acc(alpha, beta, LW_EPOCHS, LW_EPOCHS))
    assert t.loc["lw_00001", M.TEST_ACC] == pytest.approx(lw_acc(alpha, beta, LW_EPOCHS, LW_EPOCHS) - 1)
    for col in (M.VAL_ACC, M.TEST_ACC, M.STUDENT_MACS, M.BEST_VAL_ACC, M.RANK_VAL_ACC, M.TEACHER_VAL_ACC):
        assert trials[col].dtype == np.float64
    assert M.EPOCH not in trials.columns
    # the lucky last epoch: final and best val_acc are the spike; the ranking rule's value is the logged one
    assert t.loc["lw_00002", M.VAL_ACC] == t.loc["lw_00002", M.BEST_VAL_ACC] == LW_SPIKE["lw_00002"]
    for tid, (_, _, how, _) in LW.items():
        assert t.loc[tid, M.RANK_VAL_ACC] == pytest.approx(M.rank_value(lw_curve(tid))), tid
    # diverged in epoch 2: its last val_acc and its best are epoch 1's (the diverged epoch was never evaluated)
    alpha, beta, _, _ = LW["lw_00005"]
    assert t.loc["lw_00005", M.VAL_ACC] == t.loc["lw_00005", M.BEST_VAL_ACC] == pytest.approx(lw_acc(alpha, beta, 1, LW_EPOCHS))
    assert t.loc["lw_00005", "best_epoch"] == 1
    assert t.loc["par_00004", M.STUDENT_MACS] == PAR["par_00004"][2]


def test_best_without_history_is_the_logged_running_best(store, trials_a):
    with_history, _ = trials_a
    plain = runs.load_trials("srrl-a", store.uri)
    assert "best_epoch" not in plain.columns
    # every trial, a diverged one too: the logged running best is the best of its val history
    np.testing.assert_allclose(plain[M.BEST_VAL_ACC], with_history[M.BEST_VAL_ACC])


def test_history_is_complete(trials_a):
    trials, history = trials_a
    assert list(history.columns) == list(read.HISTORY_COLUMNS)
    assert history["epoch"].dtype == np.int64 and history["value"].dtype == np.float64
    assert not history.duplicated(["run_id", "metric", "epoch"]).any()
    for _, row in trials.iterrows():
        h = history[(history["run_id"] == row["run_id"]) & (history["metric"] == M.VAL_ACC)]
        evaluated = row["epochs_run"] - (row["status"] == "diverged")  # the epoch it diverged in has no val_acc
        assert list(h["epoch"]) == list(range(1, evaluated + 1)), row["trial_id"]
        assert (history.loc[history["run_id"] == row["run_id"], "trial_id"] == row["trial_id"]).all()
        assert (history.loc[history["run_id"] == row["run_id"], "sweep"] == row["sweep"]).all()
    # a finished lw trial: every per-epoch metric at every epoch
    fin = history[history["trial_id"] == "lw_00001"]
    for metric in M.PER_EPOCH:
        assert list(fin.loc[fin["metric"] == metric, "epoch"]) == list(range(1, LW_EPOCHS + 1)), metric
    alpha, beta, _, _ = LW["lw_00001"]
    np.testing.assert_allclose(fin.loc[fin["metric"] == M.VAL_ACC, "value"],
                               [lw_acc(alpha, beta, e, LW_EPOCHS) for e in range(1, LW_EPOCHS + 1)])


def test_has_artifact_finds_the_exported_student(store, trials_a):
    trials, _ = trials_a
    lw = trials[trials["sweep"] == "lw"]
    found = runs.has_artifact(lw["run_id"], store.uri)
    assert dict(zip(lw["trial_id"], found)) == {tid: tid == LW_STUDENT for tid in lw["trial_id"]}
    assert runs.has_artifact([], store.uri) == []


def test_history_duplicate_step_keeps_the_last_value(trials_a):
    _, history = trials_a
    h = history[(history["trial_id"] == "lw_00003") & (history["metric"] == M.VAL_ACC)]
    assert list(h["epoch"]) == [1, 2, 3, 4]
    assert h.loc[h["epoch"] == 2, "value"].item() == RESUMED_EPOCH2["second"]


def test_history_metric_filter_and_bulk_paths_agree(store, trials_a):
    _, history = trials_a
    only = runs.load_history("srrl-a", store.uri, metrics=[M.VAL_ACC, M.TEST_ACC])
    assert set(only["metric"]) == {M.VAL_ACC, M.TEST_ACC}
    pd.testing.assert_frame_equal(only, history[history["metric"].isin([M.VAL_ACC, M.TEST_ACC])].reset_index(drop=True))
    # the bulk SQL query (an adapter on MLflow's schema) against MLflow's public client: the server
    # path, on a pool of threads and as the naive loop, gives the same frame
    pd.testing.assert_frame_equal(runs.client_history("srrl-a", store.uri, threads=4), history)
    pd.testing.assert_frame_equal(runs.client_history("srrl-a", store.uri, threads=0), history)


def test_several_experiments_at_once(store, trials_a, trials_b):
    both = runs.load_trials(["srrl-a", "srrl-b"], store.uri)
    assert len(both) == len(trials_a[0]) + len(trials_b[0]) == len(LW) + N_CONFIRM + len(PAR) + len(ARM_MEANS) * len(SEEDS)
    assert set(both["experiment"]) == {"srrl-a", "srrl-b"}
    assert both.loc[both["sweep"] == "lw", "arm"].isna().all()
    history = runs.load_history(["srrl-a", "srrl-b"], store.uri, metrics=[M.VAL_ACC])
    assert set(history["sweep"]) == {"lw", "par", "abl"}
    abl = history[history["sweep"] == "abl"]
    assert len(abl) == len(ARM_MEANS) * len(SEEDS) * ABL_EPOCHS


def test_load_sweeps_parses_teacher_tags(store):
    sweeps = runs.load_sweeps(["srrl-a", "srrl-b"], store.uri)
    assert list(sweeps["sweep"]) == ["lw", "par", "abl"]
    assert sweeps["teacher_val_acc"].dtype == np.float64 and (sweeps["teacher_val_acc"] == 97.5).all()
    assert set(sweeps["space"]) == {"loss_weights", "pareto", "ablation"}
    assert dict(zip(sweeps["sweep"], sweeps["run_id"])) == store.parents


def test_unknown_experiment_lists_the_existing_ones(store):
    with pytest.raises(read.UnknownExperimentError) as e:
        runs.load_trials("nope", store.uri)
    msg = str(e.value)
    assert "'nope'" in msg and "srrl-a" in msg and "srrl-b" in msg and "\n" not in msg
    assert read.list_experiments(store.uri) == ["Default", "srrl-a", "srrl-b", "srrl-empty"]


def test_an_experiment_without_sweeps_gives_empty_frames(store, tmp_path):
    trials = runs.load_trials("srrl-empty", store.uri)
    assert trials.empty and {"sweep", "trial_id", "status", "epochs_run", "stage", "config_id", M.BEST_VAL_ACC,
                             M.RANK_VAL_ACC} <= set(trials.columns)
    history = runs.load_history("srrl-empty", store.uri)
    assert history.empty and list(history.columns) == list(read.HISTORY_COLUMNS)
    assert runs.load_sweeps("srrl-empty", store.uri).empty
    from analysis.report import write_report

    html, md = write_report("srrl-empty", store.uri, tmp_path)
    assert "No trials recorded yet." in html.read_text() and md.is_file()


def test_missing_store_is_an_error_not_a_new_database(tmp_path):
    uri = f"sqlite:///{tmp_path / 'absent.db'}"
    with pytest.raises(ValueError, match="no MLflow database"):
        runs.load_trials("x", uri)
    assert not (tmp_path / "absent.db").exists()
    with pytest.raises(ValueError, match="file store"):
        runs.load_trials("x", str(tmp_path))


def test_import_analysis_is_cheap():
    code = ("import sys, analysis; heavy = [m for m in ('pandas', 'mlflow', 'matplotlib', 'scipy', 'sqlalchemy') "
            "if m in sys.modules]; assert not heavy, heavy; assert callable(analysis.leaderboard)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(__import__("pathlib").Path(__file__).parents[2]))
