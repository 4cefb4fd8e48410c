"""The sweep folder: the same calls on a local path and on a URI (pyarrow's file:// filesystem stands in
for s3:// and gs://, which take the same code path)."""
from __future__ import annotations

import os

import pytest

from tuner.config import ConfigError
from tuner.storage import SweepFolder


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
