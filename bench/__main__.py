"""``python -m bench [--quick] [--gpu] [--json FILE] [--only NAME[,NAME]]``: every scenario, one table.

``--gpu`` runs the scenarios with GPU rows (``GPU_SCENARIOS``: the distillation-cost ratio on the GPU, the
streaming pipeline with nvJPEG decode, trials packed on one GPU), and refuses to start without CUDA.

Each row: our figure, the baseline measured in the same run (back to back or interleaved), their
ratio, the target on that ratio and whether it is met. Every store (MLflow, Optuna, Ray storage)
lives in a temporary folder; so does the teacher cache unless ``SRRL_CACHE_DIR`` is set. Ray is
started once (local, no dashboard, every CPU) for the scenarios that need it and shut down at the end.
Exit status 1 when a scenario failed (its row then carries the error), else 0, met targets or not.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from bench import SCENARIOS
from bench._common import Row

HEADER = ("scenario", "ours", "baseline", "ratio", "target", "met")
_RAY_SCENARIOS = ("trainable_overhead", "sweep_overhead", "search_efficiency", "gpu_packing", "multi_worker")
#: what ``--gpu`` runs: each adds its GPU rows when CUDA is there
GPU_SCENARIOS = ("distill_cost", "stream_pipeline", "gpu_packing")


def _names(only: Optional[str]) -> List[str]:
    if not only:
        return list(SCENARIOS)
    names = [n.strip().replace("-", "_") for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"--only: unknown scenario(s) {', '.join(unknown)}; choose from: {', '.join(SCENARIOS)}")
    return [n for n in SCENARIOS if n in names]


def _value(v: Optional[float], unit: str) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    digits = {"img/s": 0, "s": 2, "s/step": 3, "epochs": 1}.get(unit, 3)
    return f"{v:,.{digits}f} {unit}"


def _met(row: Row) -> str:
    if row.error:
        return "ERROR"
    if row.skipped:
        return "skip"
    if row.target is None:
        return "(info)"
    return {True: "yes", False: "NO", None: "-"}[row.met]


def _flat(rows: Sequence[Row]) -> List[Row]:
    out = []
    for row in rows:
        out.append(row)
        for extra in row.beside:
            extra.name = extra.name or row.name
            out.append(extra)
    return out


def format_table(rows: Sequence[Row], title: str) -> str:
    """The fixed-width table, then one note line per row."""
    flat = _flat(rows)
    cells = [HEADER] + [(("  " if r.target is None and not r.skipped and not r.error else "") + r.scenario,
                         _value(r.ours, r.unit), _value(r.baseline, r.unit),
                         "-" if r.ratio is None else f"{r.ratio:.3f}", r.target or "-", _met(r)) for r in flat]
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER))]

    def line(c: Sequence[str]) -> str:
        return "  ".join(s.ljust(w) if i in (0, 4, 5) else s.rjust(w) for i, (s, w) in enumerate(zip(c, widths))).rstrip()

    rule = "-" * len(line(HEADER))
    out = [title, rule, line(HEADER), rule, *(line(c) for c in cells[1:]), rule, "notes (ratio = ours / baseline):"]
    for r in flat:
        text = f"error: {r.error}" if r.error else r.note
        out.append(f"  {r.scenario}: {text}" + (f" [{r.seconds:.0f} s]" if r.seconds else ""))
    return "\n".join(out)


def _run_one(name: str, quick: bool) -> Row:
    start = time.perf_counter()
    try:
        row = importlib.import_module(f"bench.{name}").run(quick)
    except Exception as e:  # one broken scenario must not hide the others
        traceback.print_exc()
        row = Row(name.replace("_", " "), None, None, "", None, error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    row.name, row.seconds = name, time.perf_counter() - start
    return row


def _environment(quick: bool) -> Dict[str, Any]:
    import torch

    return {"mode": "quick" if quick else "full", "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: the whole suite in a few minutes on 2 CPUs")
    p.add_argument("--json", metavar="FILE", help="also write the table (and the environment) as JSON")
    p.add_argument("--only", metavar="NAME[,NAME]", help=f"run a subset: {', '.join(SCENARIOS)}")
    p.add_argument("--gpu", action="store_true", help=f"the GPU rows: {', '.join(GPU_SCENARIOS)} (needs CUDA)")
    args = p.parse_args(argv)
    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print("error: gpu: no CUDA device here; run --gpu on a machine with a GPU", file=sys.stderr)
            return 2
    names = _names(args.only or (",".join(GPU_SCENARIOS) if args.gpu else None))

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # verbose=0 then prints no per-run config box
    made: List[Path] = []
    if not os.environ.get("RAY_TMPDIR"):  # short: Ray's unix socket paths must stay under ~107 characters
        ray_tmp = Path(f"/tmp/rb{os.getpid()}")
        ray_tmp.mkdir(exist_ok=True)
        os.environ["RAY_TMPDIR"] = str(ray_tmp)
        made.append(ray_tmp)
    started = time.perf_counter()
    rows: List[Row] = []
    with tempfile.TemporaryDirectory(prefix="srrl-bench-") as tmp:
        if not os.environ.get("SRRL_CACHE_DIR"):
            os.environ["SRRL_CACHE_DIR"] = str(Path(tmp) / "cache")
        import torch

        needs_ray = [n for n in names if n in _RAY_SCENARIOS and (n != "gpu_packing" or torch.cuda.is_available())]
        try:
            if needs_ray:
                from bench._common import ensure_ray

                ensure_ray()
            for name in names:
                print(f"[bench] {name} ...", file=sys.stderr, flush=True)
                rows.append(_run_one(name, args.quick))
                print(f"[bench] {name} done in {rows[-1].seconds:.1f} s", file=sys.stderr, flush=True)
        finally:
            if needs_ray:
                import ray

                ray.shutdown()
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)
    total = time.perf_counter() - started
    env = _environment(args.quick)
    title = (f"srrl-tune benchmarks ({env['mode']}): {env['cpus']} CPUs, {env['gpu'] or 'no GPU'}, "
             f"torch {env['torch']}, {total:.0f} s")
    print(format_table(rows, title), flush=True)
    if args.json:
        out = {**env, "total_s": total,
               "rows": [{**r.to_dict(), "info": r.target is None and not r.skipped and not r.error} for r in _flat(rows)]}
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
