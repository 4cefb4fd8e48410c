"""``exit_now``: a CLI's exit without the interpreter's teardown keeps every effect of a normal exit."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests._helpers import REPO


def test_exit_now_runs_the_exit_handlers_waits_for_threads_flushes_output_and_keeps_the_code(tmp_path):
    program = textwrap.dedent(f"""
        import atexit, logging, tempfile, threading, time
        from pathlib import Path
        from tuner.core.process import exit_now

        out = Path({str(tmp_path)!r})
        kept = tempfile.TemporaryDirectory(dir=out)        # removed by its finalizer at exit
        (out / "temp.txt").write_text(kept.name)
        logging.basicConfig(filename=out / "log.txt", level=logging.INFO)
        logging.getLogger("x").info("logged")
        atexit.register(lambda: (out / "handler.txt").write_text("ran"))
        threading.Thread(target=lambda: (time.sleep(0.5), (out / "thread.txt").write_text("done"))).start()
        print("printed", end="")                           # still in the buffer: stdout is a pipe
        exit_now(3)
    """)
    proc = subprocess.run([sys.executable, "-c", program], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "printed"
    assert (tmp_path / "handler.txt").read_text() == "ran" and (tmp_path / "thread.txt").read_text() == "done"
    assert "logged" in (tmp_path / "log.txt").read_text()
    temp = (tmp_path / "temp.txt").read_text()
    assert temp.startswith(str(tmp_path)) and not __import__("os").path.exists(temp)
