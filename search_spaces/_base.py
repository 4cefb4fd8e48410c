"""The types every search space is made of (``SpaceContext``, ``SearchSpace``) and ``build_sampler``."""
from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple

from tuner.core import metrics, verdict
from tuner.core.catalog import DATASETS, dataset_info, feature_channels, model_info
from tuner.core.config import LABEL_KEYS, SCHEDULERS, SEARCHERS, TrialConfig, apply_params

if TYPE_CHECKING:  # optuna is only needed once a study runs
    import optuna

__all__ = [
    "SpaceContext",
    "SearchSpace",
    "SAMPLERS",
    "SCHEDULERS",
    "LABEL_KEYS",
    "apply_params",
    "build_sampler",
]

SAMPLERS = SEARCHERS

MODES = ("max", "min")
_METRIC_NAMES = tuple(getattr(metrics, n) for n in metrics.__all__ if isinstance(getattr(metrics, n), str))
_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TrialConfig))
_LOADER_SIZE_KEYS = {"input_size": "image_size", "in_channels": "in_channels", "num_classes": "num_classes"}




@dataclass(frozen=True)
class SpaceContext:
    """What a space may depend on; built once by the sweep on the driver (picklable, immutable).

    Attributes:
        base: the sweep's validated base trial config; a trial is ``base`` plus the space's params.
        num_classes: classes of the data set.
        in_channels: image channels of the data set.
        input_size: the data set's native image size in pixels (8 digits, 32 CIFAR, 224 ImageNet).
        teacher_channels: ``feature_channels`` of ``base.teacher``.
    """
    base: TrialConfig
    num_classes: int
    in_channels: int
    input_size: int
    teacher_channels: int

    @classmethod
    def for_config(
        cls,
        base: TrialConfig,
        *,
        num_classes: Optional[int] = None,
        in_channels: Optional[int] = None,
        input_size: Optional[int] = None,
    ) -> "SpaceContext":
        """Derive the context from the data set's registry metadata; loads no data.

        Explicit arguments win; then ``tuner.core.catalog.dataset_info(base.dataset)``; then the data set
        loader's default option (``synthetic``: 10 classes of 3 x 32 x 32; ``imagefolder``: 32 px; reading the
        loader imports ``tuner.core.data``, torch); then the teacher's native ``input_size``/``in_channels``.

        Raises:
            ValueError: ``num_classes`` is fixed by none of these (``imagefolder``): pass it.
        """
        info = dataset_info(base.dataset)
        defaults = {
            name: p.default
            for name, p in inspect.signature(DATASETS.get(base.dataset)).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        teacher = model_info(base.teacher)
        given = {"num_classes": num_classes, "in_channels": in_channels, "input_size": input_size}
        values: Dict[str, Any] = {}
        for key, value in given.items():
            for fallback in (info.get(key), defaults.get(_LOADER_SIZE_KEYS[key]), teacher.get(key)):
                if value is None:
                    value = fallback
            if value is None:
                raise ValueError(
                    f"{key}: dataset {base.dataset!r} does not fix it; pass it from the loaded data (run_sweep does)"
                )
            values[key] = int(value)
        channels = feature_channels(base.teacher)
        return cls(base=base, teacher_channels=channels, **values)


def _no_points(ctx: SpaceContext) -> List[Dict[str, Any]]:
    return []


@dataclass(frozen=True)
class SearchSpace:
    """A named search space: a define-by-run function over an Optuna trial, or an exhaustive grid.

    Attributes:
        name: registry name (``--space``).
        description: one line saying what it searches.
        define: ``define(trial, ctx) -> constants | None``, a module-level function (Ray calls it
            as ``functools.partial(define, ctx=ctx)(trial)``). It may only call ``trial.suggest_*``;
            every name is a ``TrialConfig`` field, and a categorical's choices depend on ``ctx`` only.
        initial_points: ``ctx -> [params]`` evaluated first, in order (enqueued in the study).
        grid: exhaustive spaces only: ``(ctx, n_seeds) -> [overrides]``, every trial of the sweep.
        grid_values: ``ctx -> {param: [values]}``, a discretised space for the ``grid`` sampler.
        objectives: ``((metric, "max" | "min"), ...)`` with names from ``tuner.core.metrics``;
            two or more entries make the search multi-objective.
        sampler: default Optuna sampler, one of ``SAMPLERS``.
        scheduler: default Tune scheduler, one of ``SCHEDULERS``.
        reference: ``ctx -> point``, what a tuned result must beat; None: the first initial point.
        declaration: the ``search:`` mapping a declared space was built from (``search_spaces.declared``).
    """
    name: str
    description: str
    define: Optional[Callable[..., Optional[Dict[str, Any]]]] = None
    initial_points: Callable[[SpaceContext], List[Dict[str, Any]]] = _no_points
    grid: Optional[Callable[[SpaceContext, int], List[Dict[str, Any]]]] = None
    grid_values: Optional[Callable[[SpaceContext], Dict[str, List[Any]]]] = None
    objectives: Tuple[Tuple[str, str], ...] = ((metrics.RANK_VAL_ACC, "max"),)
    sampler: str = "tpe"
    scheduler: str = "asha"
    reference: Optional[Callable[[SpaceContext], Dict[str, Any]]] = None
    declaration: Optional[Mapping[str, Any]] = None

    def __post_init__(self) -> None:
        where = f"search space {self.name!r}"
        if (self.define is None) == (self.grid is None):
            raise ValueError(f"{where}: give exactly one of define (Optuna) or grid (exhaustive)")
        if "\n" in self.description or not self.description.strip():
            raise ValueError(f"{where}: description must be one non-empty line")
        if not self.objectives:
            raise ValueError(f"{where}: needs at least one objective")
        for metric, mode in self.objectives:
            if metric not in _METRIC_NAMES:
                raise ValueError(f"{where}: unknown metric {metric!r}; choose from: {', '.join(_METRIC_NAMES)}")
            if mode not in MODES:
                raise ValueError(f"{where}: mode {mode!r} of {metric!r} must be one of: {', '.join(MODES)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"{where}: sampler {self.sampler!r}; choose from: {', '.join(SAMPLERS)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"{where}: scheduler {self.scheduler!r}; choose from: {', '.join(SCHEDULERS)}")
        if self.multi_objective and self.scheduler == "asha":
            raise ValueError(f"{where}: ASHA stops trials on one metric; a multi-objective space needs scheduler 'fifo'")

    @property
    def exhaustive(self) -> bool:
        """True for a grid space: every trial is listed up front, no Optuna."""
        return self.grid is not None

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def metric_names(self) -> List[str]:
        return [m for m, _ in self.objectives]

    @property
    def modes(self) -> List[str]:
        return [m for _, m in self.objectives]

    def reference_point(self, ctx: SpaceContext) -> Optional[Dict[str, Any]]:
        """What a tuned result must beat: a declared space's base config (what a user runs untuned), else
        the first initial point; None if there is none."""
        if self.reference is not None:
            return dict(self.reference(ctx))
        points = self.initial_points(ctx) if self.define is not None else []
        return dict(points[0]) if points else None

    def reference_name(self, ctx: SpaceContext) -> str:
        """How a verdict names the reference point: ``the authors' (1, 1)`` (+ the other fixed values)."""
        return verdict.reference_name(self.reference_point(ctx))

    def smoke_points(self, ctx: SpaceContext, num_samples: int) -> List[Dict[str, Any]]:
        """The points a ``--smoke`` sweep of ``num_samples`` trials starts from, so that its few trials
        still move every searched dimension: the reference point, then the last initial point (the one
        a short list cuts) at another choice of each searched categorical (student, connector, ...)
        with what no initial point moves left to the sampler, then the other initial points; one
        trial is left for the sampler."""
        points = [dict(p) for p in self.initial_points(ctx)] if self.define is not None else []
        if not points:
            return points
        last = points[-1]
        categoricals = self._categoricals(ctx)
        # a value every initial point shares (the full space's lr, say) is left to the sampler here
        varied = {k: v for k, v in last.items()
                  if k in categoricals or any(p.get(k, v) != v for p in points)}
        for key, choices in categoricals.items():
            current = varied.get(key, getattr(ctx.base, key, None))
            for choice in choices:
                candidate = {**varied, key: choice}
                if choice != current and self.outside(ctx, candidate) is None:
                    varied = candidate
                    break
        if varied and varied != last:  # an empty point would match, and label, every sampled trial
            points.insert(1, varied)
        return points[:max(num_samples - 1, 1)]

    def _categoricals(self, ctx: SpaceContext) -> Dict[str, List[Any]]:
        """Each categorical parameter ``define`` samples, with its choices (from one asked trial)."""
        import optuna

        trial = _scratch_study(len(self.objectives)).ask()
        self.define(trial, ctx=ctx)
        return {k: list(d.choices) for k, d in trial.distributions.items()
                if isinstance(d, optuna.distributions.CategoricalDistribution) and len(d.choices) > 1}

    def outside(self, ctx: SpaceContext, point: Mapping[str, Any]) -> Optional[str]:
        """Why ``point`` (param -> value) is not a point of this space, or None if it is.

        Each key must be a parameter the space samples (within its range or among its choices) or a
        constant it sets (at that value); keys the point leaves out are sampled as usual.
        """
        import optuna

        trial = _scratch_study(len(self.objectives)).ask()
        constants = (self.define(trial, ctx=ctx) or {}) if self.define is not None else {}
        dists = trial.distributions
        for key, value in point.items():
            if key in constants:
                if constants[key] != value:
                    return f"{key} = {value!r}, but this space fixes it at {constants[key]!r}"
                continue
            dist = dists.get(key)
            if dist is None:
                return f"{key} is not searched by space {self.name!r} (it searches {', '.join(dists) or 'nothing'})"
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                if value not in dist.choices:
                    return f"{key} = {value!r} is not one of its choices here ({', '.join(map(str, dist.choices))})"
            elif not (isinstance(value, (int, float)) and dist.low <= value <= dist.high):
                return f"{key} = {value!r} is outside [{dist.low:g}, {dist.high:g}]"
        return None

    def sample(self, trial: "optuna.Trial", ctx: SpaceContext) -> Dict[str, Any]:
        """Run ``define`` on ``trial``; return ``{**trial.params, **constants}`` (what the sweep's searcher yields)."""
        if self.define is None:
            raise ValueError(f"search space {self.name!r} is exhaustive; use space.grid(ctx, n_seeds), not Optuna")
        constants = self.define(trial, ctx=ctx) or {}
        return {**trial.params, **constants}

    def check(self, ctx: SpaceContext, n_seeds: int = 1) -> List[str]:
        """Fail early, on the driver, if this space cannot produce valid trials for ``ctx``.

        Validates every initial point, one random sample (Optuna spaces) or every grid entry, and
        returns the parameter names the trials carry (in first-seen order).

        Raises:
            ValueError / tuner.core.config.ConfigError: a one-line message naming the problem.
        """
        seen: Dict[str, None] = {}
        if self.grid is not None:
            for overrides in self.grid(ctx, n_seeds):
                _checked(self, ctx, overrides)
                seen.update(dict.fromkeys(overrides))
            return list(seen)
        import optuna

        if hasattr(self.define, "check"):  # a declared space: what its choices need of the data
            self.define.check(ctx)
        points = self.initial_points(ctx)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            directions = ["maximize" if m == "max" else "minimize" for m in self.modes]
            study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=0))
        finally:
            optuna.logging.set_verbosity(verbosity)
        for point in points:
            study.enqueue_trial(point)
        for _ in range(len(points) + 1):
            trial = study.ask()
            params = self.sample(trial, ctx)
            _checked(self, ctx, params)
            seen.update(dict.fromkeys(params))
            study.tell(trial, [0.0] * len(directions))
        return list(seen)


def _scratch_study(n_objectives: int) -> "optuna.Study":
    """An in-memory study to ask a throw-away trial of (Optuna's "study created" line kept quiet)."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(directions=["maximize"] * n_objectives)
    finally:
        optuna.logging.set_verbosity(verbosity)


def _checked(space: SearchSpace, ctx: SpaceContext, params: Mapping[str, Any]) -> TrialConfig:
    bad = sorted(k for k in params if k not in _FIELD_NAMES and k not in LABEL_KEYS)
    if bad:
        raise ValueError(f"search space {space.name!r}: {', '.join(bad)} are not TrialConfig fields")
    return apply_params(ctx.base, params)


def grid_size(space: SearchSpace, ctx: SpaceContext) -> int:
    """Number of points the ``grid`` sampler enumerates for ``space`` (the product of its value lists)."""
    if space.grid_values is None:
        raise ValueError(f"searcher: 'grid' is not available for space {space.name!r}")
    return math.prod(len(v) for v in space.grid_values(ctx).values())


def build_sampler(name: str, seed: int, space: SearchSpace, ctx: SpaceContext) -> "optuna.samplers.BaseSampler":
    """The Optuna sampler ``name`` for ``space``, seeded.

    ``tpe``: multivariate TPE with the constant liar (trials run in parallel under Ray);
    ``random``; ``gp``: Optuna's Gaussian-process sampler (as TPE, 5 random trials first); ``nsga2``; ``grid``: a ``GridSampler`` over ``space.grid_values(ctx)``, each
    combination once (the sweep runs ``grid_size`` trials).

    Raises:
        ValueError: unknown name, or ``grid`` for a space without ``grid_values``.
    """
    import optuna

    if name not in SAMPLERS:
        raise ValueError(f"searcher: unknown sampler {name!r}; choose from: {', '.join(SAMPLERS)}")
    if space.exhaustive:
        raise ValueError(f"searcher: space {space.name!r} is an exhaustive grid; it runs without an Optuna sampler")
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=5)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "grid":
        if space.grid_values is None:
            others = ", ".join(s for s in SAMPLERS if s != "grid")
            raise ValueError(f"searcher: 'grid' is not available for space {space.name!r}; choose from: {others}")
        from search_spaces._grid import TuneGridSampler

        return TuneGridSampler(space.grid_values(ctx), seed=seed)
    with warnings.catch_warnings():  # multivariate / constant_liar are experimental in optuna 4.x
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, n_startup_trials=5)
