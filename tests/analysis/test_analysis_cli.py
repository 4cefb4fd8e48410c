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


def test_leaderboard_prints_the_best_first(store, capsys):
    assert main(["leaderboard", "--experiment", "srrl-a", "--tracking-uri", store.uri, "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "trial_id" in lines[0] and len(lines) == 2 + 3  # header, index name row, 3 trials
    assert "lw_00001" in lines[2]


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
    csv = tmp_path / "trials.csv"
    assert main(["export", "-e", "srrl-a", "-e", "srrl-b", "--tracking-uri", store.uri, "--out", str(csv)]) == 0
    df = pd.read_csv(csv)
    assert len(df) == 23 and {"alpha", "val_acc", "arm", "status"} <= set(df.columns)
    pq = tmp_path / "history.parquet"
    assert main(["export", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(pq), "--history"]) == 0
    hist = pd.read_parquet(pq)
    assert list(hist.columns) == ["sweep", "run_id", "trial_id", "metric", "epoch", "value"]
    tq = tmp_path / "trials.parquet"
    assert main(["export", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(tq)]) == 0
    assert len(pd.read_parquet(tq)) == 11
    assert main(["export", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(tmp_path / "x.xlsx")]) == 2
    assert ".csv or .parquet" in capsys.readouterr().err


def test_report_command(store, tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["report", "-e", "srrl-a", "--tracking-uri", store.uri, "--out", str(out), "--no-log"]) == 0
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


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["leaderboard"])
    assert e.value.code == 2
