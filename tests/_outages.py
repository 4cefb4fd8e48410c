"""Outages for the fault tests: an ``mlflow server`` that stops and restarts, a TCP link that drops, a disk that
fills (import as ``from tests._outages import ...``)."""
from __future__ import annotations

import contextlib
import os
import signal
import shutil
import socket
import subprocess
import struct
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from tests._helpers import free_port


class MlflowServer:
    """``mlflow server`` (SQLite store in ``folder``) in its own process group; restarts on the same port and store."""

    def __init__(self, folder: Path, store: Optional[Path] = None) -> None:
        """``store``: an SQLite file to serve (a sweep's ``mlflow.db``); default ``folder/server.db``."""
        self.folder = folder
        self.store = store or folder / "server.db"
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 90) -> None:
        """Start it and wait until it answers /health; RuntimeError if it exits or stays silent."""
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", f"sqlite:///{self.store}",
             "--artifacts-destination", str(self.folder / "artifacts"), "--workers", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.up():
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}")
            time.sleep(0.25)
        raise RuntimeError("mlflow server did not answer /health")

    def up(self) -> bool:
        """Whether it answers /health now."""
        try:
            urllib.request.urlopen(self.uri + "/health", timeout=1)
            return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM the whole process group (uvicorn and its worker), SIGKILL what is left after 20 s."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # the worker may outlive the parent by a moment
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None


class TcpGate:
    """A TCP forwarder on its own 127.0.0.1 port in front of ``target_port``, that can be shut and opened again.

    Shut, it stops listening and cuts every open connection, so clients see what a stopped server gives
    (connection refused or reset); open, it listens on the same port again. An outage made with it lasts
    exactly as long as the test says, where restarting a real ``mlflow server`` takes ~9 s, and far
    longer on a loaded machine.
    """

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self._listener: Optional[socket.socket] = None
        self._hold: Optional[socket.socket] = None  # the port's placeholder while shut
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> None:
        """Listen (again) on the gate's port and forward each connection to the target."""
        if self._hold is not None:
            self._hold.close()
            self._hold = None
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def shut(self) -> None:
        """Stop listening and reset every connection now open."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):  # wakes the accept thread: a bare close leaves the socket listening
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            # keep the port bound, not listening: clients are refused, and nothing else takes it meanwhile
            self._hold = socket.socket()
            self._hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._hold.bind(("127.0.0.1", self.port))
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST, not FIN
                conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # shut
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                if listener is not self._listener:  # shut meanwhile
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy src to dst until either side ends, then end both directions and close src."""
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                if src in self._conns:
                    self._conns.remove(src)
            src.close()


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of ``size_kb`` mounted at ``path``: a disk to fill. Skips the test where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no `mount` here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize_disk(path: Path, size_kb: int) -> None:
    """Give the ``small_disk`` at ``path`` a new size (space back, as a user freeing it)."""
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(path)], check=True)


def fill_disk(path: Path, leave_kb: int = 0) -> Path:
    """Write a filler file on ``path``'s file system until at most ``leave_kb`` is free; returns it."""
    filler = path / "filler"
    with open(filler, "ab") as f:
        try:
            while shutil.disk_usage(path).free > leave_kb * 1024:
                f.write(b"\0" * min(64 * 1024, shutil.disk_usage(path).free - leave_kb * 1024))
                f.flush()
        except OSError:
            pass  # full
    return filler
