"""The samplers over the registered spaces: grids enumerated once each, every sampler built or its alternatives
named, smoke points that move every searched dimension."""
from __future__ import annotations

import itertools
from typing import Any, Dict, List

import optuna
import pytest

from search_spaces import SAMPLERS, SearchSpace, SpaceContext, build_sampler, get_space, grid_size, list_spaces
from tuner.core.catalog import list_connectors

OPTUNA_SPACES = [n for n in list_spaces() if not get_space(n).exhaustive]


# ---------------------------------------------------------------------------------------- samplers


def _ask_tell_grid(space: SearchSpace, ctx: SpaceContext) -> List[Dict[str, Any]]:
    """Every trial of the ``grid`` sampler, asked and told as Tune's searcher does (outside ``optimize``)."""
    study = optuna.create_study(direction="maximize", sampler=build_sampler("grid", 0, space, ctx))
    seen = []
    for _ in range(grid_size(space, ctx)):
        trial = study.ask()
        seen.append(space.sample(trial, ctx))
        study.tell(trial, 0.0)  # the stock GridSampler raised here on the last point (study.stop outside optimize)
    return seen


def test_grid_sampler_enumerates_loss_weights(digits_ctx: SpaceContext) -> None:
    seen = _ask_tell_grid(get_space("loss_weights"), digits_ctx)
    grid = [0.01, 0.1, 1.0, 10.0, 100.0]
    assert len(seen) == 25 and {(p["alpha"], p["beta"]) for p in seen} == set(itertools.product(grid, grid))


def test_grid_sampler_enumerates_connectors(digits_ctx: SpaceContext) -> None:
    seen = _ask_tell_grid(get_space("connectors"), digits_ctx)
    fit = [c for c in list_connectors() if c != "identity"]
    assert len(seen) == len(fit) * 9
    assert {(p["connector"], p["alpha"], p["beta"]) for p in seen} == set(itertools.product(fit, [0.1, 1.0, 10.0], [0.1, 1.0, 10.0]))


@pytest.mark.parametrize("name", OPTUNA_SPACES)
def test_every_sampler_builds_or_names_the_alternatives(name: str, digits_ctx: SpaceContext) -> None:
    space = get_space(name)
    kinds = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler, "gp": optuna.samplers.GPSampler,
             "nsga2": optuna.samplers.NSGAIISampler, "grid": optuna.samplers.GridSampler}
    assert set(kinds) == set(SAMPLERS)
    for sampler, cls in kinds.items():
        if sampler == "grid" and space.grid_values is None:
            msg = f"searcher: 'grid' is not available for space '{name}'; choose from: tpe, random, gp, nsga2"
            with pytest.raises(ValueError) as err:
                build_sampler(sampler, 0, space, digits_ctx)
            assert str(err.value) == msg
        else:
            assert isinstance(build_sampler(sampler, 0, space, digits_ctx), cls)


def test_unknown_sampler_lists_the_choices(digits_ctx: SpaceContext) -> None:
    with pytest.raises(ValueError, match="searcher: unknown sampler 'cmaes'; choose from: tpe, random, gp, grid, nsga2$"):
        build_sampler("cmaes", 0, get_space("loss_weights"), digits_ctx)


@pytest.mark.parametrize("name", ["students", "pareto", "connectors", "full"])
def test_smoke_points_move_every_searched_dimension(name: str, ctx: SpaceContext) -> None:
    """A 4-trial smoke starts from the reference, the reference at another choice of every searched
    categorical, and one more authors' point: every searched parameter takes two values among them,
    or is left to the sampler in one of them."""
    space = get_space(name)
    points = space.smoke_points(ctx, num_samples=4)
    assert len(points) == 3 and points[0] == space.initial_points(ctx)[0]
    assert all(space.outside(ctx, p) is None for p in points)
    sampled = space.sample(optuna.create_study().ask(), ctx)
    for key in sampled:
        values = {p[key] for p in points if key in p}
        assert len(values) >= 2 or any(key not in p for p in points), (key, points)


def test_smoke_points_of_a_weights_space_are_the_authors(digits_ctx: SpaceContext) -> None:
    space = get_space("loss_weights")
    assert space.smoke_points(digits_ctx, num_samples=4) == space.initial_points(digits_ctx)
    assert space.smoke_points(digits_ctx, num_samples=2) == space.initial_points(digits_ctx)[:1]
