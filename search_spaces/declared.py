"""Search spaces written as data: ``field: {loguniform | uniform | int: [low, high]} | {choice: [...]}``.

A sweep YAML's ``search:`` mapping and ``--search FIELD=KIND:ARGS`` flags declare a space over any
``TrialConfig`` field the sweep may vary; the named presets (``loss_weights``, ``recipe``, ...) are
declared in the same form (``search_spaces/presets.py``), so one mechanism samples, validates and
prints them all (README, "Declaring a search space").
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml

from search_spaces._base import SearchSpace, SpaceContext
from search_spaces._choices import AUTHORS_WEIGHTS, PAPER_CONNECTOR, connector_choices, connector_fits_student, student_choices
from tuner.core.config import SWEEP_FIXED, ConfigError, TrialConfig, apply_params, check_choice
from tuner.core.registry import did_you_mean

__all__ = ["KINDS", "DECLARED", "Dim", "parse_search", "parse_flag", "Declared", "declared_space", "declaration_yaml",
           "space_of"]

KINDS = ("loguniform", "uniform", "int", "choice")
#: what a ``choice`` may name instead of listing values: the zoo's students for the data's input size, the
#: connectors that fit every student choice (the ``students`` / ``full`` presets' conditional choices)
TOKENS = {"student": "zoo", "connector": "fitting"}
_FIELDS = {f.name: f for f in dataclasses.fields(TrialConfig)}
_NUMERIC = {"float": "float", "Optional[float]": "float", "int": "int", "Optional[int]": "int"}


@dataclass(frozen=True)
class Dim:
    """One searched field: ``kind`` (one of ``KINDS``) and its ``args``: ``(low, high)`` or the choices.

    A bound may be ``"base*K"`` or ``"base/K"`` (relative to the base config's value); a choice list may be
    the one token of ``TOKENS`` for its field.
    """

    name: str
    kind: str
    args: Tuple[Any, ...]

    @property
    def token(self) -> bool:
        """A choice named by its field's token (``zoo``, ``fitting``), resolved against the context."""
        return self.kind == "choice" and self.args == (TOKENS.get(self.name),)

    def spec(self) -> Dict[str, Any]:
        """The YAML form: ``{kind: [args]}`` (or ``{choice: token}``)."""
        if self.token:
            return {"choice": self.args[0]}
        return {self.kind: list(self.args)}

    def bounds(self, base: TrialConfig) -> Tuple[float, float]:
        return _bound(self.name, self.args[0], base), _bound(self.name, self.args[1], base)

    def choices(self, ctx: SpaceContext, students: Sequence[str]) -> List[Any]:
        if self.token:
            return student_choices(ctx) if self.name == "student" else connector_choices(ctx, students)
        return list(self.args)


def _bound(name: str, value: Any, base: TrialConfig) -> float:
    if isinstance(value, str):
        text = value.replace(" ", "")
        for op in ("*", "/"):
            head, sep, tail = text.partition(op)
            if sep and head == "base":
                try:
                    factor = float(tail)
                except ValueError:
                    break
                if factor > 0:
                    ref = float(getattr(base, name))
                    return ref * factor if op == "*" else ref / factor
        raise ConfigError(f"search.{name}: bound {value!r} is not allowed; give a number, 'base*K' or 'base/K' (K > 0)")
    return value


def _students(dims: Mapping[str, Dim], ctx: SpaceContext) -> List[str]:
    """The students a space's trials may have: its student choices, else the base's."""
    student = dims.get("student")
    return student.choices(ctx, []) if student else [ctx.base.student]


def _field(name: str) -> None:
    if name not in _FIELDS:
        raise ConfigError(f"search.{name}: unknown config field{did_you_mean(name, list(_FIELDS))}; "
                          f"searchable: {', '.join(n for n in _FIELDS if n not in SWEEP_FIXED)}")
    if name in SWEEP_FIXED:
        raise ConfigError(f"search.{name}: is fixed for a whole sweep (the data, the teacher, the epoch budget and "
                          "the seeds are shared by every trial); searchable: "
                          f"{', '.join(n for n in _FIELDS if n not in SWEEP_FIXED)}")


def _dim(name: str, spec: Any) -> Optional[Dim]:
    """One ``search:`` entry as a ``Dim``; ``fixed`` (None returned) takes a preset's dimension out."""
    _field(name)
    if spec == "fixed":
        return None
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(f"search.{name}: must be one of {{loguniform: [low, high]}}, {{uniform: [low, high]}}, "
                          f"{{int: [low, high]}}, {{choice: [a, b, ...]}} or 'fixed'; got {str(spec)[:80]}")
    (kind, args), = spec.items()
    if kind not in KINDS:
        raise ConfigError(f"search.{name}: kind {kind!r} is not allowed{did_you_mean(str(kind), list(KINDS))}; "
                          f"choose from: {', '.join(KINDS)}")
    if kind == "choice":
        if isinstance(args, str) and args == TOKENS.get(name):
            return Dim(name, kind, (args,))
        if not isinstance(args, (list, tuple)) or not args:
            token = f" or {TOKENS[name]!r}" if name in TOKENS else ""
            raise ConfigError(f"search.{name}: choice needs a non-empty list of values{token}")
        if len({repr(a) for a in args}) != len(args):
            raise ConfigError(f"search.{name}: choice lists a value twice: {list(args)}")
        return Dim(name, kind, tuple(args))
    field_type = _NUMERIC.get(str(_FIELDS[name].type))
    if field_type is None or (kind == "int") != (field_type == "int"):
        allowed = "choice" if field_type is None else ("int or choice" if field_type == "int" else
                                                       "loguniform, uniform or choice")
        raise ConfigError(f"search.{name}: {kind} does not fit a field of type {_FIELDS[name].type}; allowed: {allowed}")
    if not isinstance(args, (list, tuple)) or len(args) != 2:
        raise ConfigError(f"search.{name}: {kind} needs [low, high], got {str(args)[:80]}")
    return Dim(name, kind, tuple(_number(a) for a in args))


def _number(value: Any) -> Any:
    """A bound written as text that is a number (PyYAML reads ``1e-5``, an exponent without a dot, as a
    string) becomes the number; ``base/K`` stays text."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_search(search: Mapping[str, Any]) -> Dict[str, Optional[Dim]]:
    """A ``search:`` mapping as ``{field: Dim}`` (None: taken out of a preset); syntax and field names only."""
    if not isinstance(search, Mapping):
        raise ConfigError(f"search: must be a mapping of field: {{kind: args}}, got {type(search).__name__}")
    return {str(name): _dim(str(name), spec) for name, spec in search.items()}


def parse_flag(text: str) -> Tuple[str, Any]:
    """``--search FIELD=KIND:A,B[,...]`` (or ``FIELD=fixed``) as a ``search:`` entry ``(field, {kind: [A, B]})``."""
    name, sep, rest = text.partition("=")
    kind, colon, args = rest.partition(":")
    name, kind = name.strip(), kind.strip()
    if not sep or not name or (not colon and kind != "fixed"):
        raise ConfigError(f"search: {text!r} must look like FIELD=KIND:A,B (KIND one of {', '.join(KINDS)}), "
                          "e.g. lr=loguniform:0.01,0.5 or connector=choice:conv1x1_bn,linear, or FIELD=fixed")
    if kind == "fixed":
        return name, "fixed"
    values = [yaml.safe_load(a.strip()) for a in args.split(",")]
    if kind == "choice" and len(values) == 1 and values[0] == TOKENS.get(name):
        return name, {kind: values[0]}
    return name, {kind: values}


def _validate(dims: Mapping[str, Dim], base: TrialConfig) -> None:
    """Bounds and values each field accepts (its own checks and registries), before any data is read."""
    for d in dims.values():
        if d.kind == "choice":
            values = [] if d.token else d.args
        else:
            low, high = d.bounds(base)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
                raise ConfigError(f"search.{d.name}: bounds must be finite numbers, got [{low!r}, {high!r}]")
            if d.kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
                raise ConfigError(f"search.{d.name}: int bounds must be integers, got [{low!r}, {high!r}]")
            if not low < high:
                raise ConfigError(f"search.{d.name}: low {low:g} must be below high {high:g}")
            if d.kind == "loguniform" and low <= 0:
                raise ConfigError(f"search.{d.name}: loguniform needs low > 0, got {low:g}; use uniform to include 0")
            values = [low, high]
        for v in values:
            try:
                apply_params(base, {d.name: v})
            except ConfigError as e:
                raise ConfigError(f"search.{e}") from None


class Declared:
    """The define-by-run function of a declared space (picklable: Ray ships it with the searcher)."""

    def __init__(self, dims: Mapping[str, Dim]):
        self.dims = dict(dims)

    def __call__(self, trial: Any, ctx: SpaceContext) -> Optional[Dict[str, Any]]:
        students = _students(self.dims, ctx)
        for d in self.dims.values():
            if d.kind == "choice":
                trial.suggest_categorical(d.name, d.choices(ctx, students))
            elif d.kind == "int":
                low, high = d.bounds(ctx.base)
                trial.suggest_int(d.name, int(low), int(high))
            else:
                trial.suggest_float(d.name, *d.bounds(ctx.base), log=d.kind == "loguniform")
        # a searched student with the connector fixed: the base connector where it fits, else the paper's
        if "student" in self.dims and "connector" not in self.dims and not connector_fits_student(
                ctx, ctx.base.connector, trial.params["student"]):
            return {"connector": PAPER_CONNECTOR}
        return None

    def check(self, ctx: SpaceContext) -> None:
        """What needs the data: every listed connector fits every listed student to the teacher."""
        connector = self.dims.get("connector")
        if connector is None:
            return
        students = _students(self.dims, ctx)
        for c in connector.choices(ctx, students):
            for s in students:
                if not connector_fits_student(ctx, c, s):
                    raise ConfigError(f"search.connector: {c!r} does not fit student {s!r} to teacher "
                                      f"{ctx.base.teacher!r}; list connectors that fit every student, or 'fitting'")


def _inside(dims: Mapping[str, Dim], ctx: SpaceContext, point: Mapping[str, Any]) -> bool:
    students = _students(dims, ctx)
    for k, v in point.items():
        d = dims[k]
        if d.kind == "choice":
            if v not in d.choices(ctx, students):
                return False
        else:
            low, high = d.bounds(ctx.base)
            if not low <= v <= high:
                return False
    return True


class _Points:
    """The reference (the base config's values of the searched fields: what a user would run untuned), then
    the SRRL authors' (alpha, beta) pairs where both are searched; points outside the space are left out."""

    def __init__(self, dims: Mapping[str, Dim]):
        self.dims = dict(dims)

    def reference(self, ctx: SpaceContext) -> Dict[str, Any]:
        return {k: getattr(ctx.base, k) for k in self.dims}

    def __call__(self, ctx: SpaceContext) -> List[Dict[str, Any]]:
        ref = self.reference(ctx)
        points = [ref]
        if "alpha" in self.dims and "beta" in self.dims:
            points += [{**ref, "alpha": a, "beta": b} for a, b in AUTHORS_WEIGHTS]
        out: List[Dict[str, Any]] = []
        for p in points:
            if p not in out and _inside(self.dims, ctx, p):
                out.append(p)
        return out


class _Grid:
    """``--searcher grid``'s values of a declared space: every choice, and 5 points across each range
    (geometric for loguniform; integers for int), 3 significant digits."""

    POINTS = 5

    def __init__(self, dims: Mapping[str, Dim]):
        self.dims = dict(dims)

    def __call__(self, ctx: SpaceContext) -> Dict[str, List[Any]]:
        students = _students(self.dims, ctx)
        out: Dict[str, List[Any]] = {}
        for d in self.dims.values():
            if d.kind == "choice":
                out[d.name] = d.choices(ctx, students)
                continue
            low, high = d.bounds(ctx.base)
            steps = [i / (self.POINTS - 1) for i in range(self.POINTS)]
            if d.kind == "loguniform":
                values = [float(f"{low * (high / low) ** t:.3g}") for t in steps]
            else:
                values = [low + (high - low) * t for t in steps]
            out[d.name] = sorted({int(round(v)) for v in values}) if d.kind == "int" else \
                [float(f"{v:.3g}") for v in values]
        return out


def declared_space(name: str, description: str, search: Mapping[str, Any], base: Optional[TrialConfig] = None,
                   **options: Any) -> SearchSpace:
    """A ``SearchSpace`` from a ``search:`` mapping; ``options`` are ``SearchSpace``'s other fields
    (objectives, sampler, scheduler, grid_values). With ``base``, bounds and values are validated now.

    Raises:
        ConfigError: a one-line message naming ``search.<field>`` and what is allowed.
    """
    dims = {k: d for k, d in parse_search(search).items() if d is not None}
    if not dims:
        raise ConfigError("search: declares no field to search; give at least one field: {kind: args}")
    if base is not None:
        _validate(dims, base)
    points = _Points(dims)
    options.setdefault("grid_values", _Grid(dims))
    return SearchSpace(name=name, description=description, define=Declared(dims), initial_points=points,
                       reference=points.reference, declaration={k: d.spec() for k, d in dims.items()}, **options)


def declaration_yaml(space: SearchSpace) -> str:
    """A preset as the YAML a user copies into a sweep file and edits (``--list-spaces``)."""
    head = f"# {space.name}: {space.description}\n"
    if space.declaration is None:
        return head + f"space: {space.name}    # not declarable as search: (an exhaustive grid of arms x seeds)\n"
    lines = [head.rstrip("\n")]
    if space.multi_objective or space.sampler != "tpe" or space.scheduler != "asha":
        lines.append(f"space: {space.name}    # objectives and sampler are the preset's; search: below extends it")
    lines.append("search:")
    lines += [f"  {k}: {yaml.safe_dump(spec, default_flow_style=True, width=1000).strip()}"
              for k, spec in space.declaration.items()]
    return "\n".join(lines) + "\n"


#: ``SweepConfig.space`` of a sweep whose ``search:`` mapping is the whole space (no preset under it)
DECLARED = "declared"


def space_of(space: str, search: Mapping[str, Any], base: Optional[TrialConfig] = None) -> SearchSpace:
    """A sweep's space: the preset ``space`` with the ``search:`` entries laid over it (an entry replaces the
    preset's dimension of that field, ``fixed`` removes it), or the ``search:`` mapping alone when ``space`` is
    ``DECLARED``. With ``base``, bounds and values are validated now (before any data is read).

    Raises:
        ConfigError: an unknown preset, or a ``search:`` entry that is not allowed (one line).
    """
    from search_spaces._registry import get_space, list_spaces

    if space == DECLARED:
        return declared_space(DECLARED, "the sweep's own search: mapping", search, base)
    check_choice("space", space, list_spaces())
    preset = get_space(space)
    if not search:
        if base is not None and preset.declaration is not None:
            _validate({k: d for k, d in parse_search(preset.declaration).items() if d is not None}, base)
        return preset
    if preset.declaration is None:
        raise ConfigError(f"search: space {space!r} is an exhaustive grid, not a declared space; search: cannot "
                          "extend it (leave out space: to declare a whole space)")
    merged = {**preset.declaration, **search}
    changed = ", ".join(search)
    options = {f.name: getattr(preset, f.name) for f in dataclasses.fields(SearchSpace)
               if f.name in ("objectives", "sampler", "scheduler")}
    return declared_space(preset.name, f"{preset.description}; search: {changed}", merged, base, **options)
