"""python -m analysis: subcommands, output files and exit codes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def test_leaderboard_prints_the_best_first_with_run_ids_and_students(store, trials_a, capsys):
    from _analysis_store import LW, LW_STUDENT

    from tuner.core import metrics as M

    trials, _ = trials_a
    lw = trials[(trials["sweep"] == "lw") & (trials["stage"] == "search")]
    best = lw[lw["status"] == "finished"].sort_values(M.RANK_VAL_ACC, ascending=False)["trial_id"].iloc[0]
    from analysis.confirm_views import verdict_table

    assert main(["leaderboard", "--experiment", "srrl-a", "--tracking-uri", store.uri, "--top", "3"]) == 0
    out = capsys.readouterr().out
    board, answer = out.split("\n\n", 1)
    lines = board.splitlines()
    assert lines[0].split()[:3] == ["sweep", "run_id", "student_pt"] and len(lines) == 2 + 3  # header, index row
    assert best in lines[2]
    verdict, _ = verdict_table(trials)  # after the search's board, the answer (lw's confirmation)
    assert answer.startswith("lw: Confirmation (") and answer.rstrip().endswith(f"Verdict: {verdict.sentence}"), answer
    assert main(["leaderboard", "-e", "srrl-a", "--tracking-uri", store.uri, "--top", "0"]) == 0
    rows = capsys.readouterr().out.split("\n\n", 1)[0].splitlines()[2:]
    ids = dict(zip(trials["trial_id"], trials["run_id"]))
    assert len(rows) == len(LW) + 4 and not any("cf_" in r for r in rows)  # search trials only
    for row in rows:
        tid = next(t for t in ids if f" {t} " in f" {row} ")
        assert row.split()[2] == ids[tid] and row.split()[3] == str(tid == LW_STUDENT), row


def test_ablation_prints_every_arm(store, capsys):
    assert main(["ablation", "-e", "srrl-b", "--tracking-uri", store.uri]) == 0
    out = capsys.readouterr().out
    for arm in ("CE ", "CE+FM ", "CE+FM+SR+KD"):
        assert arm in out
    assert "p_value" in out


def test_ablation_without_arms_is_a_one_line_error(store, capsys):
    assert main(["ablation", "-e", "srrl-a", "--tracking-uri", store.uri]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "arm" in err


def test_export_csv_parquet_and_history(store, tmp_path, capsys):
    from _analysis_store import LW, N_CONFIRM, PAR

    n_a = len(LW) + N_CONFIRM + len(PAR)
    csv = tmp_path / "trials.csv"
    assert main(["export", "-e", "srrl-a", "-e", "srrl-b", "--tracking-uri", store.uri, "--out", str(csv)]) == 0
    df = pd.read_csv(csv)
    assert len(df) == n_a + 12 and {"alpha", "val_acc", "arm", "status", "stage", "config_id"} <= set(df.columns)
    pq = tmp_path / "history.parquet"
    assert main(["export", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(pq), "--history"]) == 0
    hist = pd.read_parquet(pq)
    assert list(hist.columns) == ["sweep", "run_id", "trial_id", "metric", "epoch", "value"]
    tq = tmp_path / "trials.parquet"
    assert main(["export", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(tq)]) == 0
    assert len(pd.read_parquet(tq)) == n_a
    assert main(["export", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(tmp_path / "x.xlsx")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err


def test_export_parquet_keeps_every_dtype(store, trials_a, tmp_path, capsys):
    """``--format parquet`` whatever the name; read back, every column has the dtype load_trials gave it."""
    from analysis.runs import load_trials

    out = tmp_path / "trials.data"
    assert main(["export", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(out), "--format", "parquet"]) == 0
    back = pd.read_parquet(out)
    trials = load_trials("srrl-a", store.uri)
    assert list(back.columns) == list(trials.columns)
    lists = [c for c in trials.columns if trials[c].map(lambda v: isinstance(v, list)).any()]
    assert lists == ["lr_milestones"]  # parquet keeps them as text
    assert dict(back.dtypes.drop(lists)) == dict(trials.dtypes.drop(lists))
    kinds = {str(t) for t in trials.dtypes}
    assert {"int64", "float64", "bool", "Int64"} <= kinds and any(k.startswith("datetime64") and "UTC" in k for k in kinds)
    assert back["config_rank"].dtype == "Int64" and back["stopped_at_epoch"].dtype == "Int64"
    assert back["recommended"].dtype == bool and back["epochs_run"].dtype == "int64"
    same = ["run_id", "epochs_run", "start_time", "stopped_at_epoch", "config_rank", "recommended", "alpha", "val_acc"]
    pd.testing.assert_frame_equal(back[same], trials[same])
    assert back["lr_milestones"].iloc[0] == str(trials["lr_milestones"].iloc[0])  # lists: as text
    csv = tmp_path / "as-csv.parquet"
    assert main(["export", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(csv), "--format", "csv"]) == 0
    assert len(pd.read_csv(csv)) == len(trials)  # --format wins over the extension
    with pytest.raises(SystemExit) as e:
        main(["export", "-e", "srrl-a", "--out", str(out), "--format", "xlsx"])
    assert e.value.code == 2


def test_report_command(store, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(out)]) == 0
    assert (out / "report.html").is_file() and (out / "report.md").is_file()


def test_unknown_experiment_exits_2_with_one_line(store):
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "analysis", "leaderboard", "--experiment", "nope",
                           "--tracking-uri", store.uri], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "'nope'" in proc.stderr and "srrl-a" in proc.stderr and "srrl-b" in proc.stderr


def test_bad_tracking_uri_and_missing_database_exit_2(tmp_path, capsys):
    assert main(["leaderboard", "-e", "x", "--tracking-uri", str(tmp_path)]) == 2
    assert "file store" in capsys.readouterr().err
    assert main(["leaderboard", "-e", "x", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    assert "no MLflow database" in capsys.readouterr().err
    import sqlite3

    with sqlite3.connect(tmp_path / "half.db") as db:
        db.execute("create table t (x text)")
        db.executemany("insert into t values (?)", [("x" * 200,)] * 2000)
    (tmp_path / "half.db").write_bytes((tmp_path / "half.db").read_bytes()[:200_000])  # cut to about half
    assert main(["leaderboard", "-e", "x", "--tracking-uri", f"sqlite:///{tmp_path}/half.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a readable MLflow store (database disk image is malformed)" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["leaderboard"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["sync", "--experiment", "x"])  # the commands that write are the driver's (run_search.py --sync)
    assert e.value.code == 2 and "invalid choice: 'sync'" in capsys.readouterr().err


def test_the_driver_commands_that_write_refuse_bad_input_in_one_line(tmp_path, capsys):
    import run_search

    assert run_search.main(["--sync", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"error: sync: {str(tmp_path)!r} holds no Tune trial folders (*/result.json); "
                                       "give the sweep's own folder, <storage_path>/<sweep name>\n")
    assert run_search.main(["--confirm-sweep", "x", "--confirm", "two"]) == 2
    assert capsys.readouterr().err == "error: confirm: must be a whole number >= 1, got 'two'\n"
    assert run_search.main(["--confirm-sweep", "x", "--tracking-uri", f"sqlite:///{tmp_path}/none.db"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no MLflow database" in err, err
    assert not list(tmp_path.iterdir())  # nothing written
    with pytest.raises(SystemExit) as e:
        run_search.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--sync SWEEP_DIR" in out and "--confirm-sweep EXPERIMENT" in out
