"""A sweep's folder on local disk or behind a URI (s3://, gs://, hdfs://, file://), with one set of calls.

Tune keeps a sweep's checkpoints and experiment state under ``<storage_path>/<name>``; the sweep's
own ``srrl_sweep.yaml`` (what ``--resume`` reads) sits beside them. A local path uses the OS; a
URI goes through ``pyarrow.fs``, the filesystem layer Tune itself uses for remote storage, so
whatever Tune can write the sweep file can be written to as well.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from tuner.driver.atomic_fs import AtomicLocalHandler
from tuner.core.config import ConfigError
from tuner.core.files import atomic_write
from tuner.core.uri import is_uri, redact as _redact

__all__ = ["SweepFolder", "ORPHANED_DIR", "trial_id_of"]

_PROBE = ".srrl-write-probe"
ORPHANED_DIR = "orphaned"  # trial folders of a killed driver that Tune's restored state does not hold
#: a trial folder's name: ``<trainable>_<trial id>_<counter>_<params>``, the id a searcher's 8 hex digits or (a
#: confirmation stage or grid an older srrl-tune started) ``BasicVariantGenerator``'s 5 hex digits, ``_``, 5 digits
_TRIAL_FOLDER = re.compile(r"train_srrl(?:_workers)?_([0-9a-f]{8}|[0-9a-f]{5}_\d{5})(?:_|$)")


def trial_id_of(folder_name: str) -> Optional[str]:
    """The Tune trial id in a trial folder's name (a trial that never logged a result has it nowhere else), or None."""
    found = _TRIAL_FOLDER.match(folder_name)
    return found.group(1) if found else None


@dataclass(frozen=True)
class SweepFolder:
    """``location`` is a local path or a URI; ``fs``/``path`` are set for a URI (pyarrow filesystem + its path).

    ``str()`` is the full location (what Tune is given); ``shown`` is the same without credentials,
    for messages and printed commands. ``field`` is the setting named in errors.
    """

    location: str
    fs: Any = None
    path: str = ""
    field: str = "storage_path"

    @classmethod
    def of(cls, location: str, field: str = "storage_path") -> "SweepFolder":
        """The folder at ``location``; a URI pyarrow cannot open is a ``ConfigError`` naming ``field``."""
        if not is_uri(location):
            return cls(str(Path(location).expanduser()), field=field)
        import pyarrow.fs

        parts = urlsplit(location)
        location = urlunsplit(parts._replace(path=parts.path.rstrip("/")))
        try:
            fs, path = pyarrow.fs.FileSystem.from_uri(location)
        except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError / ValueError here
            raise ConfigError(f"{field}: cannot open {_redact(location)!r} ({_redact(str(e).splitlines()[0])})") from None
        return cls(location, fs, path.rstrip("/"), field)

    def child(self, name: str) -> "SweepFolder":
        if self.fs is None:
            return SweepFolder(str(Path(self.location) / name), field=self.field)
        parts = urlsplit(self.location)  # the name goes into the path, before any ?query (s3 options)
        return SweepFolder(urlunsplit(parts._replace(path=f"{parts.path}/{name}")), self.fs, f"{self.path}/{name}",
                           self.field)

    def __str__(self) -> str:
        return self.location

    def for_tune(self) -> Tuple[str, Any]:
        """``(path, storage_filesystem)`` to give Tune for this folder.

        A local disk (a path or ``file://``) gets the filesystem whose writes land by rename
        (``tuner.driver.atomic_fs``): pyarrow's own truncates Tune's state files in place. Object stores
        (s3, gs) keep the URI and Tune's own filesystem: an upload there lands whole or not at all.
        """
        import pyarrow.fs

        if self.fs is None:
            return self.location, AtomicLocalHandler.filesystem()
        if isinstance(self.fs, pyarrow.fs.LocalFileSystem):
            return self.path, AtomicLocalHandler.filesystem()
        return self.location, None

    @property
    def shown(self) -> str:
        return _redact(self.location)

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """A remote filesystem's error (credentials, network) as one line naming the field."""
        try:
            yield
        except OSError as e:
            raise ConfigError(f"{self.field}: cannot read {self.shown!r} ({_redact(str(e).splitlines()[0])})") from None

    # ---- queries -------------------------------------------------------------------------------
    def has_file(self, name: str) -> bool:
        if self.fs is None:
            return (Path(self.location) / name).is_file()
        import pyarrow.fs

        with self._reading():
            return self.fs.get_file_info(f"{self.path}/{name}").type == pyarrow.fs.FileType.File

    def is_empty(self) -> bool:
        """True when the folder does not exist or holds nothing."""
        return not self.names()

    def _entries(self, path: str) -> list:
        import pyarrow.fs

        with self._reading():
            if self.fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
                return []
            return self.fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))

    def read_bytes(self, name: str) -> bytes:
        if self.fs is None:
            return (Path(self.location) / name).read_bytes()
        with self._reading(), self.fs.open_input_stream(f"{self.path}/{name}") as f:
            return f.read()

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def names(self, folders_only: bool = False) -> List[str]:
        """The names of what the folder holds (none where it does not exist), sorted; ``folders_only``: its sub-folders."""
        if self.fs is None:
            folder = Path(self.location)
            names = [p.name for p in folder.iterdir() if p.is_dir() or not folders_only] if folder.is_dir() else []
        else:
            import pyarrow.fs

            names = [i.base_name for i in self._entries(self.path)
                     if i.type == pyarrow.fs.FileType.Directory or not folders_only]
        return sorted(names)

    def subfolders(self, prefix: str = "") -> List[str]:
        """The names of the folder's sub-folders that start with ``prefix``, sorted."""
        return [n for n in self.names(folders_only=True) if n.startswith(prefix)]

    def files(self) -> List[str]:
        """Every file under the folder, as paths relative to it ('/'-separated)."""
        import pyarrow.fs

        with self._reading():
            infos = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, recursive=True))
        return sorted(i.path[len(self.path) + 1:] for i in infos if i.type == pyarrow.fs.FileType.File)

    def download(self, names: List[str], to: Path) -> None:
        """Copy the files ``names`` (relative, from ``files()``) of a remote folder under the local folder ``to``."""
        import pyarrow.fs

        local = pyarrow.fs.LocalFileSystem()
        for name in names:
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            with self._reading():
                pyarrow.fs.copy_files(f"{self.path}/{name}", str(to / name), source_filesystem=self.fs,
                                      destination_filesystem=local)

    # ---- writes --------------------------------------------------------------------------------
    def set_aside(self, keep: Iterable[str], prefix: str, into: str = ORPHANED_DIR) -> List[str]:
        """Move the sub-folders named ``prefix*`` other than ``keep`` into ``into/``; returns their names.

        A driver killed mid-upload can leave Tune's experiment state older than the trial folders it
        started: Tune never resumes those, and they would pass for trials of the sweep. Moved, not
        deleted: what the dead driver's trials wrote stays readable.
        """
        keep = set(keep)
        moved = [n for n in self.subfolders(prefix) if n not in keep]
        for name in moved:
            if self.fs is None:
                (Path(self.location) / into).mkdir(exist_ok=True)
                os.replace(Path(self.location) / name, Path(self.location) / into / name)
            else:
                self.fs.create_dir(f"{self.path}/{into}", recursive=True)
                self.fs.move(f"{self.path}/{name}", f"{self.path}/{into}/{name}")
        return moved

    def remove(self, name: str) -> None:
        """Delete the sub-folder ``name`` and all it holds."""
        if self.fs is None:
            shutil.rmtree(Path(self.location) / name)
        else:
            self.fs.delete_dir(f"{self.path}/{name}")

    def write_text(self, name: str, text: str) -> None:
        """Write ``name``: locally a temp file renamed over it (whole or not at all); remotely one upload
        (whole or not at all on object stores such as s3 and gs)."""
        if self.fs is not None:
            self.fs.create_dir(self.path, recursive=True)
            with self.fs.open_output_stream(f"{self.path}/{name}") as f:
                f.write(text.encode())
            return
        atomic_write(Path(self.location) / name, lambda f: f.write(text.encode()))

    def check_writable(self) -> None:
        """The folder can be created and written; leaves nothing behind. ``ConfigError`` naming storage_path if not."""
        if self.fs is not None:
            import pyarrow.fs

            created = []  # folders the probe creates, deepest first, removed again
            path = self.path
            while path and self.fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
                created.append(path)
                path = path.rpartition("/")[0]
            try:
                self.write_text(_PROBE, "")
                self.fs.delete_file(f"{self.path}/{_PROBE}")
            except Exception as e:  # noqa: BLE001 - pyarrow's errors differ per filesystem
                raise ConfigError(f"{self.field}: cannot write to {self.shown!r} "
                                  f"({_redact(str(e).splitlines()[0])})") from None
            finally:
                for path in created:  # deepest first; delete_dir is recursive, so only while still empty
                    try:
                        if not self._entries(path):
                            self.fs.delete_dir(path)
                    except Exception:  # noqa: BLE001 - never created, or gone: nothing to clean
                        pass
            return
        folder = Path(self.location)
        created: List[Path] = []
        probe: Optional[Path] = folder
        while not probe.exists():
            created.append(probe)
            probe = probe.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder):
                pass
        except OSError as e:
            raise ConfigError(f"{self.field}: cannot write to {str(folder)!r} ({e.strerror or e})") from None
        finally:
            for path in created:  # deepest first
                try:
                    path.rmdir()
                except OSError:
                    pass
