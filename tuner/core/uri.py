"""Locations as strings: is it a URI, which SQLite file a store URL names, and how to show one safely."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

__all__ = ["is_uri", "sqlite_file", "redact"]


def is_uri(location: str) -> bool:
    return "://" in location


def sqlite_file(uri: str) -> Optional[Path]:
    """The database file of an SQLAlchemy ``sqlite:///<path>`` URL (MLflow's or Optuna's store), else None."""
    return Path(uri[len("sqlite:///"):].split("?", 1)[0]).expanduser() if uri.startswith("sqlite:///") else None


def redact(uri: Any) -> str:
    """``uri`` without any ``user:password@`` (and without ``?...token=`` style query secrets)."""
    text = re.sub(r"(?<=//)[^/@\s]*@", "", str(uri))
    return re.sub(r"(?i)([?&][^=&\s]*(?:token|password|secret|key)[^=&\s]*=)[^&\s]*", r"\1***", text)
