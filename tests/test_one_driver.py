"""One driver per sweep (issue 27.1): a second driver on a running sweep is refused in one line naming the
holder, and the first finishes with its records whole; a killed driver's lock is taken over (the kill tests in
test_faults.py resume through it)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests._helpers import REPO, assert_records_agree, cli_study, kill_when, run_search, start_run_search, tune_results

pytestmark = pytest.mark.slow


def test_a_second_driver_on_a_running_sweep_is_refused_and_the_first_finishes_whole(tmp_path, env):
    folder = tmp_path / "ray_results" / "one"
    first = start_run_search(tmp_path, env, "--name", "one", "--confirm", "0", "--num-samples", "4", "--epochs", "3",
                             "--teacher-epochs", "3", "--scheduler", "fifo")
    try:
        deadline = time.monotonic() + 600
        while not (folder / "srrl_sweep.yaml").is_file() or not tune_results(folder, by_dir=True):
            assert first.poll() is None, (tmp_path / "driver-1.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the first driver never started its trials"
            time.sleep(0.2)
        # the first driver is paused while the others try (its lock stays held): however loaded the machine,
        # it cannot end before they are refused
        os.kill(first.pid, signal.SIGSTOP)
        # two more drivers at once: one resumes the sweep, one starts it afresh
        seconds = [subprocess.Popen([sys.executable, str(REPO / "run_search.py"), *args], cwd=tmp_path, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for args in (["--resume", str(folder)], ["--name", "one", "--confirm", "0"])]
        resumed, fresh = (second.communicate(timeout=300) + (second.returncode,) for second in seconds)
        holder = (rf"error: sweep: '{re.escape(str(folder))}' is being run by another driver \(host "
                  rf"{re.escape(socket.gethostname())}, PID {first.pid}, since \S+\); wait for it to end or stop it, "
                  r"then --resume")
        errors = [line for line in resumed[1].splitlines() if line.startswith("error:")]
        assert resumed[2] == 2 and len(errors) == 1 and re.fullmatch(holder, errors[0]), resumed[1][-2000:]
        # a fresh start of the name is refused before it would take the lock: the sweep exists
        assert fresh[2] == 2 and fresh[1].strip() == (f"error: name: a sweep 'one' already exists in {folder.parent}; "
                                                      f"pass --resume {folder} or pick another name"), fresh[1][-2000:]
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait(timeout=600) == 0, (tmp_path / "driver-1.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            kill_when(first, lambda: True)
    out = (tmp_path / "driver-1.log").read_text()
    assert "Sweep one: 4 trials, 4 finished" in out, out[-3000:]
    assert not (folder / "orphaned").exists()
    assert_records_agree(f"sqlite:///{tmp_path / 'mlflow.db'}", "one", folder, cli_study(tmp_path, "one"))
    assert len(cli_study(tmp_path, "one").trials) == 4
    # the lock of an ended driver is free: resuming the finished sweep answers at once
    again = run_search(tmp_path, env, "--resume", str(folder))
    assert again.returncode == 0 and "finished already" in again.stdout, again.stderr[-2000:]
    assert os.path.isfile(tmp_path / "ray_results" / ".one.lock")
