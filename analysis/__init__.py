"""From MLflow records of SRRL sweeps to pandas tables, figures and a report.

The top layer: it reads (docs/architecture.md, "Layers"). ``analysis.runs`` (through ``tuner.tracking.read``) is
all that talks to MLflow; ``tables``,
``confirm_views`` and ``plots`` are DataFrame in, DataFrame / figure out; ``report`` puts them
together; ``python -m analysis`` is the CLI. The public names below are imported on first use, so ``import analysis`` stays cheap
(no pandas, mlflow or matplotlib until needed).
"""
from __future__ import annotations

import importlib
from typing import Any, List

__all__ = ["load_trials", "load_history", "load_sweeps", "leaderboard", "asha_table", "ablation_table",
           "marginal_effects", "pareto_front", "verdict_table", "write_report"]

_WHERE = {"load_trials": "runs", "load_history": "runs", "load_sweeps": "runs", "leaderboard": "tables",
          "asha_table": "tables", "ablation_table": "tables", "marginal_effects": "tables", "pareto_front": "tables",
          "verdict_table": "confirm_views", "write_report": "report"}


def __getattr__(name: str) -> Any:  # PEP 562
    if name in _WHERE:
        value = getattr(importlib.import_module(f"analysis.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> List[str]:
    return sorted(list(globals()) + __all__)
