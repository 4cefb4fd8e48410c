"""The confirmation stage: the search's best configurations, the space's reference point and the
CE-only student, re-run over fresh seeds at the full epoch budget, then the verdict.

A search ranks single-seed trials; on a small validation split its first row is often a lucky seed
(docs/method.md, "Trusting the winner"). This stage re-runs the top ``confirm`` finished trials
(ranked by ``rank_val_acc``, the one ranking rule), the reference point and CE-only, each at seeds
``seed + 1 .. seed + confirm_seeds`` (not the search's own seed, which chose the winner), each seed on a
fresh stratified train/val split of its own (the candidates were chosen on the fixed one), with FIFO
scheduling, as a second Tune experiment ``<sweep folder>/confirm`` under the same MLflow parent
run (child runs tagged ``srrl.stage = confirm``). ``tuner.core.verdict.summarize`` turns it into the
recommendation, chosen on val only.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from tuner.core import metrics as M
from tuner.core.config import LABEL_KEYS, LOSS_WEIGHTS, TrialConfig, trial_params
from tuner.driver.sweep_file import restore_tuner
from tuner.driver.trial_logs import complete_trial_logs
from tuner.core.verdict import DECISION, Verdict, summarize

__all__ = ["CONFIRM_DIR", "confirm_configs", "confirm_points", "verdict_of", "run_confirmation",
           "applies"]

CONFIRM_DIR = "confirm"  # the confirmation's Tune experiment, inside the sweep's folder


def applies(space: Any) -> Optional[str]:
    """Why the space cannot be confirmed, or None: exhaustive spaces already run every seed, and a
    multi-objective front has no single winner to confirm."""
    if space.exhaustive:
        return f"space {space.name!r} already runs every configuration over seeds"
    if space.multi_objective:
        return f"space {space.name!r} is multi-objective: its answer is a Pareto front, not one winner"
    return None


def confirm_configs(rows: Sequence[Mapping[str, Any]], top: int, reference: Optional[Mapping[str, Any]],
                    base: TrialConfig) -> List[Dict[str, Any]]:
    """``[{config_id, role, rank, params}]``: the ``top`` best distinct finished search configurations
    by ``rank_val_acc`` (c1, c2, ...; a raced search's rows by seeds, then their mean: ``ranking.by_config``),
    then the reference point (ref) and CE-only (ce).

    Only trials that ran every epoch count: an early-stopped trial's value is of lower fidelity. A
    candidate equal to the reference is not run twice; it is the reference.
    """
    def key(params: Mapping[str, Any]) -> Tuple:
        return tuple(sorted((k, repr(v)) for k, v in params.items()))

    ref = dict(reference or {})
    seen = {key(ref)} if ref else set()
    finished = sorted((r for r in rows if r["status"] == M.FINISHED and r.get(M.RANK_VAL_ACC) is not None),
                      key=lambda r: M.rank_key(r["status"], r["epochs"], r[M.RANK_VAL_ACC], r.get("seeds", 1)))
    out = []
    for rank, r in enumerate(finished, 1):
        if len(out) == top:
            break
        params = dict(r["params"])
        if key(params) not in seen:
            seen.add(key(params))
            out.append({"config_id": f"c{len(out) + 1}", "role": "candidate", "rank": rank, "params": params})
    if ref:
        out.append({"config_id": "ref", "role": "reference", "rank": None, "params": ref})
        ce = {k: 0.0 for k in LOSS_WEIGHTS if k in ref or getattr(base, k) > 0}  # CE-only: every weight 0
        out.append({"config_id": "ce", "role": "ce", "rank": None, "params": {**ref, **ce}})
    return out


def confirm_points(configs: Sequence[Mapping[str, Any]], seeds: Sequence[int], base: TrialConfig) -> List[Dict[str, Any]]:
    """One Tune config per (configuration, seed), seed-major so an interrupted stage has every
    configuration at its first seeds. Every point names the same keys (the base's value where a
    configuration does not set one), so no key is left for Tune to sample."""
    keys = sorted({k for c in configs for k in c["params"]})
    points, base_params = [], base.to_dict()
    for seed in seeds:
        for c in configs:
            effective = trial_params(base_params, c["params"])
            values = {k: effective.get(k) for k in keys}
            # a fresh validation split per seed: the candidates were chosen on the fixed one (docs/method.md)
            points.append({**values, "seed": int(seed), "val_split_seed": int(seed), "config_id": c["config_id"],
                           "config_role": c["role"], "config_rank": c["rank"] if c["rank"] is not None else 0})
    return points


def verdict_of(results: Any, reference_name: str) -> Verdict:
    """The verdict of a confirmation's Tune results: its finished runs, and those that diverged or errored as failed."""
    rows = []
    for result in results:
        cfg, last = dict(result.config or {}), result.metrics or {}
        failed = bool(result.error or last.get(M.DIVERGED_KEY))
        if not failed and M.TEST_ACC not in last:
            continue  # not at its last epoch (a stage that was stopped): it confirms nothing yet
        params = {k: v for k, v in cfg.items() if k not in LABEL_KEYS and k not in ("seed", "val_split_seed")}
        rows.append({"config_id": cfg["config_id"], "role": cfg["config_role"], "rank": cfg.get("config_rank") or None,
                     "params": params, "seed": cfg.get("seed"),
                     **({"failed": True} if failed else {m: last.get(m) for m in (DECISION, M.TEST_ACC)})})
    return summarize(rows, reference_name)


def run_confirmation(tune: Any, trainable: Any, callbacks: List[Any], folder: Any, points: List[Dict[str, Any]],
                     max_concurrent: int, max_failures: int, num_to_keep: int, verbose: int = 1,
                     log: Callable[[str], None] = print, reporter: Any = None, reuse_actors: bool = True,
                     stale: Optional[str] = None) -> Any:
    """Run (or continue, when ``folder/confirm`` holds its state) the confirmation's Tune experiment;
    return its ResultGrid. ``points`` are only read when it starts: a restored stage has its own.

    ``num_to_keep``: checkpoints kept per trial, the search's setting. Not 1: Tune's saved state can lag
    a checkpoint or more behind a trial, and a killed driver restores the checkpoint that state names (with
    1 kept, a loaded kill test's restore found checkpoint_000000 deleted and the trial ended errored).
    ``stale``: why a saved stage's ``tuner.pkl`` must be rebuilt (``sweep_file.stale_tuner_pkl``), or None.
    """
    from tuner.driver.generator import PointsSearch, ReconciledGenerator

    stage = folder.child(CONFIRM_DIR)

    def new_tuner() -> Any:  # writes the stage's tuner.pkl
        storage_path, fs = folder.for_tune()
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ReconciledGenerator(PointsSearch(points), max_concurrent),
                num_samples=len(points), reuse_actors=reuse_actors),  # the generator holds max_concurrent
            run_config=tune.RunConfig(name=CONFIRM_DIR, storage_path=storage_path, storage_filesystem=fs,
                                      callbacks=callbacks, verbose=verbose, progress_reporter=reporter,
                                      failure_config=tune.FailureConfig(max_failures=max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=num_to_keep)),
        )

    if stage.has_file("tuner.pkl"):
        complete_trial_logs(stage, log)
        tuner = restore_tuner(tune, stage, trainable, new_tuner, stale, log)
        log(f"confirmation: continuing {stage.shown}")
    else:
        log(f"confirmation: {len(points)} runs ({len({p['config_id'] for p in points})} configurations x "
            f"{len({p['seed'] for p in points})} seeds), full epochs, no early stopping")
        tuner = new_tuner()
    return tuner.fit()
