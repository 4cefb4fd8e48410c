"""A hung trial does not hang the sweep (issue 27 item 5): a trial that sends no result for its stall limit is
warned about, stopped, retried from its last checkpoint under ``--max-failures`` and, once they are spent,
recorded ``stalled``; the sweep then ends. The hang is real: the trial's worker process is SIGSTOPped."""
from __future__ import annotations

import os
import pickle
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace
from typing import List

import pytest

from tests._helpers import descendants_mentioning, start_run_search, trial_runs, tune_results
from tuner.core import metrics as M

STALL_S = 20  # the test's --stall-timeout: ~5x the slowest healthy wait for a result seen beside two CPU hogs
EPOCHS = 8  # per trial: a retried trial runs its last epochs in ~0.5 s each here, the second stop must land first


def _trial(tid: str, last_result: dict = None) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, last_result=last_result or {}, status="RUNNING")


def test_the_default_limit_is_a_multiple_of_the_trials_slowest_epoch_never_below_the_floor():
    from tuner.driver.stalls import EPOCHS as TIMES, FLOOR_S, STARTUP_S, StallWatch

    watch = StallWatch()
    a, b = _trial("a"), _trial("b")
    assert watch.limit(a) == STARTUP_S  # no trial of the sweep has reported: nothing to scale by
    watch.on_trial_start(0, [], a)
    watch.on_trial_result(0, [], a, {"epoch": 1, "time_this_iter_s": 200.0})
    assert watch.limit(a) == TIMES * 200.0
    assert watch.limit(b) == TIMES * 200.0  # before its own first result: the sweep's slowest
    watch.on_trial_result(0, [], a, {"epoch": 2, "time_this_iter_s": 1.0})
    assert watch.limit(a) == TIMES * 200.0  # the slowest, not the last
    assert StallWatch().limit(_trial("c", {"time_this_iter_s": 3.0})) == FLOOR_S  # a restored trial's last epoch
    assert StallWatch(timeout=45).limit(a) == 45 and StallWatch(timeout=0).limit(a) is None


def test_the_watch_pickles_without_its_clock():
    from tuner.driver.stalls import StallWatch

    watch = StallWatch(timeout=30)
    watch.on_trial_start(0, [], _trial("a"))
    watch.on_trial_result(0, [], _trial("a"), {"epoch": 1, "time_this_iter_s": 2.0})
    again = pickle.loads(pickle.dumps(watch))  # Tune keeps its callbacks in tuner.pkl
    assert again._since == {} and again._slowest == watch._slowest and again.timeout == 30


def test_time_the_driver_itself_did_not_run_is_not_counted_against_a_trial(caplog):
    from tuner.driver.stalls import StallWatch

    watch, a = StallWatch(timeout=60), _trial("a")
    now = time.monotonic()
    watch._since["a"], watch._looked = now - 75, now - 40  # the driver's loop was away 40 s of the trial's 75
    with caplog.at_level("WARNING", logger="srrl"):
        watch.on_step_begin(0, [a])  # a kill would need the trial's actor, which this stand-in lacks
    messages = [r.getMessage() for r in caplog.records]  # 35 s, and whatever a loaded machine took meanwhile
    assert len(messages) == 1 and re.fullmatch(rf"stall: trial {re.escape(str(a))} has sent no result for 3\d s since it "
                                               r"started; it is stopped at 60 s \(--stall-timeout\)", messages[0]), messages


def test_a_multi_worker_trial_is_warned_about_once_and_never_killed(caplog):
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.stalls import stall_watch

    watch, a = stall_watch(SweepConfig(workers_per_trial=2, stall_timeout=10)), _trial("a")
    watch._since["a"] = time.monotonic() - 25
    with caplog.at_level("WARNING", logger="srrl"):
        for _ in range(2):
            watch._looked = 0.0
            watch.on_step_begin(0, [a])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and re.fullmatch(rf"stall: trial {re.escape(str(a))} has sent no result for 2\d s since it "
                                               r"started; a multi-worker trial is not stopped \(--stall-timeout\)",
                                               messages[0]), messages


def test_only_the_last_failure_of_an_error_file_says_whether_the_trial_stalled():
    stall = "Failure # 1 (occurred at x)\nActorDiedError: killed\nStallError: no result for 20 s since epoch 3\n"
    assert M.is_stall(stall) and M.is_stall("StallError: no result")
    assert not M.is_stall(stall + "Failure # 2 (occurred at y)\nValueError: bad\n") and not M.is_stall(None)
    assert M.trial_status(True, False, 3, 8, True, stalled=True) == M.STALLED
    assert M.trial_status(False, False, 8, 8, True, stalled=True) == M.FINISHED  # retried, then ran every epoch


def _state(pid: int) -> str:
    """A process's state letter (``T``: stopped), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


def _newest_row(ray_tmp: str, trial: str = None, not_pid: int = None, min_epoch: int = 2):
    """The newest result row of ``trial`` (any trial when None) at ``min_epoch`` or later and before the last epoch,
    from a worker other than ``not_pid``, or None. Read where the driver writes it first, Tune's staging folder under
    the test's own ``RAY_TMPDIR``: the sweep folder gets it a sync later, when a fast retry may be past its last epoch."""
    staging = sorted(Path(ray_tmp).glob("ray/session_*/artifacts/*/st/driver_artifacts"))
    for name, rows in (tune_results(staging[-1], by_dir=True) if staging else {}).items():
        if rows and (trial is None or rows[-1]["trial_id"] == trial) and rows[-1]["epoch"] >= min_epoch \
                and rows[-1]["pid"] != not_pid and rows[-1]["epoch"] < EPOCHS:
            return rows[-1]
    return None


def _stop_when(driver, find, stopped: List[int], timeout: float = 300) -> dict:
    """SIGSTOP the worker of the row ``find()`` returns once it returns one; the row."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = find()
        if row is not None:
            os.kill(row["pid"], signal.SIGSTOP)
            stopped.append(row["pid"])
            return row
        assert driver.poll() is None, "the sweep ended before a trial could be stopped"
        time.sleep(0.1)
    pytest.fail("no trial reached the epoch to stop it at")


@pytest.mark.slow
def test_a_stopped_worker_is_warned_about_killed_retried_then_recorded_stalled_and_the_sweep_ends(tmp_path, env):
    folder = tmp_path / "ray_results" / "st"
    driver = start_run_search(tmp_path, env, "--name", "st", "--num-samples", "2", "--max-concurrent", "2",
                              "--epochs", str(EPOCHS), "--teacher-epochs", "1", "--scheduler", "fifo", "--confirm", "0",
                              "--max-failures", "1", "--stall-timeout", str(STALL_S))
    stopped: List[int] = []
    try:
        first = _stop_when(driver, lambda: _newest_row(env["RAY_TMPDIR"]), stopped)
        tid = first["trial_id"]
        # retried in a new worker, from its last checkpoint: stop that one too, once it has reported
        _stop_when(driver, lambda: _newest_row(env["RAY_TMPDIR"], tid, first["pid"], first["epoch"] + 1), stopped)
        at = time.monotonic()
        rc = driver.wait(timeout=STALL_S + 150)
        ended_after = time.monotonic() - at
        left = {pid: _state(pid) for pid in stopped}  # what the driver left of the stopped workers
    finally:
        doomed = descendants_mentioning(driver.pid, "") if driver.poll() is None else []
        for pid in stopped + doomed:  # no process of this test outlives it, stopped or not
            if _state(pid) not in ("gone", "Z"):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
    out = (tmp_path / "driver-1.log").read_text()
    assert rc == 0, out[-3000:]
    assert ended_after < STALL_S + 60, f"the sweep took {ended_after:.0f} s to end after the second stop"
    assert set(left.values()) <= {"gone", "Z"}, left  # the driver killed both stopped workers

    name = f"train_srrl_{tid}"
    rows = tune_results(folder)[tid]
    # the epochs each worker reported (the second stop may land a result after the row that chose it)
    e1, e2 = (max(r["epoch"] for r in rows if r["pid"] == pid) for pid in stopped)
    lines = [ln for ln in out.splitlines() if ln.startswith("stall: ")]
    expected = [  # one warning per stopped worker, at half the limit, then the stop and what came of it
        rf"stall: trial {name} has sent no result for 1\d s since epoch {e1}; it is stopped at {STALL_S} s "
        r"\(--stall-timeout\)",
        rf"stall: stopping trial {name}: no result for 2\d s since epoch {e1} \(limit {STALL_S} s: --stall-timeout\)",
        rf"stall: trial {name} is retried from its last checkpoint \(failure 1 of --max-failures 1\)",
        rf"stall: trial {name} has sent no result for 1\d s since epoch {e2}; it is stopped at {STALL_S} s "
        r"\(--stall-timeout\)",
        rf"stall: stopping trial {name}: no result for 2\d s since epoch {e2} \(limit {STALL_S} s: --stall-timeout\)",
        rf"stall: trial {name} is recorded stalled \(failure 2; --max-failures 1\)",
    ]
    assert len(lines) == len(expected) and all(re.fullmatch(e, ln) for e, ln in zip(expected, lines)), lines
    assert "Trial task failed for trial" not in out  # Tune's traceback of the kill: the lines above say it
    assert "Sweep st: 2 trials, 1 finished, 0 stopped_early, 1 stalled;" in out

    # the retry continued from the last checkpoint the driver holds: no epoch skipped, and only the epoch in flight
    # at the first stop may run again (its checkpoint may not have reached the driver: a loaded CI machine did that)
    epochs = [r["epoch"] for r in rows]
    assert sorted(set(epochs)) == list(range(1, e2 + 1)) and e1 < e2, epochs
    assert all(epochs.count(e) == 1 for e in epochs if e != e1) and epochs.count(e1) <= 2, epochs
    error = next(folder.glob(f"{name}_*/error.txt")).read_text()
    assert len(re.findall(r"^StallError: no result for \d+ s since epoch \d+ \(stall limit 20 s\); the driver killed "
                          r"the trial's worker$", error, flags=re.M)) == 2 and M.is_stall(error)

    runs = {r.data.tags["srrl.trial_id"]: r for r in trial_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "st")}
    stalled, other = runs.pop(tid), runs.popitem()[1]
    assert stalled.data.tags["srrl.status"] == M.STALLED and stalled.info.status == "FAILED"
    assert stalled.data.tags["srrl.error"].startswith("StallError: no result for ")
    assert stalled.data.tags["srrl.num_failures"] == "1" and stalled.data.tags["srrl.last_epoch"] == str(e2)
    assert other.data.tags["srrl.status"] == M.FINISHED
