"""The confirmation stage's verdict: per configuration the mean and 95% CI over seeds, differences
to the reference point and to CE-only paired on shared seeds (Welch's t-test where seeds are not
shared), a recommendation chosen on val only with Holm's correction over the candidates, and one
plain sentence (docs/method.md, "Trusting the winner").

Pure functions over plain rows (no Ray, no MLflow): the sweep driver, ``analysis`` and the report
all call ``summarize``, so they say the same thing.
"""
from __future__ import annotations

import functools
import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from tuner.core import metrics as M
from tuner.core.config import fmt_param

__all__ = ["ROLES", "ALPHA", "DECISION", "USABLE_SEEDS", "Interval", "Comparison", "ConfigResult", "Verdict", "summarize", "mean_ci",
           "welch", "paired", "compare", "holm", "label_of", "format_verdict", "reference_name"]

#: what a confirmed configuration is: one of the search's top K, the space's reference point, or the student alone
ROLES = ("candidate", "reference", "ce")
ALPHA = 0.05  # two-sided level of the intervals (95%) and of "beats with confidence"
#: the one value that ranks trials in the search and decides the verdict: the max of val_acc over epochs
#: (docs/method.md, "Ranking trials"); test_acc (final epoch) is reported beside it, never used to choose
DECISION = M.RANK_VAL_ACC
_METRICS = (DECISION, M.TEST_ACC)


@dataclass
class Interval:
    """Mean of a metric over seeds with its 95% t-interval (``low == high == mean`` for one seed)."""

    mean: float
    low: float
    high: float
    values: List[float] = field(default_factory=list)


@dataclass
class Comparison:
    """``a - b`` of two configurations' means: a 95% interval and two-sided p-value, paired on the seeds
    both ran (``test = "paired"``) or Welch's (``"welch"``); ``p_holm``: ``p`` corrected for the number
    of candidates compared with the same reference (the verdict's decision reads it)."""

    diff: float
    low: float
    high: float
    p: float
    test: str = "welch"
    n: int = 0  # seeds behind it: pairs (paired), or the smaller side (welch)
    p_holm: Optional[float] = None


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
    failed: int = 0  # seeds whose run diverged or errored: in no interval or difference; never recommended


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
        for c in self.ordered():
            row = {"config": c.label, "role": c.role, "seeds": str(c.n) + (f" (+{c.failed} failed)" if c.failed else ""),
                   "recommended": "yes" if c.config_id == self.recommended else ""}
            for m in _METRICS:
                iv = c.metrics.get(m)
                row[m] = "" if iv is None else (f"{iv.mean:.2f} [{iv.low:.2f}, {iv.high:.2f}]" if c.n >= USABLE_SEEDS
                                                else f"{iv.mean:.2f} ({_few(c.n)})")
            for other, vs in (("reference", c.vs_reference), ("CE", c.vs_ce)):
                for m in _METRICS:
                    row[f"{_SHORT[m]} vs {other}"] = _shown(vs.get(m))
            rows.append(row)
        return rows

    def ordered(self) -> List[ConfigResult]:
        """The configurations in the order every view lists them: recommended first, then by role and search rank."""
        return sorted(self.configs, key=lambda c: (c.config_id != self.recommended, ROLES.index(c.role), c.rank or 0))

    def by_role(self) -> Dict[str, ConfigResult]:
        """The configurations a reader asks about, by what they are: ``recommended``, ``candidate`` (the
        search's best-ranked one), ``reference`` and ``ce`` (absent roles are left out)."""
        named = {"recommended": self.config(self.recommended), "reference": self.config(self.reference),
                 "ce": self.config(self.ce)}
        candidates = sorted((c for c in self.configs if c.role == "candidate"), key=lambda c: c.rank or 0)
        named["candidate"] = candidates[0] if candidates else None
        return {role: c for role, c in named.items() if c is not None}

    def summary_metrics(self) -> Dict[str, float]:
        """Named by what they describe (docs/method.md, "Trusting the winner"): ``<role>_<metric>_mean|ci_low|
        ci_high`` and ``<role>_seeds`` for each of ``by_role``, rounded to the 2 decimals every table shows."""
        out: Dict[str, float] = {}
        for role, c in self.by_role().items():
            out[f"{role}_seeds"] = float(c.n)
            for m, iv in c.metrics.items():
                out.update({f"{role}_{m}_{part}": round(float(v), 2)
                            for part, v in (("mean", iv.mean), ("ci_low", iv.low), ("ci_high", iv.high))})
        return out

    def markdown(self, title: str = "") -> str:
        """The verdict for a page that renders Markdown (an MLflow description, an optuna-dashboard note): the
        sentence first, then one table row per configuration with its seeds and intervals."""
        cols = ["config", "role", "seeds", DECISION, M.TEST_ACC, "val vs reference"]
        lines = [f"### {title}" if title else "", f"**Verdict:** {self.sentence}", "",
                 "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += ["| " + ("**recommended**" if r["recommended"] else "") + " | " +
                  " | ".join(r[c] or "-" for c in cols) + " |" for r in self.table()]
        lines += ["", f"{DECISION}: max of val_acc over epochs on a fresh validation split per seed; test_acc: final "
                  "epoch; mean [95% CI] over the seeds shown; the recommendation is chosen on val only."]
        return "\n".join(lines).lstrip("\n")


_SHORT = {DECISION: "val", M.TEST_ACC: "test"}


def _shown(d: Optional[Comparison]) -> str:
    """A comparison as a table cell: ``+1.23 [+0.40, +2.06] p=0.01`` (and Holm's p where it differs)."""
    if d is None:
        return ""
    if math.isnan(d.p):
        return f"{d.diff:+.2f} ({'one seed' if d.n < 2 else 'no spread'}: no CI, no p)"
    if d.n < USABLE_SEEDS:  # t with 1 degree of freedom is 12.7: an interval of hundreds of points says nothing
        return f"{d.diff:+.2f} ({_few(d.n)}) p={d.p:.2g}"
    holm = f" p_holm={d.p_holm:.2g}" if d.p_holm is not None and d.p_holm != d.p else ""
    return f"{d.diff:+.2f} [{d.low:+.2f}, {d.high:+.2f}] p={d.p:.2g}{holm}"


#: the fewest seeds whose 95% t-interval is shown: with 2 (1 degree of freedom, t = 12.7) it spans hundreds
#: of points on digits, so the tables say so instead of printing it
USABLE_SEEDS = 3


def _few(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}: no usable 95% CI"


def format_verdict(verdict: Verdict) -> str:
    """The verdict as the CLIs print it: one row per configuration (``*`` marks the recommendation), then the sentence."""
    cols = ["config", "role", "seeds", DECISION, M.TEST_ACC, "val vs reference", "test vs reference", "test vs CE"]
    rows = [["*" if r["recommended"] else ""] + [r[c] or "-" for c in cols] for r in verdict.table()]
    header = ["", *cols]
    widths = [max(len(h), *(len(c[j]) for c in rows)) if rows else len(h) for j, h in enumerate(header)]
    lines = [f"Confirmation ({DECISION}: max of val_acc over epochs, on a fresh validation split per seed; test_acc: "
             "final epoch; mean [95% CI] over seeds, differences paired on seeds; chosen on val only, Holm-corrected):",
             "  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(cells, widths)) for cells in rows]
    return "\n".join(lines + ["", f"Verdict: {verdict.sentence}"])


@functools.lru_cache(maxsize=256)
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


def _no_spread(diff: float, n: int, test: str) -> Comparison:
    """Every seed gave the same difference (or one side is constant and equal): no spread to test
    against, so no interval and no p (nan: never "with confidence"), unless the difference is 0."""
    if diff == 0:
        return Comparison(0.0, 0.0, 0.0, 1.0, test, n)
    return Comparison(diff, math.nan, math.nan, math.nan, test, n)


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """mean(a) - mean(b) with Welch's (unequal variances) 95% interval and two-sided p-value."""
    from scipy import stats

    a, b = [float(x) for x in a], [float(x) for x in b]
    diff, n = statistics.fmean(a) - statistics.fmean(b), min(len(a), len(b))
    if n < 2:
        return Comparison(diff, math.nan, math.nan, math.nan, "welch", n)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return _no_spread(diff, n, "welch")
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    half = _t(df) * se
    return Comparison(diff, diff - half, diff + half, p, "welch", n)


def paired(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """mean(a - b) over pairs (the same seed on both sides) with the paired t 95% interval and two-sided p.

    Seeds share the data order, the initialisation and the augmentation draws, so the seed's own luck
    cancels in ``a - b``: on the digits confirmation the paired test needs fewer seeds than Welch's.
    """
    from scipy import stats

    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    diff, n = statistics.fmean(d), len(d)
    if n < 2:
        return Comparison(diff, math.nan, math.nan, math.nan, "paired", n)
    sd = statistics.stdev(d)
    if sd == 0:
        return _no_spread(diff, n, "paired")
    half = _t(n - 1) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(diff) / (sd / math.sqrt(n)), n - 1))
    return Comparison(diff, diff - half, diff + half, p, "paired", n)


def compare(a: Mapping[Any, float], b: Mapping[Any, float]) -> Comparison:
    """``a - b`` of two configurations given as ``{seed: value}``: paired on the seeds both ran when there
    are two or more, else Welch's test on all of each side's seeds."""
    shared = [s for s in a if s in b]
    if len(shared) >= 2:
        return paired([a[s] for s in shared], [b[s] for s in shared])
    return welch(list(a.values()), list(b.values()))


def holm(ps: Sequence[float]) -> List[float]:
    """Holm's step-down adjusted p-values (family-wise error at most the level); nan stays nan and is
    counted as a comparison."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: (math.isnan(ps[i]), ps[i]))
    out, running = [math.nan] * m, 0.0
    for rank, i in enumerate(order):
        if math.isnan(ps[i]):
            break
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def label_of(params: Mapping[str, Any], role: str = "candidate") -> str:
    """How people name a configuration: ``alpha 0.5 beta 3.8`` (other searched fields after, by name: the driver's
    sentence and the report name it alike whatever order their params came in), ``CE only``."""
    if role == "ce":
        return "CE only"
    weights = [k for k in ("alpha", "beta") if k in params]
    keys = weights + sorted(k for k in params if k not in weights)
    return " ".join(f"{k} {fmt_param(params[k])}" for k in keys) or "base config"


def reference_name(point: Optional[Mapping[str, Any]]) -> str:
    """How a verdict names the reference point: ``the authors' (1, 1)`` (+ its other fixed values)."""
    point = point or {}
    if (point.get("alpha"), point.get("beta")) != (1.0, 1.0):  # only (1, 1) is the authors' own default
        return f"the reference point ({label_of(point)})" if point else "the reference point"
    rest = " ".join(f"{k} {v}" for k, v in point.items() if k not in ("alpha", "beta"))
    return f"the authors' ({point['alpha']:g}, {point['beta']:g})" + (f" with {rest}" if rest else "")


def summarize(rows: Sequence[Mapping[str, Any]], reference_name: str = "the reference point") -> Verdict:
    """The verdict of confirmation runs.

    Args:
        rows: one per ended confirmation run, with ``config_id``, ``role`` (one of ``ROLES``),
            ``rank`` (candidates), ``params`` (the searched values), ``seed``, ``best_val_acc`` (max over
            epochs) and ``test_acc`` (final epoch), in percent; or ``failed`` true for a run that diverged or
            errored (counted, in no interval or difference). A row without ``seed`` shares none.
        reference_name: how the sentence names the reference point, e.g. "the authors' (1, 1)".

    Each configuration is compared with the reference and CE-only paired on the seeds both ran. The K
    candidates' val p-values against the reference are Holm-corrected together (K comparisons, one
    family). The recommendation is the candidate with the highest mean val among those whose val
    difference is positive with Holm's p < 0.05; otherwise the reference itself. Test accuracy is
    reported beside it and never used to choose. A configuration with a failed seed is never recommended:
    its surviving seeds alone would flatter it.
    """
    groups: Dict[str, List[Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("role") not in ROLES:
            raise ValueError(f"role: {r.get('role')!r} is not one of {', '.join(ROLES)}")
        groups.setdefault(str(r["config_id"]), []).append(r)
    configs, by_seed = [], {}
    for cid, members in groups.items():
        first, runs = members[0], [r for r in members if not r.get("failed")]
        seeds = [r["seed"] if r.get("seed") is not None else ("unseeded", cid, i) for i, r in enumerate(runs)]
        by_seed[cid] = {m: {s: float(r[m]) for s, r in zip(seeds, runs)} for m in _METRICS
                        if runs and all(r.get(m) is not None and math.isfinite(float(r[m])) for r in runs)}
        rank = first.get("rank")
        configs.append(ConfigResult(cid, first["role"], int(rank) if rank not in (None, "") else None,
                                    label_of(first.get("params") or {}, first["role"]), dict(first.get("params") or {}),
                                    len(runs), {m: mean_ci(list(v.values())) for m, v in by_seed[cid].items()},
                                    failed=len(members) - len(runs)))
    ref = next((c for c in configs if c.role == "reference"), None)
    ce = next((c for c in configs if c.role == "ce"), None)
    for c in configs:
        for other, out in ((ref, c.vs_reference), (ce, c.vs_ce)):
            if other is not None and other is not c:
                mine, theirs = by_seed[c.config_id], by_seed[other.config_id]
                out.update({m: compare(mine[m], theirs[m]) for m in _METRICS if m in mine and m in theirs})
    family = [c.vs_reference[DECISION] for c in configs if c.role == "candidate" and DECISION in c.vs_reference]
    for d, p in zip(family, holm([d.p for d in family])):
        d.p_holm = p
    return _verdict(configs, ref, ce, reference_name, len(family))


def _confident(c: ConfigResult) -> bool:
    """The candidate beats the reference on val with Holm-corrected confidence, on every seed it ran."""
    d = c.vs_reference.get(DECISION)
    return not c.failed and d is not None and d.diff > 0 and d.p_holm is not None and d.p_holm < ALPHA


def _verdict(configs: List[ConfigResult], ref: Optional[ConfigResult], ce: Optional[ConfigResult],
             reference_name: str, family: int) -> Verdict:
    candidates = [c for c in configs if c.role == "candidate" and DECISION in c.metrics]
    best = max(candidates, key=lambda c: c.metrics[DECISION].mean, default=None)
    ref_id, ce_id = (ref.config_id if ref else None), (ce.config_id if ce else None)
    if best is None:
        usable = ref is not None and DECISION in ref.metrics  # a reference that failed every seed is no answer
        why = ("no searched configuration finished its confirmation runs" if any(c.role == "candidate" for c in configs)
               else "no searched configuration other than the reference ran every epoch of the search: none to confirm")
        return Verdict(configs, ref_id if usable else None, ref_id, ce_id, why + (f"; use {reference_name}" if usable else ""))
    if ref is None or DECISION not in ref.metrics:
        return Verdict(configs, best.config_id, ref_id, ce_id,
                       f"{best.label} has the best confirmed val accuracy ({_iv(best, DECISION)}, {best.n} seeds); "
                       "no reference point was confirmed to compare it with")
    winner = max((c for c in candidates if _confident(c)), key=lambda c: c.metrics[DECISION].mean, default=None)
    if winner is not None:
        d, test = winner.vs_reference[DECISION], winner.vs_reference.get(M.TEST_ACC)
        on_test = (f"; on test {test.diff:+.1f} points ({_ci_p(test)})" if test is not None else "")
        return Verdict(configs, winner.config_id, ref_id, ce_id,
                       f"{winner.label} beats {reference_name} by {d.diff:+.1f} val points ({_ci_p(d, family)}, "
                       f"{d.n} seeds){on_test}{_model_change(winner, ref)}")
    d = best.vs_reference[DECISION]
    lost = f"; it failed on {best.failed} of {best.n + best.failed} seeds" if best.failed else ""
    return Verdict(configs, ref_id, ref_id, ce_id,
                   f"no configuration beats {reference_name} with confidence (best: {best.label}, {d.diff:+.1f} val "
                   f"points, {_ci_p(d, family)}, {d.n} seeds{lost}); use {reference_name}")


def _ci_p(d: Comparison, family: int = 1) -> str:
    """``95% CI +0.4 .. +3.4, p = 0.02`` (+ Holm's p over the family), or why there is neither."""
    if math.isnan(d.p):
        return "one seed: no CI, no p" if d.n < 2 else f"the same difference on all {d.n} seeds: no spread, no test"
    holm = f", Holm p = {d.p_holm:.2g} over {family} candidates" if family > 1 and d.p_holm is not None else ""
    ci = f"95% CI {d.low:+.1f} .. {d.high:+.1f}" if d.n >= USABLE_SEEDS else "no usable 95% CI"  # as the tables say
    return f"{ci}, p = {d.p:.2g}{holm}"


#: fields that change the model, not the distillation: a gain across them is not a distillation gain
_MODEL_FIELDS = ("student", "teacher")


def _model_change(c: ConfigResult, ref: ConfigResult) -> str:
    """The clause that says plainly that a gain includes a change of model (docs/method.md, "Trusting the winner")."""
    changed = [f"{k} {ref.params[k]} -> {c.params[k]}" for k in _MODEL_FIELDS
               if k in c.params and k in ref.params and c.params[k] != ref.params[k]]
    return f"; the gain includes a change of model ({', '.join(changed)}), not distillation alone" if changed else ""


def _iv(c: ConfigResult, metric: str) -> str:
    iv = c.metrics[metric]
    return f"{iv.mean:.1f}, 95% CI {iv.low:.1f} .. {iv.high:.1f}" if c.n >= USABLE_SEEDS else f"{iv.mean:.1f}, {_few(c.n)}"
