"""Locations as strings: is it a URI, which SQLite file a store URL names, and how to show one safely."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

__all__ = ["is_uri", "sqlite_file", "check_sqlite_folder", "redact"]


def is_uri(location: str) -> bool:
    return "://" in location


def sqlite_file(uri: str) -> Optional[Path]:
    """The database file of an SQLAlchemy ``sqlite:///<path>`` URL (MLflow's or Optuna's store), else None."""
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser() if uri.startswith("sqlite:///") else None


def check_sqlite_folder(field: str, uri: str) -> Optional[Path]:
    """The database file of an ``sqlite:///`` ``uri`` (None for other stores); a ``ValueError`` naming ``field``
    when its folder does not exist (SQLite would create the file, not the folder)."""
    path = sqlite_file(uri)
    if path is not None and not path.parent.is_dir():
        raise ValueError(f"{field}: folder {path.parent.as_posix()!r} of {redact(uri)!r} does not exist")
    return path


def redact(uri: Any) -> str:
    """``uri`` without any ``user:password@`` (and without ``?...token=`` style query secrets)."""
    text = re.sub(r"(?<=//)[^/@\s]*@", "", str(uri))
    return re.sub(r"(?i)([?&][^=&\s]*(?:token|password|secret|key)[^=&\s]*=)[^&\s]*", r"\1***", text)
