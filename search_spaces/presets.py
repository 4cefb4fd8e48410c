"""The named search spaces, declared in the form a user writes under ``search:`` (``--list-spaces`` prints them).

Each preset is a ``search:`` mapping plus what a mapping cannot say (objectives, default sampler and
scheduler, a coarser grid for ``--searcher grid``); ``search_spaces.declared`` builds every one.
The reference point of each is the base config; the SRRL authors' (1, 1), (1, 5), (10, 1) run first
wherever alpha and beta are searched.
"""
from __future__ import annotations

from typing import Any, Dict, List

from search_spaces._base import SpaceContext
from search_spaces._choices import WEIGHT_HIGH, WEIGHT_LOW, connector_choices
from search_spaces._registry import register_space
from search_spaces.declared import declared_space
from tuner.core import metrics

__all__ = ["DEFAULT_SPACE", "PRESETS", "RECIPE_LR"]

WEIGHTS = {"alpha": {"loguniform": [WEIGHT_LOW, WEIGHT_HIGH]}, "beta": {"loguniform": [WEIGHT_LOW, WEIGHT_HIGH]}}
#: the recipe preset's learning-rate range, relative to the base's (README, "The default space": measured)
RECIPE_LR = {"loguniform": ["base/2", "base*32"]}
LOSS_GRID = [0.01, 0.1, 1.0, 10.0, 100.0]
CONNECTOR_GRID = [0.1, 1.0, 10.0]


def _loss_grid(ctx: SpaceContext) -> Dict[str, List[Any]]:
    return {"alpha": list(LOSS_GRID), "beta": list(LOSS_GRID)}


def _connector_grid(ctx: SpaceContext) -> Dict[str, List[Any]]:
    return {"connector": connector_choices(ctx, [ctx.base.student]), "alpha": list(CONNECTOR_GRID),
            "beta": list(CONNECTOR_GRID)}


#: name -> (description, search mapping, SearchSpace options); registration order is --list-spaces' order
PRESETS: Dict[str, Any] = {
    "recipe": ("alpha, beta and the learning rate with the student and connector fixed: the default (measured)",
               {**WEIGHTS, "lr": RECIPE_LR}, {}),
    "loss_weights": ("alpha (FM) and beta (SR) weights, log-uniform on [0.01, 100]; student and connector fixed",
                     WEIGHTS, {"grid_values": _loss_grid}),
    "connectors": ("connector design (every one that fits the student) plus alpha and beta; student fixed",
                   {"connector": {"choice": "fitting"}, **WEIGHTS}, {"grid_values": _connector_grid}),
    "students": ("student architecture (zoo models of the data's input size) plus alpha and beta",
                 {"student": {"choice": "zoo"}, **WEIGHTS}, {}),
    "full": ("student, connector, alpha, beta, lr (base/10..base*10) and weight decay (1e-5..1e-3)",
             {"student": {"choice": "zoo"}, "connector": {"choice": "fitting"}, **WEIGHTS,
              "lr": {"loguniform": ["base/10", "base*10"]}, "weight_decay": {"loguniform": [1e-5, 1e-3]}}, {}),
    "pareto": ("val_acc vs student MACs (NSGA-II): student, connector, alpha and beta",
               {"student": {"choice": "zoo"}, "connector": {"choice": "fitting"}, **WEIGHTS},
               {"objectives": ((metrics.RANK_VAL_ACC, "max"), (metrics.STUDENT_MACS, "min")), "sampler": "nsga2",
                "scheduler": "fifo"}),
}
DEFAULT_SPACE = "recipe"

for _name, (_description, _search, _options) in PRESETS.items():
    register_space(declared_space(_name, _description, _search, **_options))
