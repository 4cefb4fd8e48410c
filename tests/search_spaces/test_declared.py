"""Declared search spaces: the ``search:`` mapping and ``--search`` flags, their checks, and the presets in that form."""
from __future__ import annotations

import math

import optuna
import pytest
import yaml

from search_spaces import SpaceContext, declaration_yaml, get_space, list_spaces, space_of
from search_spaces.declared import DECLARED, parse_flag
from tuner.core.config import ConfigError, TrialConfig

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def ctx() -> SpaceContext:
    return SpaceContext.for_config(TrialConfig())


def _sample(space, ctx, n=40, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append((space.sample(trial, ctx), trial.distributions))
        study.tell(trial, 0.0)
    return out


def test_flags_parse_to_the_yaml_form():
    assert parse_flag("lr=loguniform:0.01,0.5") == ("lr", {"loguniform": [0.01, 0.5]})
    assert parse_flag("batch_size=int:16,128") == ("batch_size", {"int": [16, 128]})
    assert parse_flag("connector=choice:conv1x1_bn,linear") == ("connector", {"choice": ["conv1x1_bn", "linear"]})
    assert parse_flag("nesterov=choice:true,false") == ("nesterov", {"choice": [True, False]})
    assert parse_flag("lr=loguniform:base/4,base*8") == ("lr", {"loguniform": ["base/4", "base*8"]})
    assert parse_flag("student=choice:zoo") == ("student", {"choice": "zoo"})
    assert parse_flag("beta=fixed") == ("beta", "fixed")
    # an exponent without a dot is a string to PyYAML (flags and YAML files alike): the bound is still a number
    space = space_of(DECLARED, dict([parse_flag("weight_decay=loguniform:1e-5,1e-3")]), TrialConfig())
    assert space.declaration == {"weight_decay": {"loguniform": [1e-5, 1e-3]}}


def test_a_declared_space_samples_its_kinds_within_bounds(ctx):
    search = {"lr": {"loguniform": [0.01, 0.5]}, "momentum": {"uniform": [0.5, 0.95]},
              "batch_size": {"int": [16, 128]}, "schedule": {"choice": ["multistep", "cosine"]}}
    space = space_of(DECLARED, search, ctx.base)
    assert space.name == DECLARED and dict(space.declaration) == search
    seen = set()
    for params, dists in _sample(space, ctx):
        assert set(params) == set(search)
        assert 0.01 <= params["lr"] <= 0.5 and dists["lr"].log
        assert 0.5 <= params["momentum"] <= 0.95 and not dists["momentum"].log
        assert isinstance(params["batch_size"], int) and 16 <= params["batch_size"] <= 128
        seen.add(params["schedule"])
    assert seen == {"multistep", "cosine"}


def test_the_reference_is_the_base_config_and_the_authors_weights_follow(ctx):
    base = ctx.base.replace(lr=0.1, alpha=1.0, beta=1.0)
    c = SpaceContext.for_config(base)
    space = space_of(DECLARED, {"alpha": {"loguniform": [0.01, 100]}, "beta": {"loguniform": [0.01, 100]},
                                "lr": {"loguniform": ["base/4", "base*8"]}}, base)
    assert space.reference_point(c) == {"alpha": 1.0, "beta": 1.0, "lr": 0.1}
    assert space.initial_points(c) == [{"alpha": 1.0, "beta": 1.0, "lr": 0.1}, {"alpha": 1.0, "beta": 5.0, "lr": 0.1},
                                       {"alpha": 10.0, "beta": 1.0, "lr": 0.1}]
    lr = next(d for p, ds in _sample(space, c, n=1) for k, d in ds.items() if k == "lr")
    assert math.isclose(lr.low, 0.025) and math.isclose(lr.high, 0.8)  # relative to the base lr
    # without both weights searched, only the reference; a base outside the space runs first nowhere
    only_lr = space_of(DECLARED, {"lr": {"loguniform": [0.2, 0.5]}}, base)
    assert only_lr.initial_points(c) == [] and only_lr.reference_point(c) == {"lr": 0.1}


def test_search_extends_or_trims_a_preset(ctx):
    space = space_of("recipe", {"weight_decay": {"loguniform": [1e-5, 1e-3]}, "beta": "fixed"}, ctx.base)
    assert list(space.declaration) == ["alpha", "lr", "weight_decay"]
    assert space.name == "recipe" and "search: weight_decay, beta" in space.description
    assert space_of("loss_weights", {}, ctx.base) is get_space("loss_weights")
    pareto = space_of("pareto", {"lr": {"loguniform": [0.01, 0.1]}}, ctx.base)
    assert pareto.multi_objective and pareto.sampler == "nsga2" and "lr" in pareto.declaration


@pytest.mark.parametrize("search, says", [
    ({"lrr": {"loguniform": [0.01, 0.5]}}, 'search.lrr: unknown config field (did you mean "lr"?)'),
    ({"teacher": {"choice": ["digits_cnn2x8"]}}, "search.teacher: is fixed for a whole sweep"),
    ({"lr": {"uniform": [0.0, 0.5]}}, "search.lr: 0.0 is out of range; allowed: (0, inf]"),
    ({"momentum": {"uniform": [0.5, 1.0]}}, "search.momentum: 1.0 is out of range; allowed: [0, 1)"),
    ({"lr": {"loguniform": ["base/0", 1]}}, "search.lr: bound 'base/0' is not allowed"),
    ({"batch_size": {"int": [16.5, 64]}}, "search.batch_size: int bounds must be integers"),
    ({"optimizer": {"choice": ["sgd", "adam"]}}, 'search.optimizer: \'adam\' is not allowed (did you mean "adamw"?)'),
    ({"schedule": {"choice": ["cosine", "cosine"]}}, "search.schedule: choice lists a value twice"),
    ({"schedule": {"uniform": [0, 1]}}, "search.schedule: uniform does not fit a field of type str; allowed: choice"),
    ({"lr": [0.01, 0.5]}, "search.lr: must be one of {loguniform: [low, high]}"),
    ({}, "search: declares no field to search"),
])
def test_bad_declarations_are_one_line_naming_the_field(search, says, ctx):
    with pytest.raises(ConfigError) as err:
        space_of(DECLARED, search, ctx.base)
    assert str(err.value).startswith(says) and "\n" not in str(err.value), str(err.value)


def test_listed_connectors_must_fit_every_listed_student(ctx):
    space = space_of(DECLARED, {"student": {"choice": ["digits_cnn2x4", "digits_cnn2x8"]},
                                "connector": {"choice": ["conv1x1_bn_relu", "identity"]}}, ctx.base)
    with pytest.raises(ConfigError, match="search.connector: 'identity' does not fit student 'digits_cnn2x4'"):
        space.check(ctx)
    fitting = space_of(DECLARED, {"student": {"choice": ["digits_cnn2x4", "digits_cnn2x8"]},
                                  "connector": {"choice": "fitting"}}, ctx.base)
    fitting.check(ctx)
    assert all(p["connector"] != "identity" for p, _ in _sample(fitting, ctx, n=20))


@pytest.mark.parametrize("name", [n for n in list_spaces() if get_space(n).declaration is not None])
def test_every_preset_printed_as_yaml_declares_the_same_space(name, ctx):
    """What --list-spaces prints, pasted into a sweep file, is the preset: the same distributions, the same first points."""
    printed = yaml.safe_load(declaration_yaml(get_space(name)))
    preset = get_space(name)
    copied = space_of(printed.get("space", DECLARED), printed["search"], ctx.base)
    assert copied.initial_points(ctx) == preset.initial_points(ctx)
    assert copied.reference_point(ctx) == preset.reference_point(ctx)
    for (a, da), (b, db) in zip(_sample(preset, ctx, n=8, seed=3), _sample(copied, ctx, n=8, seed=3)):
        assert a == b and da == db


def test_the_grid_of_a_declared_range_is_five_points_across_it(ctx):
    space = space_of(DECLARED, {"lr": {"loguniform": [0.01, 1.0]}, "batch_size": {"int": [16, 20]},
                                "nesterov": {"choice": [True, False]}}, ctx.base)
    assert space.grid_values(ctx) == {"lr": [0.01, 0.0316, 0.1, 0.316, 1.0], "batch_size": [16, 17, 18, 19, 20],
                                      "nesterov": [True, False]}


def test_search_flags_extend_the_default_preset_and_a_yaml_mapping_is_the_whole_space(tmp_path, ctx):
    import run_search

    def collect(*argv):
        return run_search._collect(run_search.build_parser().parse_args(list(argv)))

    flags = collect("--search", "weight_decay=loguniform:1e-5,1e-3", "--search", "beta=fixed")
    assert flags["space"] == "recipe" and flags["search"]["beta"] == "fixed"
    assert list(space_of(flags["space"], flags["search"], ctx.base).declaration) == ["alpha", "lr", "weight_decay"]
    (tmp_path / "s.yaml").write_text("search:\n  lr: {loguniform: [0.01, 0.5]}\n")
    over_yaml = collect("--config", str(tmp_path / "s.yaml"), "--search", "alpha=loguniform:0.1,10")
    assert "space" not in over_yaml and list(over_yaml["search"]) == ["lr", "alpha"]  # the YAML's space, extended
    assert collect("--space", "connectors", "--search", "lr=loguniform:0.01,0.5")["space"] == "connectors"


def test_a_space_with_one_first_point_adds_no_empty_smoke_point(ctx):
    space = space_of("recipe", {"weight_decay": {"loguniform": [1e-5, 1e-3]}, "beta": "fixed"}, ctx.base)
    assert space.smoke_points(ctx, 4) == space.initial_points(ctx) and {} not in space.smoke_points(ctx, 4)
