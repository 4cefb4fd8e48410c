"""The shared test helpers that kill tests poll while a sweep runs."""
from __future__ import annotations

import threading
import time

from tests._helpers import tune_results


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
