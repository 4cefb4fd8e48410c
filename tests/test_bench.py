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


def test_recipe_grid_cells_cover_the_default_space_and_snap_in_log_space():
    from bench.recipe_grid import grid_points, key, snap, truth
    from tuner.config import TrialConfig

    base = TrialConfig.from_yaml("configs/digits.yaml")
    points = grid_points(base)
    assert len(points) == 5 * 5 * 3 + 1 and len({key(p) for p in points}) == len(points)
    assert {key(p) for p in points} >= {(1.0, 1.0, 0.05), (0.0, 0.0, 0.05), (100.0, 0.01, 0.8)}
    # the lr cells are base x 1, 4, 16: their borders lie at base x 2 and x 8 (equal log widths)
    assert snap({"alpha": 0.063, "beta": 0.24, "lr": 0.702}, points) == {"alpha": 0.1, "beta": 0.1, "lr": 0.8}
    assert snap({"alpha": 1.0, "beta": 1.0, "lr": 0.099}, points)["lr"] == 0.05
    assert snap({"alpha": 1.0, "beta": 1.0, "lr": 0.101}, points)["lr"] == 0.2
    assert snap({"alpha": 0.0, "beta": 0.0, "lr": 0.05}, points) == {"alpha": 0.0, "beta": 0.0, "lr": 0.05}
    runs = [{"alpha": 1.0, "beta": 1.0, "lr": 0.05, "seed": s, "test": t, "diverged": d}
            for s, t, d in ((1, 80.0, None), (2, 90.0, None), (3, 70.0, 12))]
    assert truth(runs)[(1.0, 1.0, 0.05)]["mean"] == (80.0 + 90.0 + 0.0) / 3  # a diverged run scores 0, as in a sweep
