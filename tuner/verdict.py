"""The confirmation stage's verdict: per configuration the mean and 95% CI over seeds, differences
to the reference point and to CE-only with Welch's t-test, a recommendation chosen on val only,
and one plain sentence (docs/method.md, "Trusting the winner").

Pure functions over plain rows (no Ray, no MLflow): the sweep driver, ``analysis`` and the report
all call ``summarize``, so they say the same thing.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from tuner import metrics as M

__all__ = ["ROLES", "ALPHA", "Interval", "Comparison", "ConfigResult", "Verdict", "summarize", "mean_ci",
           "welch", "label_of", "format_verdict", "reference_name"]

#: what a confirmed configuration is: one of the search's top K, the space's reference point, or the student alone
ROLES = ("candidate", "reference", "ce")
ALPHA = 0.05  # two-sided level of the intervals (95%) and of "beats with confidence"
_METRICS = (M.VAL_ACC, M.TEST_ACC)


@dataclass
class Interval:
    """Mean of a metric over seeds with its 95% t-interval (``low == high == mean`` for one seed)."""

    mean: float
    low: float
    high: float
    values: List[float] = field(default_factory=list)


@dataclass
class Comparison:
    """``a - b`` of two configurations' means: Welch's 95% interval and two-sided p-value."""

    diff: float
    low: float
    high: float
    p: float


@dataclass
class ConfigResult:
    """One confirmed configuration: its seeds' intervals and its differences to the reference and CE-only."""

    config_id: str
    role: str
    rank: Optional[int]  # the search rank of a candidate, else None
    label: str
    params: Dict[str, Any]
    n: int
    metrics: Dict[str, Interval]
    vs_reference: Dict[str, Comparison] = field(default_factory=dict)
    vs_ce: Dict[str, Comparison] = field(default_factory=dict)


@dataclass
class Verdict:
    """Every confirmed configuration, which one is recommended (a ``config_id``), and the sentence that says so."""

    configs: List[ConfigResult]
    recommended: Optional[str]  # config_id
    reference: Optional[str]
    ce: Optional[str]
    sentence: str

    def config(self, config_id: Optional[str]) -> Optional[ConfigResult]:
        return next((c for c in self.configs if c.config_id == config_id), None)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Verdict":
        configs = []
        for c in data["configs"]:
            c = dict(c)
            c["metrics"] = {k: Interval(**v) for k, v in c["metrics"].items()}
            c["vs_reference"] = {k: Comparison(**v) for k, v in c.get("vs_reference", {}).items()}
            c["vs_ce"] = {k: Comparison(**v) for k, v in c.get("vs_ce", {}).items()}
            configs.append(ConfigResult(**c))
        return cls(configs, data.get("recommended"), data.get("reference"), data.get("ce"), data["sentence"])

    def table(self) -> List[Dict[str, str]]:
        """One row of text per configuration (what the CLIs and the report show), recommended first:
        ``mean [95% CI]`` of val and test accuracy, ``diff [95% CI] p=...`` to the reference and to CE-only."""
        rows = []
        for c in sorted(self.configs, key=lambda c: (c.config_id != self.recommended, ROLES.index(c.role), c.rank or 0)):
            row = {"config": c.label, "role": c.role, "seeds": str(c.n),
                   "recommended": "yes" if c.config_id == self.recommended else ""}
            for m in _METRICS:
                iv = c.metrics.get(m)
                row[m] = f"{iv.mean:.2f} [{iv.low:.2f}, {iv.high:.2f}]" if iv else ""
            for other, vs in (("reference", c.vs_reference), ("CE", c.vs_ce)):
                for m in _METRICS:
                    d = vs.get(m)
                    row[f"{m.split('_')[0]} vs {other}"] = (
                        "" if d is None else f"{d.diff:+.2f} (one seed: no CI, no p)" if math.isnan(d.low)
                        else f"{d.diff:+.2f} [{d.low:+.2f}, {d.high:+.2f}] p={d.p:.2g}")
            rows.append(row)
        return rows


def format_verdict(verdict: Verdict) -> str:
    """The verdict as the CLIs print it: one row per configuration (``*`` marks the recommendation), then the sentence."""
    cols = ["config", "role", "seeds", M.VAL_ACC, M.TEST_ACC, "val vs reference", "test vs reference", "test vs CE"]
    rows = [["*" if r["recommended"] else ""] + [r[c] or "-" for c in cols] for r in verdict.table()]
    header = ["", *cols]
    widths = [max(len(h), *(len(c[j]) for c in rows)) if rows else len(h) for j, h in enumerate(header)]
    lines = ["Confirmation (final epoch, mean [95% CI] over seeds; the recommendation is chosen on val only):",
             "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in rows]
    return "\n".join(lines + ["", f"Verdict: {verdict.sentence}"])


def _t(df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(1 - ALPHA / 2, df))


def mean_ci(values: Sequence[float]) -> Interval:
    """Mean and two-sided 95% Student-t interval of ``values`` (a point interval for one value)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci: no values")
    mean = statistics.fmean(xs)
    if len(xs) < 2:
        return Interval(mean, mean, mean, xs)
    half = _t(len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))
    return Interval(mean, mean - half, mean + half, xs)


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """mean(a) - mean(b) with Welch's (unequal variances) 95% interval and two-sided p-value."""
    from scipy import stats

    a, b = [float(x) for x in a], [float(x) for x in b]
    diff = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(diff, float("nan"), float("nan"), float("nan"))
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # identical seeds on both sides: no spread to test against
        return Comparison(diff, diff, diff, 1.0 if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    half = _t(df) * se
    return Comparison(diff, diff - half, diff + half, p)


def label_of(params: Mapping[str, Any], role: str = "candidate") -> str:
    """How people name a configuration: ``alpha 0.5 beta 3.8`` (other searched fields after), ``CE only``."""
    if role == "ce":
        return "CE only"
    parts = []
    for k, v in params.items():
        shown = f"{v:.3g}" if isinstance(v, float) else str(v)
        parts.append(f"{k} {shown}")
    return " ".join(parts) or "base config"


def reference_name(point: Optional[Mapping[str, Any]]) -> str:
    """How a verdict names the reference point: ``the authors' (1, 1)`` (+ its other fixed values)."""
    point = point or {}
    if "alpha" not in point or "beta" not in point:
        return f"the reference point ({label_of(point)})" if point else "the reference point"
    rest = " ".join(f"{k} {v}" for k, v in point.items() if k not in ("alpha", "beta"))
    return f"the authors' ({point['alpha']:g}, {point['beta']:g})" + (f" with {rest}" if rest else "")


def summarize(rows: Sequence[Mapping[str, Any]], reference_name: str = "the reference point") -> Verdict:
    """The verdict of confirmation runs.

    Args:
        rows: one per finished confirmation run, with ``config_id``, ``role`` (one of ``ROLES``),
            ``rank`` (candidates), ``params`` (the searched values), ``val_acc`` and ``test_acc``
            (final epoch, percent).
        reference_name: how the sentence names the reference point, e.g. "the authors' (1, 1)".

    The recommendation is the candidate with the highest mean val_acc when its val difference to
    the reference is positive with Welch p < 0.05; otherwise the reference itself. Test accuracy is
    reported beside it and never used to choose.
    """
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("role") not in ROLES:
            raise ValueError(f"role: {r.get('role')!r} is not one of {', '.join(ROLES)}")
        groups.setdefault(str(r["config_id"]), []).append(r)
    configs = []
    for cid, runs in groups.items():
        first = runs[0]
        metrics = {m: mean_ci([r[m] for r in runs]) for m in _METRICS
                   if all(r.get(m) is not None and math.isfinite(float(r[m])) for r in runs)}
        rank = first.get("rank")
        configs.append(ConfigResult(cid, first["role"], int(rank) if rank not in (None, "") else None,
                                    label_of(first.get("params") or {}, first["role"]), dict(first.get("params") or {}),
                                    len(runs), metrics))
    ref = next((c for c in configs if c.role == "reference"), None)
    ce = next((c for c in configs if c.role == "ce"), None)
    for c in configs:
        for other, out in ((ref, c.vs_reference), (ce, c.vs_ce)):
            if other is not None and other is not c:
                out.update({m: welch(c.metrics[m].values, other.metrics[m].values)
                            for m in _METRICS if m in c.metrics and m in other.metrics})
    return _verdict(configs, ref, ce, reference_name)


def _verdict(configs: List[ConfigResult], ref: Optional[ConfigResult], ce: Optional[ConfigResult],
             reference_name: str) -> Verdict:
    candidates = [c for c in configs if c.role == "candidate" and M.VAL_ACC in c.metrics]
    best = max(candidates, key=lambda c: c.metrics[M.VAL_ACC].mean, default=None)
    ref_id, ce_id = (ref.config_id if ref else None), (ce.config_id if ce else None)
    if best is None:
        return Verdict(configs, ref_id, ref_id, ce_id, "no searched configuration finished its confirmation runs"
                       + (f"; use {reference_name}" if ref else ""))
    if ref is None or M.VAL_ACC not in ref.metrics:
        return Verdict(configs, best.config_id, ref_id, ce_id,
                       f"{best.label} has the best confirmed val accuracy ({_iv(best, M.VAL_ACC)}, {best.n} seeds); "
                       "no reference point was confirmed to compare it with")
    d = best.vs_reference[M.VAL_ACC]
    if d.diff > 0 and d.p < ALPHA:
        test = best.vs_reference.get(M.TEST_ACC)
        on_test = (f"; on test {test.diff:+.1f} points (95% CI {test.low:+.1f} .. {test.high:+.1f}, p = {test.p:.2g})"
                   if test is not None else "")
        return Verdict(configs, best.config_id, ref_id, ce_id,
                       f"{best.label} beats {reference_name} by {d.diff:+.1f} val points (95% CI {d.low:+.1f} .. "
                       f"{d.high:+.1f}, p = {d.p:.2g}, {best.n} seeds){on_test}")
    return Verdict(configs, ref_id, ref_id, ce_id,
                   f"no configuration beats {reference_name} with confidence (best: {best.label}, {d.diff:+.1f} val "
                   f"points, 95% CI {d.low:+.1f} .. {d.high:+.1f}, p = {d.p:.2g}, {best.n} seeds); use {reference_name}")


def _iv(c: ConfigResult, metric: str) -> str:
    iv = c.metrics[metric]
    return f"{iv.mean:.1f}, 95% CI {iv.low:.1f} .. {iv.high:.1f}"
