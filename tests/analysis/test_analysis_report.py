"""analysis.report: self-contained HTML with embedded PNGs, a Markdown twin, artifacts on the sweep runs."""
from __future__ import annotations

import base64
import re

import pandas as pd
import pytest

from analysis import report
from analysis._format import fmt_value, to_markdown


@pytest.fixture(scope="module")
def written(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return report.write_report("srrl-a", store.uri, out, log_artifacts=True), out


def test_html_embeds_decodable_pngs(written):
    (html_path, _), out = written
    html = html_path.read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 6  # confirmation, alpha-beta, learning curves, best so far, Pareto, parallel coordinates
    assert html.index("Confirmation of lw: every seed") < html.index("Leaderboard")
    for data in images:
        png = base64.b64decode(data, validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert "lw, par" in html and "srrl-a" in html and "97.5" in html  # sweeps, experiment, teacher val_acc
    assert "Search trials: 12 (7 finished, 2 stopped_early" in html and "1 running" in html
    assert "Confirmation runs: 13" in html
    for title in ("Leaderboard", "Pareto front", "Marginal effects", "Search trials by status",
                  "Confirmation runs by status", "Where the scheduler stopped trials"):
        assert title in html
    assert "Ablation" not in html  # no arm column in srrl-a
    assert "<script" not in html and 'src="http' not in html  # self-contained


def test_the_verdict_comes_first(store, trials_a, written):
    """The answer: the verdict's sentence and per-configuration table, before the search's views."""
    from analysis.confirm_views import verdict_table

    (html_path, md_path), _ = written
    html, md = html_path.read_text(), md_path.read_text()
    verdict, table = verdict_table(trials_a[0])
    assert "the authors&#x27; (1, 1)" in html and verdict.sentence.startswith("alpha 2 beta 3 beats the authors' (1, 1)")
    assert f"<strong>{verdict.sentence.replace(chr(39), '&#x27;')}</strong>" in html
    assert f"**{verdict.sentence}**" in md
    assert html.index("Confirmation verdict (lw)") < html.index("Leaderboard") < html.index("Marginal effects")
    section = md[md.index("## Confirmation verdict (lw)"):md.index("## Search trials by status")]
    assert "| config | role | seeds | recommended | best_val_acc | test_acc | val vs reference |" in section
    c1 = table.iloc[0]
    assert f"| alpha 2 beta 3 | candidate | 3 | yes | {c1['best_val_acc_mean']:.2f} [{c1['best_val_acc_ci_low']:.2f}, " in section
    assert "| CE only | ce | 3 (+1 failed) |" in section and "95% t-interval" in section  # its errored seed counted
    assert "cf_0" not in md  # confirmation runs are not in the search's tables


def test_asha_stops_and_one_fidelity_in_the_report(written):
    (_, md_path), _ = written
    md = md_path.read_text()
    section = md[md.index("## Where the scheduler stopped trials"):]
    section = section[:section.index("\n## ", 1)]
    assert "| lw | 1 | stopped | 1 | 5 | alpha 1 beta 5 |" in section
    assert "| lw | 2 | stopped | 1 | 4 | alpha 10 beta 1 |" in section
    assert "| lw | 4 | finished | 3 | 3 | alpha 1 beta 1 |" in section
    effects = md[md.index("## Marginal effects"):]
    assert "finished search trials only" in effects and "| epochs | parameter |" in effects
    board = md[md.index("## Leaderboard"):md.index("## Where the scheduler")]
    assert "Trials that ran all epochs come first" in board


def test_markdown_twin_references_the_pngs(written):
    (_, md_path), out = written
    md = md_path.read_text()
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(refs) == 6
    for ref in refs:
        assert not ref.startswith("/") and (out / ref).stat().st_size > 1000
    assert "| rank | sweep | trial_id |" in md and "|---:|" in md


def test_artifacts_logged_to_the_parent_runs(store, written):
    from mlflow.tracking import MlflowClient

    (html_path, _), _ = written
    client = MlflowClient(store.uri)
    for sweep in ("lw", "par"):
        names = {a.path for a in client.list_artifacts(store.parents[sweep], "report")}
        assert {"report/report.html", "report/report.md", "report/pareto.png"} <= names
    assert not client.list_artifacts(store.parents["abl"], "report")


def test_ablation_report_and_no_logging(store, tmp_path):
    from mlflow.tracking import MlflowClient

    html_path, md_path = report.write_report(["srrl-b"], store.uri, tmp_path)  # a reader unless asked
    html = html_path.read_text()
    assert "Ablation (test_acc, finished trials)" in html and "CE+FM+SR+KD" in html
    md = md_path.read_text()
    assert "alpha_beta.png" not in md  # ablation weights are 0 or 1: no alpha-beta plane to show
    assert "parallel_coordinates.png" in md and not (tmp_path / "alpha_beta.png").exists()
    assert not MlflowClient(store.uri).list_artifacts(store.parents["abl"], "report")


def test_markdown_table_and_formatting():
    df = pd.DataFrame({"name": ["a|b", None], "x": [1234567.0, 0.000123456], "n": [3, 40000],
                       "ok": [True, False]}, index=pd.Index([1, 2], name="rank"))
    md = to_markdown(df).splitlines()
    assert md[0] == "| rank | name | x | n | ok |"
    assert md[1] == "|---:|---|---:|---:|---|"
    assert md[2] == "| 1 | a\\|b | 1,234,567 | 3 | True |"
    assert md[3] == "| 2 |  | 0.0001235 | 40,000 | False |"
    assert fmt_value(float("nan")) == "" and fmt_value(97.5) == "97.5" and fmt_value(0.05025) == "0.05025"


def test_each_fact_once_in_the_report_tables(trials_a):
    """A sweep named like its experiment shows its name once; Spearman (one value per parameter) on one row."""
    trials, history = trials_a
    lw = trials[trials["sweep"] == "lw"]
    sweeps = pd.DataFrame({"sweep": ["lw"], "experiment": ["lw"], "space": ["loss_weights"]})
    sections = {s.title: s for s in report.build_sections(lw, history, sweeps)}
    assert list(sections["Sweeps"].table.columns) == ["sweep", "space"]
    effects = next(s.table for t, s in sections.items() if t.startswith("Marginal effects"))
    numeric = effects[effects["kind"] != "categorical"]
    assert len(numeric) > numeric["parameter"].nunique()  # several bins per parameter ...
    assert numeric.groupby("parameter")["spearman"].count().eq(1).all()  # ... one Spearman each
