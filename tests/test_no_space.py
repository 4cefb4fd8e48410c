"""tuner.core.faults: what counts as a full disk, which setting a full disk is named by, and the atomic
filesystem's writes on one (a real tmpfs; those tests skip where mounting one is not allowed)."""
from __future__ import annotations

import errno
import sqlite3

import pytest

from tests._outages import small_disk
from tuner.core import faults


def test_a_full_disk_is_recognised_through_causes_and_in_error_files():
    wrapped = RuntimeError("trial failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert faults.is_no_space(wrapped)
    assert faults.is_no_space(sqlite3.OperationalError("database or disk is full"))
    assert faults.is_no_space("  File ...\nOSError: [Errno 28] No space left on device: '/x/y'\n")  # an error.txt
    assert not faults.is_no_space(OSError(errno.EACCES, "Permission denied"))
    assert not faults.is_no_space(ValueError("no space for the optimiser in this model"))


def test_the_place_an_error_names_decides_the_field_and_fields_on_the_same_disk_come_along(tmp_path):
    places = faults.places_of(str(tmp_path / "runs"), f"sqlite:///{tmp_path}/mlflow.db", "http://user:pw@host:5000")
    assert places == {"storage_path": str(tmp_path / "runs"), "tracking_uri": str(tmp_path),
                      "optuna_storage": "http://host:5000"}  # credentials dropped
    named = faults.no_space(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "runs" / "s" / "tuner.pkl")),
                            {"storage_path": places["storage_path"]})
    assert (named.field, named.path) == ("storage_path", str(tmp_path / "runs"))
    both = faults.no_space(sqlite3.OperationalError("database or disk is full"), places)
    assert both.field == "storage_path, tracking_uri"  # one file system: either could be what filled it
    assert str(both).startswith(f"storage_path, tracking_uri: no space left on the file system of {tmp_path}")
    assert str(both).endswith("free); free space there")


def test_an_atomic_write_on_a_full_disk_keeps_the_old_file_and_leaves_no_part(tmp_path):
    from tuner.driver.atomic_fs import AtomicLocalHandler

    faults.reset()
    with small_disk(tmp_path / "disk", 64) as disk:
        fs = AtomicLocalHandler.filesystem()
        target = disk / "experiment_state.json"
        target.write_text("old, whole")
        with pytest.raises(OSError, match="No space left on device"):
            with fs.open_output_stream(str(target)) as f:
                for _ in range(40):
                    f.write(b"\0" * 4096)
        assert target.read_text() == "old, whole"
        assert sorted(p.name for p in disk.iterdir()) == ["experiment_state.json"]
        assert faults.noted() == str(target)  # what stops the sweep on the driver
    faults.reset()


def test_a_study_left_by_a_failed_start_is_replaced_one_that_ran_trials_is_refused(tmp_path):
    import optuna

    from tuner.core.config import ConfigError
    from tuner.core.sweep_config import SweepConfig
    from tuner.driver.preflight import check_study_name

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    left = optuna.create_study(study_name="left", storage=url)
    left.enqueue_trial({"alpha": 1.0})  # what the sweep's searcher does as it sets up, before any trial runs
    check_study_name(SweepConfig(name="left", optuna_storage=url))  # before the sweep's lock: it may be another
    assert "left" in optuna.study.get_all_study_names(url)           # driver's, setting up: read only
    check_study_name(SweepConfig(name="left", optuna_storage=url), replace=True)  # under the lock: a failed start's
    assert "left" not in optuna.study.get_all_study_names(url)

    ran = optuna.create_study(study_name="ran", storage=url)
    ran.enqueue_trial({"alpha": 1.0})
    ran.ask()
    with pytest.raises(ConfigError, match="^study_name: an Optuna study 'ran' already exists"):
        check_study_name(SweepConfig(name="ran", optuna_storage=url))


def test_a_store_a_killed_writer_left_mid_transaction_is_not_called_torn(tmp_path):
    """SIGKILL inside a write transaction leaves a hot journal: a read-only check cannot roll it back
    ("attempt to write a readonly database"), MLflow's own connection does. It is not a torn store."""
    import signal
    import subprocess
    import sys

    from tuner.tracking.uri import check_sqlite

    db = tmp_path / "mlflow.db"
    code = ("import os, signal, sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1]); c.execute('create table t (x)'); c.commit()\n"
            "c.execute('insert into t values (1)' ); c.execute('insert into t select x from t')\n"
            "[c.execute('insert into t select x from t') for _ in range(12)]\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", code, str(db)]).returncode == -signal.SIGKILL
    assert (tmp_path / "mlflow.db-journal").exists()  # the hot journal
    check_sqlite(db, str(db))  # no error
    assert sqlite3.connect(db).execute("select count(*) from t").fetchone() == (0,)  # rolled back on open
