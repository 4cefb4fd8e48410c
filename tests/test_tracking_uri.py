"""The MLflow record's small rules without a sweep: tracking URIs checked in one line, version tags, a light
import, the one-line error summary. (tests/test_tracking.py runs the callback against real Ray Tune.)"""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import pytest

from tests._helpers import free_port

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from tuner import tracking as T  # noqa: E402  (after the env var)
from tuner.tracking.schema import error_summary  # noqa: E402


# ---- tracking URIs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    "file:///tmp/mlruns", "./mlruns", "mlruns", "", " sqlite:///x.db", "garbage://x", "sqlite://",
    "sqlite:////no/such/dir/mlflow.db", "http://", "http://host:notaport", "postgresql://", 42,
])
def test_bad_tracking_uri_is_one_line_naming_the_field(bad):
    with pytest.raises(ValueError, match=r"^tracking_uri: ") as info:
        T.check_tracking_uri(bad)
    assert "\n" not in str(info.value)


def test_file_store_message_points_to_sqlite():
    with pytest.raises(ValueError, match=r"MLflow 3 .*needs a database: use sqlite:///"):
        T.check_tracking_uri("file:///tmp/mlruns")


def test_good_tracking_uris_pass(tmp_path):
    uri = T.default_tracking_uri(str(tmp_path))
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    for good in (uri, "sqlite:///mlflow.db", "postgresql://u:p@db:5432/mlflow", "mysql+pymysql://u@h/m",
                 "databricks", "databricks://profile", "https://mlflow.example.org:8443/prefix"):
        T.check_tracking_uri(good, probe=False)


def test_unreachable_server_raises_connection_error_quickly_without_password():
    port = free_port()
    t0 = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"^tracking_uri: cannot reach MLflow server at http://127\.0\.0\.1") as info:
        T.check_tracking_uri(f"http://alice:s3cret@127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 5
    assert "s3cret" not in str(info.value) and "alice" not in str(info.value)


def test_reachable_server_passes_and_gets_basic_auth():
    seen = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("Authorization")))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        T.check_tracking_uri(f"http://u:pw@127.0.0.1:{server.server_port}/")
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0][0] == "/health" and seen[0][1].startswith("Basic ")


# ---- misc -----------------------------------------------------------------------------------------
def test_version_tags_never_fail():
    tags = T.set_git_and_version_tags()
    assert tags["srrl.version.mlflow"] and tags["srrl.version.optuna"] and tags["srrl.version.torch"]
    commit = tags.get("mlflow.source.git.commit")
    assert commit is None or (len(commit) == 40 and int(commit, 16) >= 0)


def test_import_is_light():
    code = "import sys, tuner.tracking as t; t.default_tracking_uri(); t.check_tracking_uri('sqlite:///x.db'); " \
           "print('ray' in sys.modules, 'mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.split() == ["False", "False"]


def test_error_summary_takes_the_last_failure():
    text = ("Failure # 1 (occurred at x)\n\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)\n  File \"a.py\"\n"
            "KeyError: 'a'\nFailure # 2 (occurred at y)\nray::ImplicitFunc.train()\n  File \"b.py\"\n"
            "    raise Diverged(3)\ntuner.core.trainer.Diverged: training diverged at epoch 3\n")
    assert error_summary(text) == "tuner.core.trainer.Diverged: training diverged at epoch 3"
