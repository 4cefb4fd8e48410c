"""The trial core imports neither Ray nor MLflow (docs/architecture.md, "Layers"): a trial, the one-trial
command and every config check run without them. The import contracts in setup.cfg cover the rest."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_core_module_imports_without_ray_or_mlflow():
    code = ("import importlib, pkgutil, sys, tuner.core as c\n"
            "names = [m.name for m in pkgutil.walk_packages(c.__path__, 'tuner.core.')]\n"
            "[importlib.import_module(n) for n in names]\n"
            "print(len(names), *sorted(m for m in ('ray', 'mlflow', 'optuna') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    count, *heavy = out.stdout.split()
    assert int(count) >= 20 and heavy == [], out.stdout  # every module of the core (config .. verdict, data, models)
