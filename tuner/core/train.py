"""``python -m tuner.core.train --config configs/digits.yaml [--alpha 1 --beta 1 ...]`` runs one distillation
end to end (the teacher comes from the cache, or is trained first) and prints per-epoch metrics.

The epoch loop itself is ``tuner.core.trainer``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Dict, List, Optional, Tuple

from tuner.core import metrics as M
from tuner.core.config import ConfigError, TrialConfig
from tuner.core.sweep_config import SweepConfig
from tuner.core.teacher import ensure_teacher
from tuner.core.trainer import Trainer, check_pair, load_splits

__all__ = ["add_config_flags", "main"]


# ---- CLI ----------------------------------------------------------------------------------------
def add_config_flags(parser: argparse.ArgumentParser, skip: Tuple[str, ...] = ()) -> None:
    """One ``--field`` flag per TrialConfig field (types are checked by TrialConfig.validate)."""
    for f in dataclasses.fields(TrialConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "lr_milestones":
            parser.add_argument(flag, dest=f.name, type=float, nargs="+", default=None, help="LR decay points as fractions of epochs")
        else:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(), help=f"TrialConfig.{f.name} (default {f.default!r})" if f.default is not dataclasses.MISSING else None)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one distillation and print per-epoch metrics; exit 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m tuner.core.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="YAML of TrialConfig fields (a sweep preset's sweep keys are ignored); flags override it")
    add_config_flags(parser)
    args = vars(parser.parse_args(argv))
    path = args.pop("config")
    overrides = {k: v for k, v in args.items() if v is not None}
    try:
        cfg = SweepConfig.from_yaml(path, overrides)[1] if path else TrialConfig.from_dict(overrides)
        splits = load_splits(cfg)
        check_pair(cfg, splits)
        teacher = ensure_teacher(cfg, splits, log=print) if cfg.needs_teacher else None
    except (ConfigError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"distilling {cfg.teacher} -> {cfg.student} on {cfg.dataset}: alpha={cfg.alpha:g} beta={cfg.beta:g} "
          f"gamma={cfg.gamma:g} connector={cfg.connector}" if teacher else f"training {cfg.student} alone (CE) on {cfg.dataset}")

    def show(row: Dict[str, float], _: Trainer) -> None:
        print(f"epoch {row[M.EPOCH]:>3}  loss {row[M.LOSS_TOTAL]:.4f} (ce {row[M.LOSS_CE]:.4f} fm {row[M.LOSS_FM]:.4f} "
              f"sr {row[M.LOSS_SR]:.4f} kd {row[M.LOSS_KD]:.4f})  val_acc {row[M.VAL_ACC]:6.2f}  "
              f"val_loss {row[M.VAL_LOSS]:.4f}  {row[M.IMAGES_PER_S]:,.0f} img/s", flush=True)

    trainer = Trainer(cfg, teacher.model if teacher else None, splits)
    result = trainer.fit(show)
    if teacher:
        print(f"teacher {cfg.teacher}: val_acc {teacher.val_acc:.2f} test_acc {teacher.test_acc:.2f}")
    print(f"student {cfg.student}: val_acc {result.final[M.VAL_ACC]:.2f} best_val_acc {result.final[M.BEST_VAL_ACC]:.2f} "
          f"test_acc {result.final[M.TEST_ACC]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
