"""One report per experiment(s): tables + figures as a self-contained HTML page and a Markdown twin.

``write_report`` reads MLflow once (through ``analysis.runs``), builds every table and figure that
the data allows (a section whose columns are missing is left out), writes ``report.html`` (images
embedded as base64 data URIs), ``report.md`` (images as relative PNG paths) and the PNGs to
``out_dir``, then logs all of them to each sweep's parent run under ``report/``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import pandas as pd

from analysis import plots, runs, tables
from analysis._format import fmt_value, to_html, to_markdown
from tuner import metrics as M
from tuner.tracking import redact

__all__ = ["write_report", "build_sections", "Section"]

_SWEEP_COLS = ("sweep", "experiment", "space", "searcher", "scheduler", "dataset", "teacher", "teacher_val_acc",
               "teacher_test_acc", "mlflow_status", "start_time")
_PARETO_COLS = ("trial_id", "student", "connector", "alpha", "beta", "gamma", M.VAL_ACC, M.TEST_ACC, M.STUDENT_MACS)
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1150px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #4c72b0; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; color: #2d4a7a; }
.meta { color: #555; font-size: .92em; }
.note { color: #555; font-size: .9em; margin: .3em 0 .8em; }
table.tbl { border-collapse: collapse; font-size: .86em; margin: .5em 0 1em; }
table.tbl th, table.tbl td { padding: .28em .7em; border-bottom: 1px solid #ddd; text-align: right; }
table.tbl .txt { text-align: left; }
table.tbl th { background: #eef2f8; }
table.tbl tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #e4e4e4; }
figcaption { color: #555; font-size: .9em; }
"""


@dataclass
class Section:
    """A titled block of the report: an optional note, table and figure (PNG file name)."""

    title: str
    note: str = ""
    table: Optional[pd.DataFrame] = None
    index: bool = True
    figure: Any = None
    png: Optional[str] = None
    caption: str = ""


def _first_metric(trials: pd.DataFrame, names: Sequence[str]) -> Optional[str]:
    for name in names:
        if name in trials.columns and pd.to_numeric(trials[name], errors="coerce").notna().any():
            return name
    return None


def build_sections(trials: pd.DataFrame, history: Optional[pd.DataFrame], sweeps: pd.DataFrame,
                   top: int = 10) -> List[Section]:
    """Every section the data supports, in report order (pure: DataFrames in, Sections out)."""
    out: List[Section] = []
    if not sweeps.empty:
        cols = [c for c in _SWEEP_COLS if c in sweeps.columns]
        out.append(Section("Sweeps", table=sweeps[cols], index=False))
    out.append(Section("Trials by status", table=tables.status_counts(trials)))
    if trials.empty:
        out[-1].note = "No trials recorded yet."
        return out
    metric = _first_metric(trials, (M.VAL_ACC, M.BEST_VAL_ACC))
    if metric is not None:
        out.append(Section(f"Leaderboard (top {top} by {metric})",
                           table=tables.leaderboard(trials, metric=metric, top=top)))
    if "arm" in trials.columns and trials["arm"].nunique() > 1:
        ab_metric = _first_metric(trials[trials["status"] == "finished"], (M.TEST_ACC, M.VAL_ACC))
        if ab_metric is not None:
            table = tables.ablation_table(trials, metric=ab_metric)
            if not table.empty:
                out.append(Section(
                    f"Ablation ({ab_metric}, finished trials)", table=table,
                    note="mean and std over seeds; ci95 = half-width of the 95% t-interval of the mean; "
                         "delta and Welch's t-test p-value against the CE arm."))
    if M.STUDENT_MACS in trials.columns and metric == M.VAL_ACC and trials[M.STUDENT_MACS].nunique() > 1:
        front = tables.pareto_front(trials)
        if not front.empty:
            cols = [c for c in _PARETO_COLS if c in front.columns]
            out.append(Section("Pareto front (val_acc max, student_macs min; finished trials)",
                               table=front[cols], index=False))
    if metric is not None:
        effects = tables.marginal_effects(trials, metric=metric)
        if not effects.empty:
            out.append(Section(f"Marginal effects on {metric}", table=effects, index=False,
                               note="finished and stopped-early trials; numeric params: Spearman rank "
                                    "correlation and the mean per quantile bin (log10 bins for params "
                                    "spanning more than a decade)."))
        figures = [
            ("alpha_beta.png", f"{metric} over the alpha-beta plane", plots.alpha_beta(trials, metric)),
            ("learning_curves.png", f"learning curves ({metric}) of the top trials",
             plots.learning_curves(trials, history, metric=M.VAL_ACC) if metric == M.VAL_ACC else None),
            ("best_so_far.png", f"best {metric} so far", plots.best_so_far(trials, metric)),
            ("pareto.png", "accuracy against student MACs", plots.pareto(trials)),
            ("parallel_coordinates.png", "searched params (parallel coordinates)",
             plots.parallel_coordinates(trials, metric)),
        ]
        for png, caption, fig in figures:
            if fig is not None:
                out.append(Section(caption[:1].upper() + caption[1:], figure=fig, png=png, caption=caption))
    return out


def _header(trials: pd.DataFrame, sweeps: pd.DataFrame, experiments: List[str],
            tracking_uri: str) -> Tuple[str, List[str]]:
    names = sorted(set(sweeps["sweep"].dropna())) if not sweeps.empty else []
    title = "SRRL sweep report: " + (", ".join(names) if names else ", ".join(experiments))
    counts = trials["status"].value_counts() if not trials.empty else pd.Series(dtype="int64")
    by_status = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none"
    meta = [f"Experiment(s): {', '.join(experiments)}",
            f"Tracking URI: {redact(tracking_uri)}",
            f"Trials: {len(trials)} ({by_status})"]
    if not sweeps.empty:
        for col, label in (("teacher", "Teacher"), ("teacher_val_acc", "teacher val_acc"),
                           ("teacher_test_acc", "teacher test_acc")):
            if col in sweeps.columns and sweeps[col].notna().any():
                meta.append(f"{label}: " + ", ".join(sorted({fmt_value(v) for v in sweeps[col].dropna()})))
    meta.append("Generated: " + _dt.datetime.now().strftime("%Y-%m-%d %H:%M"))
    return title, meta


def _html(title: str, meta: List[str], sections: List[Section], images: dict) -> str:
    body = [f"<h1>{html.escape(title)}</h1>", '<p class="meta">' + "<br>".join(html.escape(m) for m in meta) + "</p>"]
    for s in sections:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.note:
            body.append(f'<p class="note">{html.escape(s.note)}</p>')
        if s.table is not None:
            body.append(to_html(s.table, index=s.index))
        if s.png in images:
            data = base64.b64encode(images[s.png]).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(s.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(s.caption)}</figcaption></figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _markdown(title: str, meta: List[str], sections: List[Section], images: dict) -> str:
    lines = [f"# {title}", ""] + [f"- {m}" for m in meta] + [""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.note:
            lines += [f"_{s.note}_", ""]
        if s.table is not None:
            lines += [to_markdown(s.table, index=s.index), ""]
        if s.png in images:
            lines += [f"![{s.caption}]({s.png})", ""]
    return "\n".join(lines)


def write_report(experiment: Union[str, Sequence[str]], tracking_uri: Optional[str] = None,
                 out_dir: Union[str, Path] = "report", top: int = 10, log_artifacts: bool = True) -> Tuple[Path, Path]:
    """Write ``report.html`` (self-contained), ``report.md`` and the PNGs to ``out_dir``; return (html, md).

    Args:
        experiment: experiment name, or several.
        tracking_uri: the MLflow store; default ``sqlite:///<abs cwd>/mlflow.db``.
        out_dir: created if needed; existing report files there are overwritten.
        top: rows of the leaderboard.
        log_artifacts: also log the files to every sweep's parent run under ``report/``.
    """
    uri = runs._resolve_uri(tracking_uri)
    experiments = [experiment] if isinstance(experiment, str) else list(experiment)
    history = runs.load_history(experiments, uri)
    trials = runs.load_trials(experiments, uri, history=history)
    sweeps = runs.load_sweeps(experiments, uri)
    sections = build_sections(trials, history, sweeps, top=top)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images, pngs = {}, []
    for s in sections:
        if s.figure is not None:
            path = plots.save(s.figure, out / s.png)
            images[s.png] = path.read_bytes()
            pngs.append(path)
            s.figure = None  # let matplotlib free it
    title, meta = _header(trials, sweeps, experiments, uri)
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(_html(title, meta, sections, images), encoding="utf-8")
    md_path.write_text(_markdown(title, meta, sections, images), encoding="utf-8")
    if log_artifacts and not sweeps.empty:
        runs.log_report_artifacts(uri, list(sweeps["run_id"]), [html_path, md_path, *pngs], artifact_path="report")
    return html_path, md_path
