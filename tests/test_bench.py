"""The benchmark suite runs end to end in quick mode and reports every scenario (targets are not asserted: CI is noisy)."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

def test_gpu_rows_refuse_to_start_without_cuda(capsys):
    import torch

    from bench.__main__ import main

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: --gpu would run")
    assert main(["--gpu"]) == 2
    assert capsys.readouterr().err == "error: gpu: no CUDA device here; run --gpu on a machine with a GPU\n"


@pytest.mark.slow
def test_quick_suite_reports_every_scenario(tmp_path, env):
    from bench import SCENARIOS

    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", "out.json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])

    header = next((line for line in proc.stdout.splitlines() if line.startswith("scenario")), "")
    assert header.split() == ["scenario", "ours", "baseline", "ratio", "target", "met"], proc.stdout[-3000:]

    report = json.loads((tmp_path / "out.json").read_text())
    assert report["mode"] == "quick"
    rows = {r["name"]: r for r in report["rows"] if not r["info"]}
    assert set(rows) == set(SCENARIOS), sorted(rows)
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        if row["skipped"]:
            assert name == "gpu_packing" and row["note"] == "no GPU" and report["gpu"] is None, row
            continue
        for key in ("ours", "baseline", "ratio"):
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, (name, key, row)
        assert row["target"] and isinstance(row["met"], bool), row
        assert row["scenario"] in proc.stdout
