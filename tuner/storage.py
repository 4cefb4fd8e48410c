"""A sweep's folder on local disk or behind a URI (s3://, gs://, hdfs://, file://), with one set of calls.

Tune keeps a sweep's checkpoints and experiment state under ``<storage_path>/<name>``; the sweep's
own ``srrl_sweep.yaml`` (what ``--resume`` reads) sits beside them. A local path uses the OS; a
URI goes through ``pyarrow.fs``, the filesystem layer Tune itself uses for remote storage, so
whatever Tune can write the sweep file can be written to as well.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from tuner.config import ConfigError

__all__ = ["SweepFolder", "is_uri"]

_PROBE = ".srrl-write-probe"


def is_uri(location: str) -> bool:
    return "://" in location


def _redact(location: str) -> str:
    from tuner.tracking import redact

    return redact(location)


@dataclass(frozen=True)
class SweepFolder:
    """``location`` is a local path or a URI; ``fs``/``path`` are set for a URI (pyarrow filesystem + its path)."""

    location: str
    fs: Any = None
    path: str = ""

    @classmethod
    def of(cls, location: str, field: str = "storage_path") -> "SweepFolder":
        """The folder at ``location``; a URI pyarrow cannot open is a ``ConfigError`` naming ``field``."""
        location = location.rstrip("/") if is_uri(location) else location
        if not is_uri(location):
            return cls(str(Path(location).expanduser()))
        import pyarrow.fs

        try:
            fs, path = pyarrow.fs.FileSystem.from_uri(location)
        except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError / ValueError here
            raise ConfigError(f"{field}: cannot open {_redact(location)!r} ({_redact(str(e).splitlines()[0])})") from None
        return cls(location, fs, path)

    def child(self, name: str) -> "SweepFolder":
        if self.fs is None:
            return SweepFolder(str(Path(self.location) / name))
        return SweepFolder(f"{self.location}/{name}", self.fs, f"{self.path}/{name}")

    def __str__(self) -> str:
        return self.location

    # ---- queries -------------------------------------------------------------------------------
    def has_file(self, name: str) -> bool:
        if self.fs is None:
            return (Path(self.location) / name).is_file()
        import pyarrow.fs

        return self.fs.get_file_info(f"{self.path}/{name}").type == pyarrow.fs.FileType.File

    def is_empty(self) -> bool:
        """True when the folder does not exist or holds nothing."""
        if self.fs is None:
            folder = Path(self.location)
            return not folder.exists() or not any(folder.iterdir())
        import pyarrow.fs

        if self.fs.get_file_info(self.path).type != pyarrow.fs.FileType.Directory:
            return True
        return not self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True))

    def read_text(self, name: str) -> str:
        if self.fs is None:
            return (Path(self.location) / name).read_text()
        with self.fs.open_input_stream(f"{self.path}/{name}") as f:
            return f.read().decode()

    # ---- writes --------------------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> None:
        """Write ``name`` whole or not at all: a local temp file renamed over it; one object upload remotely."""
        if self.fs is not None:
            self.fs.create_dir(self.path, recursive=True)
            with self.fs.open_output_stream(f"{self.path}/{name}") as f:
                f.write(text.encode())
            return
        folder = Path(self.location)
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, folder / name)

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
                raise ConfigError(f"storage_path: cannot write to {_redact(self.location)!r} "
                                  f"({_redact(str(e).splitlines()[0])})") from None
            finally:
                for path in created:
                    try:
                        self.fs.delete_dir(path)
                    except Exception:  # noqa: BLE001 - not there (never created) or not empty: leave it
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
            raise ConfigError(f"storage_path: cannot write to {str(folder)!r} ({e.strerror or e})") from None
        finally:
            for path in created:  # deepest first
                try:
                    path.rmdir()
                except OSError:
                    pass
