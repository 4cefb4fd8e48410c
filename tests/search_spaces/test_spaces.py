"""Every registered search space, run through real in-memory Optuna studies (and the sweep's searcher)."""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import pickle
from collections import defaultdict
from typing import Any, Dict, List

import optuna
import pytest

from search_spaces import (
    LABEL_KEYS,
    SAMPLERS,
    SPACES,
    SearchSpace,
    SpaceContext,
    apply_params,
    build_sampler,
    describe_spaces,
    get_space,
    list_spaces,
)
from search_spaces._registry import register_space
from tuner.core import metrics
from tuner.core.config import ConfigError, TrialConfig
from tuner.core.catalog import connector_fits, list_connectors, list_models, model_info
from tuner.core.models import build_model
from tuner.core.registry import Registry, UnknownNameError

optuna.logging.set_verbosity(optuna.logging.WARNING)

OPTUNA_SPACES = [n for n in list_spaces() if not get_space(n).exhaustive]
GRID_SPACES = [n for n in list_spaces() if get_space(n).exhaustive]
FIELDS = {f.name for f in dataclasses.fields(TrialConfig)}
N_TRIALS = 30
_CHANNELS: Dict[str, int] = {}


def channels(model: str, ctx: SpaceContext) -> int:
    """Feature channels straight from the model zoo (independent of the package's own cache)."""
    if model not in _CHANNELS:
        _CHANNELS[model] = build_model(model, ctx.num_classes, ctx.in_channels).feature_channels
    return _CHANNELS[model]


def run_study(space: SearchSpace, ctx: SpaceContext, n_trials: int = N_TRIALS, seed: int = 0):
    """Ask/tell ``n_trials`` with the space's default sampler, its initial points enqueued first."""
    directions = ["maximize" if m == "max" else "minimize" for m in space.modes]
    study = optuna.create_study(directions=directions, sampler=build_sampler(space.sampler, seed, space, ctx))
    for point in space.initial_points(ctx):
        study.enqueue_trial(point)
    sampled: List[Dict[str, Any]] = []
    for i in range(n_trials):
        trial = study.ask()
        sampled.append(space.sample(trial, ctx))
        values = [float(i % 7), float((i * 3) % 5)][: len(directions)]  # dummy objective(s)
        study.tell(trial, values[0] if len(values) == 1 else values)
    return study, sampled


# ---------------------------------------------------------------------------------------- context


def test_context_digits(digits_ctx: SpaceContext) -> None:
    assert (digits_ctx.num_classes, digits_ctx.in_channels, digits_ctx.input_size) == (10, 1, 8)
    assert digits_ctx.teacher_channels == build_model("digits_cnn4x64", 10, 1).feature_channels == 64


def test_context_cifar_needs_no_data(cifar_ctx: SpaceContext) -> None:
    assert cifar_ctx.base.data_dir is None
    assert (cifar_ctx.num_classes, cifar_ctx.in_channels, cifar_ctx.input_size, cifar_ctx.teacher_channels) == (100, 3, 32, 256)


def test_context_falls_back_to_loader_defaults_and_explicit_values() -> None:
    synth = SpaceContext.for_config(TrialConfig.from_dict({"dataset": "synthetic"}))
    assert (synth.num_classes, synth.in_channels, synth.input_size) == (10, 3, 32)  # the synthetic loader's defaults
    base = TrialConfig.from_dict({"dataset": "imagefolder"})
    with pytest.raises(ValueError, match="num_classes: dataset 'imagefolder'"):
        SpaceContext.for_config(base)
    ctx = SpaceContext.for_config(base, num_classes=5, input_size=8, in_channels=1)
    assert (ctx.num_classes, ctx.in_channels, ctx.input_size) == (5, 1, 8)


def test_context_is_frozen_and_picklable(digits_ctx: SpaceContext) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        digits_ctx.num_classes = 3  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(digits_ctx)) == digits_ctx


# ---------------------------------------------------------------------------------------- registry


def test_registry_lists_every_space() -> None:
    assert isinstance(SPACES, Registry)
    assert list_spaces() == ["recipe", "loss_weights", "connectors", "students", "full", "pareto", "ablation"]
    for name in list_spaces():
        assert get_space(name).name == name


def test_describe_spaces_one_line_each() -> None:
    lines = describe_spaces().splitlines()
    assert len(lines) == len(list_spaces())
    desc_col = {len(line) - len(line.split("  ", 1)[1].lstrip()) for line in lines}
    assert len(desc_col) == 1  # descriptions start in one column
    for name, line in zip(list_spaces(), lines):
        assert line.startswith(name + " ")
        assert line.endswith(get_space(name).description)


def test_unknown_space_suggests_the_close_one() -> None:
    with pytest.raises(UnknownNameError, match='did you mean "loss_weights"') as err:
        get_space("loss_weight")
    assert isinstance(err.value, ValueError) and "choose from: " + ", ".join(list_spaces()) in str(err.value)
    assert "\n" not in str(err.value)


def test_duplicate_space_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_space(get_space("full"))


def _define(trial: Any, ctx: SpaceContext) -> None:
    trial.suggest_float("alpha", 0.1, 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of define"),
        ({"define": _define, "grid": lambda ctx, n: []}, "exactly one of define"),
        ({"define": _define, "objectives": (("val_accuracy", "max"),)}, "unknown metric"),
        ({"define": _define, "objectives": (("val_acc", "maximize"),)}, "mode"),
        ({"define": _define, "sampler": "cmaes"}, "sampler"),
        ({"define": _define, "scheduler": "pbt"}, "scheduler"),
        ({"define": _define, "objectives": (("val_acc", "max"), ("student_macs", "min"))}, "fifo"),
        ({"define": _define, "description": "two\nlines"}, "one non-empty line"),
    ],
)
def test_bad_space_definitions_raise(kwargs: Dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SearchSpace(**{"name": "bad", "description": "bad", **kwargs})


@pytest.mark.parametrize("name", list_spaces())
def test_space_metadata(name: str) -> None:
    space = get_space(name)
    assert space.description.strip() and "\n" not in space.description
    metric_names = {getattr(metrics, n) for n in metrics.__all__ if isinstance(getattr(metrics, n), str)}
    assert all(m in metric_names and mode in ("max", "min") for m, mode in space.objectives)
    assert space.sampler in SAMPLERS and space.scheduler in ("asha", "fifo")
    if space.multi_objective:
        assert space.scheduler == "fifo"


@pytest.mark.parametrize("name", list_spaces())
def test_check_passes(name: str, ctx: SpaceContext) -> None:
    get_space(name).check(ctx, n_seeds=2)


def test_check_rejects_a_non_field_name(digits_ctx: SpaceContext) -> None:
    def typo(trial: Any, ctx: SpaceContext) -> None:
        trial.suggest_float("alpah", 0.1, 1.0)

    with pytest.raises(ValueError, match="alpah are not TrialConfig fields"):
        SearchSpace(name="typo", description="typo", define=typo).check(digits_ctx)


def test_check_rejects_an_invalid_value(digits_ctx: SpaceContext) -> None:
    def bad(trial: Any, ctx: SpaceContext) -> Dict[str, Any]:
        trial.suggest_float("alpha", 0.1, 1.0)
        return {"student": "resnet9000"}

    with pytest.raises(ConfigError, match="student"):
        SearchSpace(name="bad", description="bad", define=bad).check(digits_ctx)


# ---------------------------------------------------------------------------------------- Optuna spaces


def expected_students(ctx: SpaceContext) -> List[str]:
    return [m for m in list_models(input_size=ctx.input_size) if m != ctx.base.teacher]


@pytest.mark.parametrize("name", OPTUNA_SPACES)
def test_optuna_space_samples_valid_trials(name: str, ctx: SpaceContext) -> None:
    space = get_space(name)
    study, sampled = run_study(space, ctx)
    points = space.initial_points(ctx)
    assert len(sampled) == N_TRIALS == len(study.trials)

    # the initial points come first, in order, exactly
    assert points, f"{name} has no initial points"
    for point, params, trial in zip(points, sampled, study.trials):
        assert {k: params[k] for k in point} == point
        assert {k: trial.params[k] for k in point} == point

    choice_sets: Dict[str, set] = defaultdict(set)
    for params, trial in zip(sampled, study.trials):
        # every key is a TrialConfig field (or a label); every trial validates
        assert set(params) <= FIELDS | set(LABEL_KEYS)
        cfg = TrialConfig.from_dict({**ctx.base.to_dict(), **{k: v for k, v in params.items() if k != "arm"}})
        assert cfg == apply_params(ctx.base, params)
        # ranges respected
        for pname, dist in trial.distributions.items():
            if isinstance(dist, optuna.distributions.FloatDistribution):
                assert dist.low <= trial.params[pname] <= dist.high
                if pname in ("alpha", "beta"):
                    assert (dist.low, dist.high, dist.log) == (0.01, 100.0, True)
                if pname == "lr":  # each preset's own range, relative to the base's lr
                    low, high = {"recipe": (2, 32)}.get(name, (10, 10))
                    assert dist.log and math.isclose(dist.low, ctx.base.lr / low) and math.isclose(dist.high, ctx.base.lr * high)
                if pname == "weight_decay":
                    assert (dist.low, dist.high, dist.log) == (1e-5, 1e-3, True)
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                choice_sets[pname].add(tuple(dist.choices))
        # what the trial trains is valid: a student of the data's size, not the teacher's arch, a fitting connector
        if "student" in params:
            assert model_info(cfg.student)["input_size"] == ctx.input_size and cfg.student != ctx.base.teacher
        assert connector_fits(cfg.connector, channels(cfg.student, ctx), ctx.teacher_channels)

    # each categorical keeps one choice set for the whole study
    assert all(len(s) == 1 for s in choice_sets.values()), choice_sets
    choices = {k: list(next(iter(s))) for k, s in choice_sets.items()}
    if "student" in choices:
        assert choices["student"] == expected_students(ctx)
    if "connector" in choices:
        students = choices.get("student", [ctx.base.student])
        fit = [c for c in list_connectors() if all(connector_fits(c, channels(s, ctx), ctx.teacher_channels) for s in students)]
        assert choices["connector"] == fit
        same = all(channels(s, ctx) == ctx.teacher_channels for s in students)
        assert "conv1x1_bn_relu" in fit and ("identity" in fit) == same  # identity only where channels match


@pytest.mark.parametrize("name", OPTUNA_SPACES)
def test_optuna_space_is_deterministic(name: str, digits_ctx: SpaceContext) -> None:
    space = get_space(name)
    assert run_study(space, digits_ctx, n_trials=8, seed=3)[1] == run_study(space, digits_ctx, n_trials=8, seed=3)[1]


@pytest.mark.parametrize("name", OPTUNA_SPACES)
def test_define_through_the_sweeps_searcher(name: str, digits_ctx: SpaceContext) -> None:
    """What the sweep does: its searcher (``tuner.driver.search.StudySearch``) calls ``partial(define, ctx=ctx)``
    (pickled with the searcher) on each asked trial."""
    import optuna

    from tuner.driver.search import StudySearch

    space = get_space(name)
    define = pickle.loads(pickle.dumps(functools.partial(space.define, ctx=digits_ctx)))
    multi = space.multi_objective
    searcher = StudySearch(
        space=define,
        metric=space.metric_names if multi else space.metric_names[0],
        mode=space.modes if multi else space.modes[0],
        study_name=name, storage=optuna.storages.InMemoryStorage(), max_epochs=1,
        sampler=functools.partial(build_sampler, space.sampler, 0, space, digits_ctx),
        points_to_evaluate=space.initial_points(digits_ctx),
    )
    searcher = pickle.loads(pickle.dumps(searcher))  # as Tune writes it into tuner.pkl (NSGA-II's sampler holds a lock)
    points = space.initial_points(digits_ctx)
    for i in range(len(points) + 2):
        config = searcher.suggest(f"t{i}")
        if i < len(points):
            assert {k: config[k] for k in points[i]} == points[i]
        apply_params(digits_ctx.base, config)
        searcher.on_trial_complete(f"t{i}", {"epoch": 1, **{m: 1.0 for m in space.metric_names}})


def test_students_falls_back_to_the_paper_connector(digits_ctx: SpaceContext) -> None:
    """``identity`` fits no digits student of the 64-channel teacher: the space swaps in conv1x1_bn_relu."""
    base = digits_ctx.base.replace(teacher="digits_cnn2x8", connector="identity")
    ctx = SpaceContext.for_config(base)
    space = get_space("students")
    _, sampled = run_study(space, ctx, n_trials=12)
    seen = set()
    for params in sampled:
        cfg = apply_params(base, params)
        seen.add(cfg.connector)
        fits = connector_fits("identity", channels(cfg.student, ctx), ctx.teacher_channels)
        assert cfg.connector == ("identity" if fits else "conv1x1_bn_relu")
        assert ("connector" in params) == (not fits)
    assert seen == {"conv1x1_bn_relu"} or seen == {"identity", "conv1x1_bn_relu"}


def test_no_candidate_student_is_a_clear_error(digits_ctx: SpaceContext) -> None:
    ctx = dataclasses.replace(digits_ctx, input_size=16)
    with pytest.raises(ValueError, match="native input size 16"):
        get_space("students").check(ctx)


# ---------------------------------------------------------------------------------------- ablation


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_ablation_arms_times_seeds(ctx: SpaceContext, gamma: float) -> None:
    base = ctx.base.replace(alpha=2.0, beta=3.0, gamma=gamma, seed=7)
    ctx = dataclasses.replace(ctx, base=base)
    overrides = get_space("ablation").grid(ctx, 3)
    assert len(overrides) == 6 * 3
    kd = gamma or 1.0
    want = {
        "CE": (0.0, 0.0, 0.0),
        "CE+FM": (2.0, 0.0, 0.0),
        "CE+SR": (0.0, 3.0, 0.0),
        "CE+FM+SR": (2.0, 3.0, 0.0),
        "CE+KD": (0.0, 0.0, kd),
        "CE+FM+SR+KD": (2.0, 3.0, kd),
    }
    combos = set()
    for o in overrides:
        assert set(o) == {"arm", "alpha", "beta", "gamma", "seed"}
        assert (o["alpha"], o["beta"], o["gamma"]) == want[o["arm"]]
        combos.add((o["arm"], o["seed"]))
        cfg = apply_params(base, o)
        assert cfg == TrialConfig.from_dict({**base.to_dict(), **{k: v for k, v in o.items() if k != "arm"}})
        assert cfg.needs_teacher == (o["arm"] != "CE")
    assert combos == set(itertools.product(want, [7, 8, 9]))
    assert [o["arm"] for o in overrides[:6]] == list(want)  # seed-major, arms in table order
    assert overrides == get_space("ablation").grid(ctx, 3)


def test_ablation_uses_weight_one_for_terms_off_in_the_base(digits_ctx: SpaceContext) -> None:
    ctx = dataclasses.replace(digits_ctx, base=digits_ctx.base.replace(alpha=0.0, beta=0.0))
    arms = {o["arm"]: o for o in get_space("ablation").grid(ctx, 1)}
    assert (arms["CE+FM"]["alpha"], arms["CE+SR"]["beta"]) == (1.0, 1.0)


def test_ablation_rejects_zero_seeds_and_optuna(digits_ctx: SpaceContext) -> None:
    space = get_space("ablation")
    with pytest.raises(ValueError, match="at least 1 seed"):
        space.grid(digits_ctx, 0)
    with pytest.raises(ValueError, match="exhaustive"):
        space.sample(optuna.create_study().ask(), digits_ctx)
    with pytest.raises(ValueError, match="exhaustive"):
        build_sampler("tpe", 0, space, digits_ctx)
