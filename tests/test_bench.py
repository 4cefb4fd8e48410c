"""The benchmark suite: every scenario is there, one runs end to end in quick mode (targets are not asserted: CI is noisy)."""
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


def test_every_scenario_is_a_module_with_its_name_and_run():
    """``python -m bench`` imports each scenario and calls its ``run(quick)``: all of them are there (not run here)."""
    import importlib
    import inspect

    from bench import SCENARIOS

    for name in SCENARIOS:
        module = importlib.import_module(f"bench.{name}")
        assert isinstance(module.SCENARIO, str) and module.SCENARIO, name
        assert list(inspect.signature(module.run).parameters) == ["quick"], name


@pytest.mark.slow
def test_one_quick_scenario_runs_end_to_end_into_the_table_and_the_json(tmp_path, env):
    """One scenario through ``python -m bench`` (the table, the JSON, the ratio); every scenario's own figures are the
    bench's to compute, by hand (README, "Benchmarks"), not CI's: the whole quick suite took minutes of the suite."""
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "data_pipeline", "--json", "out.json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-5000:])

    header = next((line for line in proc.stdout.splitlines() if line.startswith("scenario")), "")
    assert header.split() == ["scenario", "ours", "baseline", "ratio", "target", "met"], proc.stdout[-3000:]

    report = json.loads((tmp_path / "out.json").read_text())
    assert report["mode"] == "quick"
    rows = {r["name"]: r for r in report["rows"] if not r["info"]}
    assert set(rows) == {"data_pipeline"}, sorted(rows)
    row = rows["data_pipeline"]
    assert row["error"] is None and not row["skipped"], row
    for key in ("ours", "baseline", "ratio"):
        assert isinstance(row[key], (int, float)) and math.isfinite(row[key]) and row[key] > 0, (key, row)
    assert math.isclose(row["ratio"], row["ours"] / row["baseline"], rel_tol=0.01), row
    assert row["target"] and isinstance(row["met"], bool) and row["scenario"] in proc.stdout, row


def test_recipe_grid_cells_cover_the_default_space_and_snap_in_log_space():
    from bench.recipe_grid import grid_points, key, snap, truth
    from tuner.core.sweep_config import SweepConfig

    base = SweepConfig.from_yaml("configs/digits.yaml")[1]
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


def test_the_stream_bench_photos_are_imagenet_sized_and_decoded_as_before_at_224(tmp_path):
    """``bench/_photos.py``: real photos at ~500 x 375 (quality 90), which the streamed loader decodes whole at 224 px:
    the old pixels exactly (``pixel_gap`` 0), and at 112 px mostly at a DCT scale, within the tested tolerance."""
    from PIL import Image

    from bench._photos import pixel_gap, write_photos

    write_photos(tmp_path, 4)
    paths = sorted(str(p) for p in tmp_path.rglob("*.JPEG"))
    assert len(paths) == 4 and all(Image.open(p).size in ((500, 375), (375, 500)) for p in paths)
    assert pixel_gap(paths, 224, 3)["max_image"] == 0.0
    small = pixel_gap(paths, 112, 3)
    assert small["n_train_scaled"] > 0 and 0 < small["train_scaled"] <= 5.0
