"""One report per experiment(s): tables + figures as a self-contained HTML page and a Markdown twin.

``write_report`` reads MLflow once (through ``analysis.runs``), builds every table and figure that
the data allows (a section whose columns are missing is left out): first the confirmation verdict
(from the confirm runs, through ``tuner.core.verdict``), then the search views, all ranked by
``rank_val_acc`` and over search-stage trials only. It writes ``report.html`` (images
embedded as base64 data URIs), ``report.md`` (images as relative PNG paths) and the PNGs to
``out_dir``, then logs all of them to each sweep's parent run under ``report/``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd

from analysis import confirm_views, plots, runs, tables
from analysis.confirm_plot import confirmation
from analysis._format import fmt_value, to_html, to_markdown
from tuner.core import metrics as M
from tuner.core.files import atomic_write
from tuner.core.uri import redact
from tuner.tracking.read import resolve_uri
from tuner.tracking.runs import log_report_artifacts

__all__ = ["write_report", "build_sections", "verdicts", "Section"]

_SWEEP_COLS = ("sweep", "experiment", "space", "searcher", "scheduler", "dataset", "teacher", "teacher_val_acc",
               "teacher_test_acc", "mlflow_status", "start_time")
_PARETO_COLS = ("trial_id", "student", "connector", "alpha", "beta", "gamma", M.RANK_VAL_ACC, M.VAL_ACC, M.TEST_ACC,
                M.STUDENT_MACS)
_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1150px;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #4c72b0; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; color: #2d4a7a; }
.meta { color: #555; font-size: .92em; }
.lead { font-size: 1.08em; margin: .4em 0; }
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
    lead: str = ""  # a sentence shown in bold before the note (the verdict)
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


_VERDICT_NOTE = ("Confirmation: each configuration re-run over the same fresh seeds at full epochs, no early stopping. "
                 f"mean [95% t-interval] over seeds of {M.RANK_VAL_ACC} (the search's ranking rule) and of the final "
                 "epoch's test accuracy; differences to the reference point and to CE-only paired on seeds, with their "
                 "95% interval and p-value (p_holm: corrected for the number of candidates). The recommendation is "
                 "chosen on val only, with Holm's correction; test is shown beside it, never used to choose.")
_RULE = (M.rank_value.__doc__ or "").strip().splitlines()[0].rstrip(".")  # the rule's own words, one home
_LEADERBOARD_NOTE = (f"Search trials, ranked by {M.RANK_VAL_ACC} ({_RULE[:1].lower() + _RULE[1:]}). Trials that ran "
                     "all epochs come first; then the trials stopped earlier, by the epochs they ran: a lower "
                     "fidelity is not comparable with a higher one.")
_ASHA_NOTE = ("Search trials the scheduler stopped at each rung (epoch), and those that finished; reached = trials "
              "that ran at least that many epochs; authors = the authors' points among them. Diverged, errored "
              "and running trials are left out.")


def verdicts(trials: pd.DataFrame) -> Dict[str, Any]:
    """sweep -> the verdict of its finished confirmation runs (sweeps without one left out)."""
    confirm = tables.confirm_trials(trials)
    out = {}
    for sweep in (list(dict.fromkeys(confirm["sweep"])) if not confirm.empty else []):
        verdict, _ = confirm_views.verdict_table(confirm, sweep=sweep)
        if verdict is not None:
            out[sweep] = verdict
    return out


def _verdict_sections(verdicts: Dict[str, Any]) -> List[Section]:
    """One section per sweep with a verdict: its sentence, table and the figure of every seed."""
    out = []
    for sweep, verdict in verdicts.items():
        out.append(Section(f"Confirmation verdict ({sweep})", lead=verdict.sentence, note=_VERDICT_NOTE,
                           table=pd.DataFrame(verdict.table()), index=False))
        fig = confirmation(verdict)
        if fig is not None:
            caption = f"confirmation of {sweep}: every seed, the mean and its 95% interval per configuration"
            out.append(Section(caption[:1].upper() + caption[1:], figure=fig, png=f"confirmation_{len(out)}.png",
                               caption=caption))
    return out


def build_sections(trials: pd.DataFrame, history: Optional[pd.DataFrame], sweeps: pd.DataFrame,
                   top: int = 10) -> List[Section]:
    """Every section the data supports, in report order (pure: DataFrames in, Sections out)."""
    out: List[Section] = []
    if not sweeps.empty:
        cols = [c for c in _SWEEP_COLS if c in sweeps.columns]
        if "experiment" in cols and (sweeps["experiment"] == sweeps["sweep"]).all():
            cols.remove("experiment")  # one sweep per experiment (the default): its name once
        out.append(Section("Sweeps", table=sweeps[cols], index=False))
    verdicts_by_sweep = verdicts(trials)
    out += _verdict_sections(verdicts_by_sweep)
    # the recommendation is marked in the search's figures when they show one sweep
    verdict = next(iter(verdicts_by_sweep.values())) if len(verdicts_by_sweep) == 1 and len(set(trials.get("sweep", []))) <= 1 else None
    search, confirm = tables.search_trials(trials), tables.confirm_trials(trials)
    out.append(Section("Search trials by status", table=tables.status_counts(search)))
    if not confirm.empty:
        out.append(Section("Confirmation runs by status", table=tables.status_counts(confirm)))
    if search.empty:
        out[-1].note = "No trials recorded yet." if trials.empty else "No search trials."
        return out
    metric = _first_metric(search, (M.RANK_VAL_ACC, M.VAL_ACC))
    if metric is not None:
        out.append(Section(f"Leaderboard (top {top} by {metric})", note=_LEADERBOARD_NOTE,
                           table=tables.leaderboard(search, metric=metric, top=top)))
    if "status" in search.columns and (search["status"] == M.STOPPED_EARLY).any():
        out.append(Section("Where the scheduler stopped trials", note=_ASHA_NOTE, table=tables.asha_table(search),
                           index=False))
    if "arm" in search.columns and search["arm"].nunique() > 1:
        ab_metric = _first_metric(search[search["status"] == M.FINISHED], (M.TEST_ACC, M.VAL_ACC))
        if ab_metric is not None:
            table = tables.ablation_table(search, metric=ab_metric)
            if not table.empty:
                out.append(Section(
                    f"Ablation ({ab_metric}, finished trials)", table=table,
                    note="mean and std over seeds; ci95 = half-width of the 95% t-interval of the mean; "
                         "delta and Welch's t-test p-value against the CE arm."))
    objectives = ((metric, "max"), (M.STUDENT_MACS, "min"))
    if M.STUDENT_MACS in search.columns and metric is not None and search[M.STUDENT_MACS].nunique() > 1:
        front = tables.pareto_front(search, objectives)
        if not front.empty:
            cols = [c for c in _PARETO_COLS if c in front.columns]
            out.append(Section(f"Pareto front ({metric} max, student_macs min; finished trials)",
                               table=front[cols], index=False))
    if metric is not None:
        effects = tables.marginal_effects(search, metric=metric)
        if not effects.empty:  # Spearman is one value per parameter: shown on its first row, not on each bin
            effects.loc[effects.duplicated(["epochs", "parameter"]), "spearman"] = float("nan")
            out.append(Section(f"Marginal effects on {metric}", table=effects, index=False,
                               note="finished search trials only, each compared only with trials that ran as "
                                    "many epochs (column epochs); numeric params: Spearman rank correlation and "
                                    "the mean per quantile bin (log10 bins for params spanning more than a decade)."))
        figures = [
            ("alpha_beta.png", f"{metric} over the alpha-beta plane", plots.alpha_beta(search, metric, verdict)),
            ("learning_curves.png", f"learning curves (val_acc), the top trials by {metric} in colour",
             plots.learning_curves(search, history, metric=M.VAL_ACC, rank_by=metric, verdict=verdict)),
            ("best_so_far.png", f"running best of {metric} (finished trials)", plots.best_so_far(search, metric, verdict)),
            ("pareto.png", "accuracy against student MACs", plots.pareto(search, objectives, verdict)),
            ("parallel_coordinates.png", "searched params (parallel coordinates)",
             plots.parallel_coordinates(search, metric, verdict=verdict)),
        ]
        for png, caption, fig in figures:
            if fig is not None:
                out.append(Section(caption[:1].upper() + caption[1:], figure=fig, png=png, caption=caption))
    return out


def _header(trials: pd.DataFrame, sweeps: pd.DataFrame, experiments: List[str],
            tracking_uri: str) -> Tuple[str, List[str]]:
    names = sorted(set(sweeps["sweep"].dropna())) if not sweeps.empty else []
    title = "SRRL sweep report: " + (", ".join(names) if names else ", ".join(experiments))
    search, confirm = tables.search_trials(trials), tables.confirm_trials(trials)
    counts = search["status"].value_counts() if not search.empty else pd.Series(dtype="int64")
    by_status = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none"
    meta = [f"Experiment(s): {', '.join(experiments)}",
            f"Tracking URI: {redact(tracking_uri)}",
            f"Search trials: {len(search)} ({by_status})"]
    if not confirm.empty:
        meta.append(f"Confirmation runs: {len(confirm)}")
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
        if s.lead:
            body.append(f'<p class="lead"><strong>{html.escape(s.lead)}</strong></p>')
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
        if s.lead:
            lines += [f"**{s.lead}**", ""]
        if s.note:
            lines += [f"_{s.note}_", ""]
        if s.table is not None:
            lines += [to_markdown(s.table, index=s.index), ""]
        if s.png in images:
            lines += [f"![{s.caption}]({s.png})", ""]
    return "\n".join(lines)


def write_report(experiment: Union[str, Sequence[str]], tracking_uri: Optional[str] = None,
                 out_dir: Union[str, Path] = "report", top: int = 10, log_artifacts: bool = False) -> Tuple[Path, Path]:
    """Write ``report.html`` (self-contained), ``report.md`` and the PNGs to ``out_dir``; return (html, md).

    Args:
        experiment: experiment name, or several.
        tracking_uri: the MLflow store; default ``sqlite:///<abs cwd>/mlflow.db``.
        out_dir: created if needed; existing report files there are overwritten.
        top: rows of the leaderboard.
        log_artifacts: also log the files to every sweep's parent run under ``report/`` (a reader by default).
    """
    uri = resolve_uri(tracking_uri)
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
    for path, text in ((html_path, _html(title, meta, sections, images)), (md_path, _markdown(title, meta, sections, images))):
        atomic_write(path, lambda f, text=text: f.write(text.encode("utf-8")))  # a full disk leaves the old one whole
    if log_artifacts and not sweeps.empty:
        log_report_artifacts(uri, list(sweeps["run_id"]), [html_path, md_path, *pngs], artifact_path="report")
    return html_path, md_path
