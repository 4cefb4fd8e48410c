"""``python -m analysis``: report, leaderboard, ablation table and export of a sweep's MLflow records.

    python -m analysis report      --experiment NAME [--experiment NAME2] [--tracking-uri URI] [--out DIR]
    python -m analysis leaderboard --experiment NAME [--top N] [--metric rank_val_acc]
    python -m analysis ablation    --experiment NAME [--metric test_acc] [--baseline CE]
    python -m analysis export      --experiment NAME --out FILE [--format csv|parquet] [--history]

``leaderboard`` ranks the search trials as every view does (``analysis.tables.ranking_order``) and shows
each one's run id and whether it carries ``model/student.pt``. These commands read the records; the ones that
write to a sweep (backfill after an outage, a later confirmation) are the driver's: ``python run_search.py
--sync DIR`` and ``--confirm-sweep NAME``.

Exit status: 0 on success, 2 on bad input (unknown experiment, bad tracking URI, missing column,
unsupported output format, unreachable server), with a one-line message on stderr.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, List, Optional

from tuner.core import metrics as M
from tuner.tracking import default_tracking_uri

PROG = "python -m analysis"
_FORMATS = ("csv", "parquet")


def _parser() -> argparse.ArgumentParser:
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--tracking-uri", default=None, metavar="URI", help=f"MLflow store (default: {default_tracking_uri()})")
    common = argparse.ArgumentParser(add_help=False, parents=[store])
    common.add_argument("--experiment", "-e", action="append", required=True, metavar="NAME",
                        help="MLflow experiment (repeat to combine several)")
    p = argparse.ArgumentParser(prog=PROG, description="Tables, plots and reports from SRRL sweeps recorded in MLflow.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("report", parents=[common], help="HTML + Markdown report (--log: also to the sweep runs)")
    r.add_argument("--out", default=None, metavar="DIR", help="output folder (default: ./report-<experiment>)")
    r.add_argument("--top", type=int, default=10, metavar="N", help="leaderboard rows (default 10)")
    r.add_argument("--log", action="store_true", help="also log the report to each sweep's parent run under report/ "
                                                       "(replacing an earlier copy)")

    lb = sub.add_parser("leaderboard", parents=[common], help="the best trials")
    lb.add_argument("--top", type=int, default=10, metavar="N", help="rows (default 10; 0 for all)")
    lb.add_argument("--metric", default=M.RANK_VAL_ACC,
                    help=f"sort key (default {M.RANK_VAL_ACC}, the search's ranking rule)")
    lb.add_argument("--mode", choices=("max", "min"), default="max", help="best is max or min (default max)")

    ab = sub.add_parser("ablation", parents=[common], help="per-arm statistics of an ablation sweep")
    ab.add_argument("--metric", default=M.TEST_ACC, help=f"metric (default {M.TEST_ACC})")
    ab.add_argument("--baseline", default="CE", help="arm the others are compared with (default CE)")

    ex = sub.add_parser("export", parents=[common], help="trials (or the per-epoch history) as CSV or Parquet")
    ex.add_argument("--out", required=True, metavar="FILE", help="output file (FILE.csv or FILE.parquet)")
    ex.add_argument("--format", choices=_FORMATS, default=None,
                    help="csv or parquet (default: from the extension of --out); parquet keeps every column's dtype")
    ex.add_argument("--history", action="store_true", help="export the long per-epoch history instead of the trials")

    return p


def _print(df) -> None:
    from analysis._format import for_display

    print(for_display(df).to_string())


def _report(args: argparse.Namespace) -> int:
    from analysis.report import write_report

    out = args.out or "report-" + re.sub(r"[^\w.-]+", "_", args.experiment[0])
    html, md = write_report(args.experiment, args.tracking_uri, out, top=args.top, log_artifacts=args.log)
    print(f"wrote {html}\nwrote {md}")
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from analysis.runs import has_artifact, load_trials
    from analysis.tables import leaderboard

    trials = load_trials(args.experiment, args.tracking_uri)
    board = leaderboard(trials, metric=args.metric, top=args.top or None, mode=args.mode, run_id=True)
    board.insert(board.columns.get_loc("run_id") + 1, "student_pt",
                 has_artifact(board["run_id"], args.tracking_uri))  # one artifact listing per row shown
    _print(board)
    _print_verdicts(trials)
    return 0


def _print_verdicts(trials: Any) -> None:
    """After the search's leaderboard, the answer: each sweep's confirmation verdict, as the driver printed it."""
    from analysis.report import verdicts
    from tuner.core.verdict import format_verdict

    for sweep, verdict in verdicts(trials).items():
        print(f"\n{sweep}: " + format_verdict(verdict))


def _ablation(args: argparse.Namespace) -> int:
    from analysis.runs import load_trials
    from analysis.tables import ablation_table

    trials = load_trials(args.experiment, args.tracking_uri)
    _print(ablation_table(trials, metric=args.metric, baseline=args.baseline))
    return 0


def _export(args: argparse.Namespace) -> int:
    out = Path(args.out)
    fmt = args.format or out.suffix.lower().lstrip(".")
    if fmt not in _FORMATS:
        raise ValueError(f"--out: {out.name!r} must end in .csv or .parquet (or give --format csv|parquet)")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("--format: writing parquet needs pyarrow, which is not installed "
                             "(pip install pyarrow, or write csv)") from None
    from analysis.runs import load_history, load_trials

    df = (load_history(args.experiment, args.tracking_uri) if args.history
          else load_trials(args.experiment, args.tracking_uri))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(out, index=False)
    else:
        _parquet(df).to_parquet(out, index=False)
    print(f"wrote {len(df)} rows to {out}")
    return 0


def _parquet(df):
    """``df`` as parquet stores it with every dtype kept: lists and other mixed objects as text."""
    df = df.copy()
    for c in df.columns:
        if df[c].dtype == object and not df[c].map(lambda v: v is None or isinstance(v, str)).all():
            df[c] = df[c].map(lambda v: None if v is None else str(v))
    return df


_COMMANDS = {"report": _report, "leaderboard": _leaderboard, "ablation": _ablation, "export": _export}


def main(argv: Optional[List[str]] = None) -> int:
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout is the command's own
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, ConnectionError) as e:  # bad input: unknown experiment, bad URI, missing column, format
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"{PROG} {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from tuner.core.process import exit_now

    exit_now(main())  # less the interpreter's teardown: ~3 s of CPU (docs/architecture.md, "How a command ends")
