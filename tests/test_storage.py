"""The sweep folder: the same calls on a local path and on a URI (pyarrow's file:// filesystem stands in
for s3:// and gs://, which take the same code path)."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.core.config import ConfigError
from tuner.driver.storage import SweepFolder

from tests._helpers import REPO


@pytest.fixture(params=["path", "uri"])
def location(request, tmp_path):
    return str(tmp_path / "store") if request.param == "path" else f"file://{tmp_path}/store"


def test_write_read_and_emptiness(location, tmp_path):
    folder = SweepFolder.of(location).child("sweep-a")
    assert folder.is_empty() and not folder.has_file("srrl_sweep.yaml")
    folder.check_writable()
    assert not (tmp_path / "store").exists()  # the probe leaves nothing behind
    folder.write_text("srrl_sweep.yaml", "sweep: {}\n")
    assert folder.has_file("srrl_sweep.yaml") and not folder.is_empty()
    assert folder.read_text("srrl_sweep.yaml") == "sweep: {}\n"
    assert os.listdir(tmp_path / "store" / "sweep-a") == ["srrl_sweep.yaml"]  # no temp file left
    again = SweepFolder.of(str(folder))  # what --resume gets back from the printed path
    assert again.read_text("srrl_sweep.yaml") == "sweep: {}\n"


def test_trial_folders_tune_does_not_hold_are_set_aside_not_deleted(location, tmp_path):
    folder = SweepFolder.of(location).child("sw")
    for name in ("train_srrl_a_00000", "train_srrl_b_00001", "train_srrl_c_00002", "confirm"):
        (tmp_path / "store" / "sw" / name).mkdir(parents=True)
    (tmp_path / "store" / "sw" / "train_srrl_b_00001" / "result.json").write_text("{}\n")
    assert folder.set_aside({"train_srrl_a_00000", "train_srrl_c_00002"}, "train_srrl_") == ["train_srrl_b_00001"]
    assert sorted(os.listdir(tmp_path / "store" / "sw")) == ["confirm", "orphaned", "train_srrl_a_00000",
                                                              "train_srrl_c_00002"]
    assert (tmp_path / "store" / "sw" / "orphaned" / "train_srrl_b_00001" / "result.json").read_text() == "{}\n"
    assert folder.set_aside({"train_srrl_a_00000", "train_srrl_c_00002"}, "train_srrl_") == []
    assert SweepFolder.of(location).child("none").set_aside(set(), "train_srrl_") == []


def test_trial_logs_are_completed_from_the_newest_checkpoint(location, tmp_path):
    """A trial that logged nothing and one whose log stops short get the rows their newest checkpoint holds;
    a log that reaches its checkpoint is left byte for byte (``tuner.driver.trial_logs``; both storage kinds)."""
    import json

    import torch

    from tuner.driver.trial_logs import complete_trial_logs, read_result_lines

    stage = tmp_path / "store" / "sw"
    history = [{"epoch": e, "val_acc": 10.0 * e, "best_val_acc": 10.0 * e} for e in (1, 2, 3)]
    # Tune's folder names: a searcher's trial id (8 hex digits), a confirmation's (``xxxxx_NNNNN``)
    trials = {"e10c7_00000": "train_srrl_e10c7_00000_0_alpha=2.0000", "0bb0bb0b": "train_srrl_0bb0bb0b_1_alpha=2.0000",
              "0cc0cc0c": "train_srrl_0cc0cc0c_2_alpha=2.0000"}
    aa, bb, cc = trials.values()
    for (tid, name), logged, newest in zip(trials.items(), (0, 1, 3), (2, 2, 2)):
        (stage / name / "checkpoint_000000").mkdir(parents=True)  # an older one: never read
        (stage / name / f"checkpoint_{newest:06d}").mkdir()
        torch.save({"history": history, "epoch": 3}, stage / name / f"checkpoint_{newest:06d}" / "trainer_state.pt")
        (stage / name / "params.json").write_text(json.dumps({"alpha": 2.0}))
        if logged:
            rows = [{**h, "trial_id": tid, "training_iteration": h["epoch"], "student_params": 7,
                     "config": {"alpha": 2.0}, "time_this_iter_s": 0.1} for h in history[:logged]]
            (stage / name / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    untouched = (stage / cc / "result.json").read_bytes()
    said = []
    assert complete_trial_logs(SweepFolder.of(location).child("sw"), said.append) == sorted([aa, bb])
    assert len(said) == 1 and "completed the result.json of 2 trial(s)" in said[0]
    fresh = read_result_lines((stage / aa / "result.json").read_text())
    assert [(r["epoch"], r["val_acc"], r["trial_id"], r["config"], r["training_iteration"]) for r in fresh] == \
        [(e, 10.0 * e, "e10c7_00000", {"alpha": 2.0}, e) for e in (1, 2, 3)]  # the id from its folder's name
    short = read_result_lines((stage / bb / "result.json").read_text())
    assert [(r["epoch"], r.get("rebuilt_from_checkpoint", False), r["student_params"], r["training_iteration"])
            for r in short] == [(1, False, 7, 1), (2, True, 7, 2), (3, True, 7, 3)]
    assert "time_this_iter_s" not in short[-1] and short[-1]["checkpoint_dir_name"] == "checkpoint_000002"
    assert (stage / cc / "result.json").read_bytes() == untouched
    assert complete_trial_logs(SweepFolder.of(location).child("sw"), said.append) == []  # once is enough


def test_unwritable_location_is_one_line_naming_the_field(location, tmp_path):
    (tmp_path / "store").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match=r"^storage_path: cannot write to ") as info:
        SweepFolder.of(location).child("sweep-a").check_writable()
    assert "\n" not in str(info.value)


def test_unknown_scheme_names_the_field_without_secrets():
    with pytest.raises(ConfigError, match=r"^resume: cannot open 'nosuch://bucket/x'") as info:
        SweepFolder.of("nosuch://user:pw@bucket/x", field="resume")
    assert "pw" not in str(info.value)


def test_s3_uri_keeps_its_options_and_hides_its_keys():
    """The sweep name goes into the path, not after ``?options``; errors and printed paths carry no keys."""
    from tests._helpers import free_port

    uri = f"s3://AKEY:SKEY@bucket/runs?region=us-east-1&scheme=http&endpoint_override=127.0.0.1:{free_port()}"
    folder = SweepFolder.of(uri).child("sweep-a")
    assert str(folder) == uri.replace("/runs?", "/runs/sweep-a?") and folder.path == "bucket/runs/sweep-a"
    assert "SKEY" not in folder.shown and folder.shown.startswith("s3://bucket/runs/sweep-a?region=")
    with pytest.raises(ConfigError, match=r"^storage_path: cannot read 's3://bucket/runs/sweep-a\?") as info:
        folder.has_file("srrl_sweep.yaml")  # nothing listens on that port: pyarrow's S3 client fails at once
    assert "SKEY" not in str(info.value) and "\n" not in str(info.value)
    # an object store keeps its URI and Tune's own filesystem: an upload there lands whole already
    assert folder.for_tune() == (uri.replace("/runs?", "/runs/sweep-a?"), None)


def test_local_storage_given_to_tune_writes_whole_files(location, tmp_path):
    """Tune rewrites tuner.pkl and its state files in place; a writer killed mid-file must leave the old file."""
    import pyarrow.fs

    from tuner.driver.atomic_fs import PART_SUFFIX, remove_parts

    path, fs = SweepFolder.of(location).child("sweep-a").for_tune()
    assert path == str(tmp_path / "store" / "sweep-a") and fs.type_name == "py::srrl-atomic-local"
    state = tmp_path / "store" / "sweep-a" / "tuner.pkl"
    pyarrow.fs.copy_files(str(_file(tmp_path / "v1", b"old" * 1000)), str(state), destination_filesystem=fs)
    assert state.read_bytes() == b"old" * 1000 and os.listdir(state.parent) == ["tuner.pkl"]

    # a writer SIGKILLed halfway through the new tuner.pkl (as Tune's driver was, mid-upload)
    code = ("import os, signal, sys, pyarrow.fs\nfrom tuner.driver.atomic_fs import AtomicLocalHandler\n"
            "f = AtomicLocalHandler.filesystem().open_output_stream(sys.argv[1])\n"
            "f.write(b'new' * 500_000); os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", code, str(state)], cwd=REPO)
    assert killed.returncode == -signal.SIGKILL
    assert state.read_bytes() == b"old" * 1000  # pyarrow's own local filesystem leaves b'new' * 500 here
    parts = [n for n in os.listdir(state.parent) if n.endswith(PART_SUFFIX)]
    assert len(parts) == 1 and (state.parent / parts[0]).read_bytes().startswith(b"new" * 1000)  # the torn write
    assert remove_parts(path) == 1 and os.listdir(state.parent) == ["tuner.pkl"]

    with fs.open_output_stream(str(state)) as f:  # a write that ends replaces the file whole
        f.write(b"new")
    fs.copy_file(str(state), str(state.parent / "copy.pkl"))
    assert state.read_bytes() == (state.parent / "copy.pkl").read_bytes() == b"new"
    assert pickle.loads(pickle.dumps(fs)) == fs  # Tune ships it to the trials' workers


def test_a_torn_upload_of_tunes_experiment_state_keeps_the_last_whole_one(location, tmp_path):
    """Tune rewrites its staging experiment state in place while an upload may be reading it: an empty or torn
    copy must not replace the whole one (a later upload the full disk failed left the sweep unreadable)."""
    import pyarrow.fs

    path, fs = SweepFolder.of(location).child("sweep-a").for_tune()
    state = Path(path) / "experiment_state-2026-12-08_01-00-00.json"
    whole = json.dumps({"trial_data": [["{}", "{}"]]}).encode()
    pyarrow.fs.copy_files(str(_file(tmp_path / "v1", whole)), str(state), destination_filesystem=fs)
    for torn in (b"", whole[:-7]):
        pyarrow.fs.copy_files(str(_file(tmp_path / "v2", torn)), str(state), destination_filesystem=fs)
        assert state.read_bytes() == whole and os.listdir(state.parent) == [state.name]
    newer = json.dumps({"trial_data": []}).encode()
    pyarrow.fs.copy_files(str(_file(tmp_path / "v3", newer)), str(state), destination_filesystem=fs)
    assert state.read_bytes() == newer
    log = state.parent / "train_srrl_1" / "result.json"  # other files land as written: a log's torn line is read past
    pyarrow.fs.copy_files(str(_file(tmp_path / "v4", b'{"epoch": 1}\n{"ep')), str(log), destination_filesystem=fs)
    assert log.read_bytes() == b'{"epoch": 1}\n{"ep'


def _file(path, data: bytes):
    path.write_bytes(data)
    return path
