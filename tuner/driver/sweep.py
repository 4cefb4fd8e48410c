"""Build and run a Ray Tune sweep of SRRL trials from a ``SweepConfig`` (the driver side).

``run_sweep`` prepares everything before any trial starts: the data (loaded once), the teacher
(trained once or loaded, then shared through the object store), the Optuna study in an RDB storage,
the MLflow parent run; then it runs ``tune.Tuner`` with ASHA (or FIFO) and returns the results.
"""
from __future__ import annotations

import contextlib
import dataclasses
import shlex
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from search_spaces import SpaceContext, declaration_yaml
from tuner import tracking
from tuner.core.uri import redact
from tuner.core import faults
from tuner.driver import confirm, preflight, study_note
from tuner.driver.no_space import StopOnNoSpace
from tuner.driver.stalls import stall_watch
from tuner.core import metrics as M
from tuner.driver import sweep_build as build
from tuner.driver.atomic_fs import remove_parts
from tuner.core.config import ConfigError, TrialConfig
from tuner.core.sweep_config import SweepConfig
from tuner.core.sweep_config import first_confirm_seed, trial_base
from tuner.core.files import PART_SUFFIX
from tuner.driver.search import settle_study, study_outcomes
from tuner.driver.results import (RESUMABLE, all_errored, leaderboard_rows, log_best_students,
                                  prune_checkpoints, saved_results)
from tuner.driver.storage import ORPHANED_DIR, SweepFolder
from tuner.driver.sweep_lock import hold_sweep
from tuner.driver.ray_internals import TUNER_START_FILES
from tuner.driver.sweep_file import SWEEP_FILE, TUNER_PKL, load_sweep_dir, restore_tuner, saved_tuner_pkl, stale_tuner_pkl, sweep_yaml
from tuner.driver.prepare import check_space, prepare_sweep
from tuner.core.ranking import by_config
from tuner.driver.record import SPACE_FILE, parent_record, recorded, search_top, teacher_tags
from tuner.core.teacher import default_cache_dir, ensure_teacher
from tuner.tracking.callback import MLflowTracking
from tuner.driver.trainable import train_srrl
from tuner.core.trainer import check_pair, load_splits
from tuner.driver.trial_logs import complete_trial_logs
from tuner.driver.warm_start import TAG_WARM_START, warm_points, warm_tag

__all__ = ["run_sweep", "SweepResult"]

_URI_FIELDS = ("tracking_uri", "optuna_storage", "storage_path", "address")  # may carry credentials


@dataclass
class SweepResult:
    """What a finished sweep left: where its records are and one row per trial."""
    sweep: SweepConfig
    base: TrialConfig
    path: str  # the Tune experiment folder (what --resume takes)
    tracking_uri: str
    experiment: str
    optuna_storage: Optional[str]
    study_name: Optional[str]
    rows: List[Dict[str, Any]]  # per trial: params, status, epochs, best/final metrics
    verdict: Any = None  # tuner.core.verdict.Verdict of the confirmation stage, when it ran
    note: str = ""  # why there is no verdict
    experiment_id: Optional[str] = None  # MLflow's id of ``experiment``
    interrupted: bool = False  # Ctrl-C, SIGTERM or a full disk stopped it; --resume continues it
    fault: Any = None  # faults.NoSpace when a full disk stopped it
    failed: Optional[str] = None  # every search trial errored: why, in one line (results.all_errored); exit 3


def _uncommitted(folder: SweepFolder) -> bool:
    """The folder holds no sweep: it is empty, or holds only what a start that failed before writing its
    sweep file left (what ``tune.Tuner`` writes first, part files); a fresh start of the same name may use it."""
    return all(name in TUNER_START_FILES or name.endswith(PART_SUFFIX) for name in folder.names())


def run_sweep(sweep: SweepConfig, base: TrialConfig, resume: bool = False, log: Callable[[str], None] = print,
              verbose: int = 1) -> SweepResult:
    """Run (or, with ``resume``, continue) a sweep; returns its results once every trial ended.

    A resumed search stage runs its errored trials again (a full disk, a lost node) until it has ended for good:
    once the sweep finished (it is resumed to be confirmed) or its confirmation stage exists, the search's outcome
    chose that stage's candidates and the study has failed them.

    Raises:
        ConfigError: bad input, before anything is written.
        faults.NoSpace: a place the sweep writes to is full (``resume`` is set once the sweep exists).
    """
    sweep, base = prepare_sweep(sweep, base)
    faults.reset()
    try:
        with contextlib.ExitStack() as locks:  # the sweep's lock, once taken, is released however this ends
            return _run_sweep(sweep, base, resume, log, verbose, locks)
    except faults.NoSpace:
        raise
    except Exception as e:
        if not faults.is_no_space(e):
            raise
        fault = faults.no_space(e, _places(sweep, base))
        folder = SweepFolder.of(sweep.storage_path).child(sweep.name)
        fault.resume = folder.shown if folder.has_file(SWEEP_FILE) else None
        raise fault from None


def _places(sweep: SweepConfig, base: TrialConfig) -> Dict[str, str]:
    """Where the sweep writes, by the field that says so: what a full-disk error is named by."""
    return faults.places_of(sweep.storage_path, sweep.tracking_uri, sweep.optuna_storage,
                            base.cache_dir or str(default_cache_dir()))


def _check_folder(sweep: SweepConfig, folder: SweepFolder, resume: bool) -> None:
    """``--resume`` needs a sweep in the folder; a fresh start needs none there."""
    if resume and not folder.has_file(SWEEP_FILE):
        raise ConfigError(f"resume: {folder.shown!r} holds no sweep")
    if resume and folder.child(confirm.CONFIRM_DIR).has_file("tuner.pkl"):
        # Tune restores the stage with the points it started with: a new count would never be reached
        saved, _ = load_sweep_dir(folder.location)
        for field in ("confirm", "confirm_seeds"):
            if getattr(sweep, field) != getattr(saved, field):
                raise ConfigError(
                    f"{field}: the confirmation stage of {folder.shown} started with --confirm {saved.confirm} "
                    f"--confirm-seeds {saved.confirm_seeds} and keeps them; continue it with "
                    f"python run_search.py --resume {shlex.quote(folder.shown)}")
    if not resume and not _uncommitted(folder):
        raise ConfigError(f"name: a sweep {sweep.name!r} already exists in {redact(sweep.storage_path)}; "
                          f"pass --resume {folder.shown} or pick another name")


def _run_sweep(sweep: SweepConfig, base: TrialConfig, resume: bool, log: Callable[[str], None],
               verbose: int, locks: contextlib.ExitStack) -> SweepResult:
    build.tune_env()

    space = check_space(sweep, base)
    tracking.check_tracking_uri(sweep.tracking_uri)
    storage = SweepFolder.of(sweep.storage_path)
    folder = storage.child(sweep.name)
    _check_folder(sweep, folder, resume)
    missing = recorded(sweep.tracking_uri, sweep.experiment, sweep.name) if resume else None
    if missing:  # read before Ray starts; the folder holds all a record is made of (docs/tracking.md, "A lost store")
        raise ConfigError(f"resume: {missing}; rebuild the record from the sweep folder with `python run_search.py "
                          f"--sync {shlex.quote(folder.shown)}`, then resume")

    folder.check_writable()
    preflight.check_fits_here(sweep)  # a local Ray's CPUs and GPUs are known before it starts
    # the data, and a user's teacher checkpoint, are read before Ray starts: bad ones stop here
    splits = load_splits(base)
    check_pair(base, splits)
    # what the space may depend on, from the data itself (an image folder fixes no class count)
    ctx = SpaceContext.for_config(base, num_classes=splits.num_classes, in_channels=splits.in_channels,
                                  input_size=splits.image_size)
    param_names = space.check(ctx, sweep.seeds)  # a space that cannot yield valid trials stops here
    for point in sweep.search_points:  # the user's own first points: inside the space, as its fields allow
        why = space.outside(ctx, point)
        if why is not None:
            raise ConfigError(f"search_points: {dict(point)}: {why}")
    grid = space.grid(ctx, sweep.seeds) if space.grid is not None else None  # exhaustive spaces: every trial, once
    finished_in = _finished(sweep) if resume else None  # read before the resumed parent run is RUNNING again
    if finished_in is not None:
        done = _already_finished(sweep, base, space, ctx, folder, log, finished_in)
        if done is not None:
            return done
    needs_teacher = build.any_trial_needs_teacher(space, base)
    teacher = ensure_teacher(base, splits, log=log) if needs_teacher and base.teacher_checkpoint else None

    warm = [] if resume else warm_points(sweep.tracking_uri, sweep.warm_start, space, ctx, param_names, log=log)
    if not resume:
        preflight.check_study_name(sweep)  # reads the study storage if it exists; never creates it

    preflight.check_address(sweep.address)
    from ray import tune  # only now: bad input above is refused without paying for Ray's import

    build.init_ray(sweep)
    faults.quiet_no_space_logs()
    places = _places(sweep, base)
    preflight.check_fits(sweep)  # what the cluster can hold, before the first file is written
    # one driver per sweep, from its first write to its end; bad input above wrote nothing, not even the lock
    locks.enter_context(hold_sweep(folder))
    _check_folder(sweep, folder, resume)  # again, under the lock: another driver may have run it meanwhile
    if not resume:  # a study no trial ran in is a failed start's, now that no other driver can be setting it up
        preflight.check_study_name(sweep, replace=True)
    # ray.init installs its own SIGTERM handler (exit at once); a cluster scheduler's SIGTERM should stop
    # the sweep as Ctrl-C does: Tune saves its state, the records say "interrupted", --resume continues
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    if needs_teacher and teacher is None:  # from the cache, or trained once (as a GPU task if need be)
        teacher = ensure_teacher(base, splits, log=log, train=build.teacher_trainer(sweep))
    teacher_state = teacher.model.state_dict() if teacher else None
    teacher_info = teacher.info() if teacher else {}

    per_trial = trial_base(sweep, base)
    trainable = build.trainable(sweep, base=per_trial.to_dict(), teacher_state=teacher_state, teacher_info=teacher_info,
                                splits=splits)
    # what MLflow keeps (params, the config artifact) carries no credentials
    shown = dataclasses.replace(sweep, **{k: redact(getattr(sweep, k)) for k in _URI_FIELDS if getattr(sweep, k)})
    # the parent's params are the sweep's own settings; the base trial config is the config artifact
    # (every child run carries all of its fields), so each column of the runs table means one thing
    params, tags = parent_record(shown, base, {**({TAG_WARM_START: warm_tag(warm)} if warm else {}),
                                               **teacher_tags(teacher_info)})
    parent_run = tracking.start_sweep(sweep.tracking_uri, sweep.experiment, sweep.name, params=params, tags=tags,
                                      resume=resume)
    experiment_id = tracking.experiment_id(sweep.tracking_uri, sweep.experiment)
    study_name = sweep.study_name or sweep.name if space.grid is None else None

    def callback(stage: str) -> Any:
        return MLflowTracking(sweep.tracking_uri, experiment_id, parent_run, epochs=base.epochs,
                              base_params=per_trial.to_dict(), stage=stage, name_keys=param_names,
                              optuna_storage=sweep.optuna_storage if study_name else None, study_name=study_name)

    planned = build.num_samples(sweep, space, ctx, grid)  # the search stage's trials
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / SWEEP_FILE).write_text(sweep_yaml(shown, base, planned, teacher_info))
        (Path(tmp) / SPACE_FILE).write_text(declaration_yaml(space))  # the space as searched, presets resolved
        tracking.log_artifacts_once(sweep.tracking_uri, parent_run, {
            "config": Path(tmp) / SWEEP_FILE, "space": Path(tmp) / SPACE_FILE,
            **({"teacher": teacher.path} if teacher else {})})

    def new_tuner(again: bool = False) -> Any:  # writes the sweep's tuner.pkl
        storage_path, fs = storage.for_tune()
        return tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=build.searcher(sweep, space, ctx, grid, initial_points=not again, warm=[w["params"] for w in warm]),
                scheduler=build.scheduler(sweep, space, base),
                num_samples=planned,
                reuse_actors=build.reuse_actors(sweep),  # the searcher holds max_concurrent
            ),
            run_config=tune.RunConfig(
                name=sweep.name, storage_path=storage_path, storage_filesystem=fs,
                callbacks=build.callbacks(callback("search"), StopOnNoSpace(places), stall_watch(sweep)), verbose=verbose,
                progress_reporter=build.reporter(space, param_names),
                failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=sweep.num_to_keep),
            ),
        )

    def save_sweep_file(tuner_pkl: int = TUNER_PKL) -> None:
        folder.write_text(SWEEP_FILE, sweep_yaml(sweep, base, planned, teacher_info, tuner_pkl))

    stale = None
    if resume:
        version = saved_tuner_pkl(folder.location)
        stale = stale_tuner_pkl(version)
        # what --resume changed (a moved folder's place and stores, a widened confirmation) holds for the next one
        # too; the old tuner.pkl version stays until no stage's file of it is left (a driver killed between the two
        # stages' rebuilds leaves the confirmation's to rebuild)
        save_sweep_file(version)
        path, fs = folder.for_tune()
        if fs is not None:
            remove_parts(path)  # writes the killed driver had in flight
        complete_trial_logs(folder, log)
        confirming = folder.child(confirm.CONFIRM_DIR).has_file("tuner.pkl")
        tuner = restore_tuner(tune, folder, trainable, lambda: new_tuner(again=True), stale, log,
                              resume_errored=finished_in is None and not confirming)
        if stale and not confirming:
            save_sweep_file()
    else:
        tuner = new_tuner()
        # the sweep exists only now: the sweep file is what --resume reads, and it needs Tune's state
        save_sweep_file()
        tracking.sweep_started(sweep.tracking_uri, parent_run)
    results = tuner.fit()
    _set_aside_orphans(folder, results, log)
    statuses = _tune_statuses(tune, results)
    trial_ids = list(statuses)
    rows = leaderboard_rows(results, base, statuses)

    def interrupted(rows: List[Dict[str, Any]], planned: int, stage: str) -> Optional[SweepResult]:
        """After Ctrl-C, SIGTERM or a full disk Tune returns with trials half-done: say so everywhere, end nothing."""
        fault = faults.stopped()
        left = [r["trial_id"] for r in rows if r["status"] in RESUMABLE]
        if not left and len(rows) >= planned and fault is None:
            return None
        try:
            tracking.mark_interrupted(sweep.tracking_uri, parent_run, [t for t in left if t])
            tracking.finish_sweep(sweep.tracking_uri, parent_run, status="KILLED")
        except Exception as e:
            if not faults.is_no_space(e):
                raise  # else the MLflow store is what is full: its runs say RUNNING until --resume
        note = (f"the {stage} stage stopped with {len(left)} trial(s) half-done or not started and "
                f"{max(0, planned - len(rows))} not yet created")
        if fault is not None:
            fault.resume = folder.shown
        return SweepResult(sweep, base, str(folder), sweep.tracking_uri, sweep.experiment, sweep.optuna_storage,
                           study_name, rows, None, note, experiment_id, interrupted=True, fault=fault)

    stopped = interrupted(rows, planned, "search")
    if stopped is not None:
        return stopped
    if study_name:  # the search ended for good: the study now agrees with how every Tune trial ended
        settled = settle_study(sweep.optuna_storage, study_name, study_outcomes(results), base.epochs,
                               [m for m, _ in space.objectives])
        if settled["orphaned"]:
            log(f"failed {settled['orphaned']} Optuna trial(s) asked by the interrupted driver and never kept by Tune")
    log_best_students(results, rows, sweep, splits, parent_run)
    prune_checkpoints(folder, results)  # the stage is over: an ended trial's last checkpoint is all that is read
    finished = sum(r["status"] == M.FINISHED for r in rows)
    if finished < sweep.top_k:
        log(f"exported {finished} student(s), not --top-k {sweep.top_k}: only {finished} trial(s) ran every epoch "
            "(a trial ASHA stopped early has no final student)")


    verdict, note = None, confirm.applies(space) or ("" if sweep.confirm > 0 or folder.child(confirm.CONFIRM_DIR).has_file(
        "tuner.pkl") else "the confirmation stage is off (--confirm 0)")
    if not note:
        configs = confirm.confirm_configs(by_config(rows), sweep.confirm, space.reference_point(ctx), base)
        first = first_confirm_seed(sweep, base)  # fresh: the search's seeds (and the race's) chose the winner
        seeds = list(range(first, first + sweep.confirm_seeds))
        stage_callbacks = build.callbacks(callback("confirm"), StopOnNoSpace(places), stall_watch(sweep))
        confirmed = confirm.run_confirmation(tune, trainable, stage_callbacks, folder,
                                             confirm.confirm_points(configs, seeds, base), build.max_concurrent(sweep),
                                             sweep.max_failures, sweep.num_to_keep, verbose=verbose, log=log,
                                             reporter=build.reporter(space, ["config_id", *param_names, "seed"]),
                                             reuse_actors=build.reuse_actors(sweep), stale=stale)
        if stale:
            save_sweep_file()  # both stages' tuner.pkl are today's now
        _set_aside_orphans(folder.child(confirm.CONFIRM_DIR), confirmed, log)
        confirm_statuses = _tune_statuses(tune, confirmed)
        trial_ids += list(confirm_statuses)
        stopped = interrupted(leaderboard_rows(confirmed, base, confirm_statuses),
                              len(configs) * len(seeds), "confirmation")
        if stopped is not None:
            return dataclasses.replace(stopped, rows=rows)
        prune_checkpoints(folder.child(confirm.CONFIRM_DIR), confirmed)
        verdict = confirm.verdict_of(confirmed, space.reference_name(ctx))
        tracking.log_verdict(sweep.tracking_uri, parent_run, verdict, search_top(rows))
        if study_name:
            study_note.record_verdict(sweep.optuna_storage, study_name, verdict, sweep.tracking_uri, parent_run,
                                      experiment_id)
    orphans = tracking.remove_orphan_runs(sweep.tracking_uri, parent_run, trial_ids)
    if orphans:
        log(f"removed {orphans} MLflow run(s) of trials lost with the interrupted driver")
    tracking.finish_sweep(sweep.tracking_uri, parent_run)
    return SweepResult(sweep, base, str(folder), sweep.tracking_uri, sweep.experiment, sweep.optuna_storage,
                       study_name, rows, verdict, note, experiment_id, failed=all_errored(results, rows))


def _finished(sweep: SweepConfig) -> Optional[str]:
    """The experiment id of a sweep whose parent run ended FINISHED (every stage it had ended for good), else None."""
    client = tracking.client(sweep.tracking_uri)
    exp = client.get_experiment_by_name(sweep.experiment)
    parents = tracking.find_parent(client, exp.experiment_id, sweep.name) if exp is not None else []
    return exp.experiment_id if parents and parents[0].info.status == "FINISHED" else None


def _already_finished(sweep: SweepConfig, base: TrialConfig, space: Any, ctx: Any, folder: SweepFolder,
                      log: Callable[[str], None], experiment_id: str) -> Optional[SweepResult]:
    """A finished sweep (``_finished``: in ``experiment_id``) that asks for no stage it lacks: its leaderboard and
    verdict as its files hold them, read without Ray; nothing is written. None when there is work left."""
    stage = folder.child(confirm.CONFIRM_DIR)
    if sweep.confirm > 0 and not confirm.applies(space) and not stage.has_file("tuner.pkl"):
        return None
    grid, statuses = saved_results(folder)
    rows = leaderboard_rows(grid, base, statuses)
    confirmed = saved_results(stage)
    verdict = confirm.verdict_of(confirmed[0], space.reference_name(ctx)) if confirmed else None
    log(f"sweep {sweep.name} finished already: its records are as it left them (nothing re-run, nothing written)")
    return SweepResult(sweep, base, str(folder), sweep.tracking_uri, sweep.experiment, sweep.optuna_storage,
                       sweep.study_name or sweep.name if space.grid is None else None, rows, verdict,
                       confirm.applies(space) or ("" if verdict else "the confirmation stage is off (--confirm 0)"),
                       experiment_id, failed=all_errored(grid, rows))


def _tune_statuses(tune: Any, results: Any) -> Dict[str, str]:
    """Tune's ``{trial_id: status}`` of an experiment (TERMINATED, ERROR, RUNNING, PAUSED, PENDING)."""
    return {t.trial_id: t.status for t in tune.ExperimentAnalysis(results.experiment_path).trials}


def _set_aside_orphans(folder: SweepFolder, results: Any, log: Callable[[str], None]) -> None:
    """Trial folders of a killed driver that Tune's restored state lacks go to ``<folder>/orphaned``."""
    # trial folders are named after the trainable: train_srrl_..., or train_srrl_workers_... (a prefix of both)
    moved = folder.set_aside({Path(r.path).name for r in results if r.path}, f"{train_srrl.__name__}_")
    if moved:
        log(f"moved {len(moved)} trial folder(s) the interrupted driver started and Tune no longer holds "
            f"to {folder.shown}/{ORPHANED_DIR}")


