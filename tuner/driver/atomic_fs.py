"""A local (or NFS) ``pyarrow.fs`` filesystem for Tune whose file writes land whole, by rename.

Tune rewrites its state files on storage in place (``tuner.pkl``, ``experiment_state-*.json``, the
searcher state, each trial's ``result.json``; a resumed driver re-uploads all of them every second).
pyarrow's local filesystem truncates a file before writing it, so a driver SIGKILLed mid-copy left a
torn ``tuner.pkl`` and the sweep could not be resumed (``EOFError`` in ``Tuner.restore``). Handed to
Tune as ``storage_filesystem``, this filesystem leaves the previous file instead.

Tune also rewrites its staging copy of the experiment state in place while its background upload of the
last snapshot may still be reading it, so an upload can carry an empty or torn copy (seen once a full disk
failed the next upload: ``Expecting value`` where the sweep read its state). An experiment state that does
not parse is never renamed over the last whole one (docs/architecture.md, "Faults").
"""
from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, List

import pyarrow
import pyarrow.fs

from tuner.core import faults
from tuner.core.files import PART_SUFFIX, atomic_write, open_part
from tuner.driver.ray_internals import EXPERIMENT_STATE_GLOB

__all__ = ["AtomicLocalHandler", "PART_SUFFIX", "remove_parts"]

_log = logging.getLogger(__name__)


def _is_json(path: str) -> bool:
    """Whether the file at ``path`` is one whole JSON document (a torn or empty copy is not)."""
    try:
        with open(path, "rb") as f:
            json.loads(f.read())
        return True
    except (OSError, ValueError):
        return False


class _RenameOnClose:
    """A write-only file that lands at ``path`` by rename when closed; a writer killed first leaves only its
    part file, and a write that fails (a full disk) leaves nothing: the part is removed, the old file stays."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._part, self._file = open_part(path)
        self._failed = False
        self._whole = _is_json if fnmatch.fnmatch(os.path.basename(path), EXPERIMENT_STATE_GLOB) else None

    def _give_up(self, error: OSError) -> OSError:
        """Remove the part file; the error to raise names the file it was for (Tune's own message does not)."""
        self._failed = True
        with contextlib.suppress(OSError):  # closing flushes, which fails the same way
            self._file.close()
        Path(self._part).unlink(missing_ok=True)
        if faults.is_no_space(error):
            faults.note_no_space(self._path)
        return OSError(error.errno, error.strerror, self._path)

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            raise self._give_up(e) from e

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            raise self._give_up(e) from e

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        if self._failed or self._file.closed:
            return
        # no fsync: the rename already makes a killed process leave the old file or the new one, whole,
        # and Tune rewrites its state every second (an fsync each time would slow every sweep)
        try:
            self._file.close()  # flushes: a full disk may show only here
            if self._whole is not None and not self._whole(self._part):
                # Tune's staging copy was rewritten under its upload: the next snapshot carries it whole
                _log.debug("kept the last whole %s: the upload of it was torn", self._path)
                Path(self._part).unlink(missing_ok=True)
                return
            os.replace(self._part, self._path)
        except OSError as e:
            raise self._give_up(e) from e


class AtomicLocalHandler(pyarrow.fs.FileSystemHandler):
    """Handler for ``pyarrow.fs.PyFileSystem``: pyarrow's ``LocalFileSystem``, but every write goes to a part
    file renamed over the target when closed (readers and restores see the old file or the new one, whole)."""

    def __init__(self) -> None:
        self._fs = pyarrow.fs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __hash__(self) -> int:
        return hash(AtomicLocalHandler)

    def __reduce__(self) -> tuple:  # pickled to Tune's workers: rebuilt there
        return AtomicLocalHandler, ()

    @classmethod
    def filesystem(cls) -> pyarrow.fs.FileSystem:
        return pyarrow.fs.PyFileSystem(cls())

    def get_type_name(self) -> str:
        return "srrl-atomic-local"

    def normalize_path(self, path: str) -> str:
        return self._fs.normalize_path(path)

    def get_file_info(self, paths: List[str]) -> list:
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> list:
        return self._fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("srrl-atomic-local: refusing to delete the contents of '/'")

    def delete_file(self, path: str) -> None:
        self._fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        try:
            with open(src, "rb") as source:
                atomic_write(Path(dest), lambda target: shutil.copyfileobj(source, target))
        except OSError as e:
            if faults.is_no_space(e):
                faults.note_no_space(dest)
            raise

    def open_input_stream(self, path: str) -> Any:
        return self._fs.open_input_stream(path)

    def open_input_file(self, path: str) -> Any:
        return self._fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        return pyarrow.PythonFile(_RenameOnClose(path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        return self._fs.open_append_stream(path)


def remove_parts(folder: str) -> int:
    """Delete the part files that killed writers left under ``folder``; returns how many."""
    removed = 0
    for root, _, names in os.walk(folder):
        for name in names:
            if name.endswith(PART_SUFFIX):
                os.unlink(os.path.join(root, name))
                removed += 1
    return removed
