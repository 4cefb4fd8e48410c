"""The shared test helpers that kill tests poll while a sweep runs."""
from __future__ import annotations

import threading
import time

import pytest

from tests._helpers import free_port, tune_results
from tests._outages import TcpGate


def test_tune_results_reads_a_folder_that_appears_and_vanishes_as_not_there(tmp_path):
    """The sweep's writability probe creates its folder and removes it again; a killer thread polling it then
    must see no results, not die of FileNotFoundError (it did in a loaded round: the kill never came).

    Before the fix this loop raised ~20 times a second here; 1.5 s of it must raise none."""
    folder = tmp_path / "shared" / "nd"
    stop = threading.Event()

    def appear_and_vanish() -> None:
        trial = folder / "train_srrl_x"
        while not stop.is_set():
            trial.mkdir(parents=True)
            (trial / "result.json").write_text('{"epoch": 1}\n')
            (trial / "result.json").unlink()
            trial.rmdir()
            folder.rmdir()
            folder.parent.rmdir()

    flipper = threading.Thread(target=appear_and_vanish, daemon=True)
    flipper.start()
    seen = set()
    try:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            seen.add(len(tune_results(folder, by_dir=True)))
    finally:
        stop.set()
        flipper.join(timeout=5)
    assert seen <= {0, 1}


def test_free_ports_lie_outside_the_ports_the_kernel_hands_to_outgoing_connections():
    """So a port a test lets go and takes again cannot be given meanwhile to another process's connection."""
    from pathlib import Path

    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = {free_port() for _ in range(50)}
    assert len(ports) > 40 and all(20000 <= p < low for p in ports), (sorted(ports), low, high)


def test_a_shut_gate_refuses_clients_and_keeps_its_port_until_it_opens_again():
    """Shut: connections are refused and no other socket can bind the port (one did, in a loaded round, and the
    gate could not reopen); open: it forwards again on the same port."""
    import errno
    import socket

    with socket.socket() as echo:
        echo.bind(("127.0.0.1", 0))
        echo.listen(8)

        def serve() -> None:
            while True:
                try:
                    conn, _ = echo.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(conn.recv(64))

        threading.Thread(target=serve, daemon=True).start()
        gate = TcpGate(echo.getsockname()[1])

        def through_gate() -> bytes:
            with socket.create_connection(("127.0.0.1", gate.port), timeout=5) as c:
                c.sendall(b"ping")
                return c.recv(64)

        gate.open()
        assert through_gate() == b"ping"
        gate.shut()
        with pytest.raises(ConnectionRefusedError):
            through_gate()
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", gate.port))
        assert taken.value.errno == errno.EADDRINUSE
        gate.open()
        assert through_gate() == b"ping"
        gate.shut()
