"""Where the MLflow store is and how it is reached: the default URI, checking one before a sweep, where
an SQLite store keeps its artifacts, and how calls to a server fail fast and which failures are retried.

No mlflow import: ``default_tracking_uri`` and ``check_tracking_uri`` stay cheap.
"""
from __future__ import annotations

import base64
import contextlib
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Iterator, Optional

from tuner.core.uri import check_sqlite_folder, redact, sqlite_file

__all__ = ["default_tracking_uri", "artifact_location", "check_tracking_uri", "check_sqlite", "probe_server",
           "DB_SCHEMES", "retryable", "fail_fast_http"]

DB_SCHEMES = ("postgresql", "mysql", "mssql")
# MLflow rejected the request itself: retrying or buffering it cannot help
_NOT_RETRYABLE = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                  "BAD_REQUEST", "INVALID_STATE"}


def default_tracking_uri(workdir: str = ".") -> str:
    """``sqlite:///<absolute workdir>/mlflow.db`` (MLflow 3 needs a database; an absolute path survives cwd changes)."""
    return f"sqlite:///{(Path(workdir).expanduser().resolve() / 'mlflow.db').as_posix()}"


def artifact_location(tracking_uri: str, experiment: str) -> Optional[str]:
    """Where a new experiment of an SQLite store keeps its artifacts: ``mlruns/<experiment>`` beside the
    database, not MLflow's default ``./mlruns`` of whatever folder the driver runs in (a Ray job's is a
    temporary copy); None (the server's choice) for other stores."""
    path = sqlite_file(tracking_uri)
    if path is None:
        return None
    return str(Path(path).parent / "mlruns" / re.sub(r"[^A-Za-z0-9._-]", "_", experiment))


def check_tracking_uri(uri: str, probe: bool = True) -> None:
    """Raise a one-line ``ValueError`` naming ``tracking_uri`` if ``uri`` is not a usable MLflow 3 store.

    Accepted: ``sqlite:///rel.db`` / ``sqlite:////abs/path.db`` (its folder must exist),
    ``http(s)://host[:port][/prefix]``, ``postgresql[+driver]://...``, ``mysql[+driver]://...``,
    ``databricks[://profile]``. For http(s) and ``probe=True``, ``<uri>/health`` must answer within
    3 s, else ``ConnectionError``. No message ever contains the URI's ``user:password@``.
    """
    shown = redact(uri) if isinstance(uri, str) else repr(uri)
    allowed = ("allowed: sqlite:///path/to/mlflow.db, http(s)://host:port, postgresql://..., "
               "mysql://..., databricks")
    if not isinstance(uri, str) or not uri.strip() or uri != uri.strip():
        raise ValueError(f"tracking_uri: {shown!r} is not a tracking URI; {allowed}")
    if uri == "databricks":
        return
    scheme = uri.split(":", 1)[0].lower() if re.match(r"^[A-Za-z][\w+.-]*:", uri) else ""
    if scheme == "file" or not scheme or (len(scheme) == 1 and os.name == "nt"):
        raise ValueError(f"tracking_uri: {shown!r} is a file store, which MLflow 3 refuses; it needs a "
                         f"database: use {default_tracking_uri()} (or a server)")
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///") or uri in ("sqlite:///", "sqlite:///:memory:"):
            raise ValueError(f"tracking_uri: {shown!r} names no database file; use sqlite:///<path>/mlflow.db")
        path = check_sqlite_folder("tracking_uri", uri)
        if path.is_file():
            check_sqlite(path, shown)
        return
    if scheme in ("http", "https"):
        parts = urllib.parse.urlsplit(uri)
        try:
            parts.port  # raises ValueError on a non-numeric or out-of-range port
        except ValueError:
            raise ValueError(f"tracking_uri: {shown!r} has a bad port; expected {scheme}://host[:port]") from None
        if not parts.hostname:
            raise ValueError(f"tracking_uri: {shown!r} has no host; expected {scheme}://host[:port]")
        if probe:
            probe_server(uri)
        return
    if scheme.split("+", 1)[0] in DB_SCHEMES:
        if not re.match(r"^[\w+]+://[^/]+", uri):
            raise ValueError(f"tracking_uri: {shown!r} has no host; expected {scheme}://user@host/db")
        return
    if scheme == "databricks" and uri.startswith("databricks://"):
        return
    raise ValueError(f"tracking_uri: scheme {scheme!r} of {shown!r} is not supported; {allowed}")


def check_sqlite(path: Path, shown: str) -> None:
    """An existing SQLite store must open as a database and read its schema (a copy cut short, a full disk's
    torn write fail here). Not ``PRAGMA quick_check``: that reads every page, ~10 s for a 1 GB store."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as e:
        if "locked" in str(e) or "readonly" in str(e):
            # another sweep is writing it (busy), or a killed writer left a hot journal that only a
            # writable connection rolls back (MLflow's own, next): not broken either way
            return
        raise ValueError(f"tracking_uri: {shown!r} is not a readable MLflow store ({str(e)[:120]}); restore "
                         "it from a copy, or give --tracking-uri a new file") from None


def probe_server(uri: str, timeout: float = 3.0) -> None:
    """GET ``<uri>/health``; any HTTP answer counts as reachable (auth or a proxy may answer 401/404)."""
    parts = urllib.parse.urlsplit(uri)
    clean = redact(uri).rstrip("/")
    request = urllib.request.Request(clean + "/health")
    if parts.username is not None:  # urllib does not take user:password from the URL itself
        token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConnectionError(
            f"tracking_uri: cannot reach MLflow server at {clean} ({redact(str(reason))}); "
            "start one with `mlflow server --backend-store-uri sqlite:///mlflow.db` or fix the address"
        ) from None


def retryable(exc: BaseException) -> bool:
    """False when MLflow rejected the request itself (a bad value, a missing run): sending it again cannot help."""
    code = getattr(exc, "error_code", None)
    return code not in _NOT_RETRYABLE


@contextlib.contextmanager
def fail_fast_http(uri: str) -> Iterator[None]:
    """MLflow's own HTTP retries (7, backoff 2: minutes) would stall the Tune loop; we retry and buffer
    instead. Applies only where the user set nothing, and only for the duration of one call."""
    if not uri.startswith(("http://", "https://", "databricks")):
        yield
        return
    set_here = [k for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT") if k not in os.environ]
    defaults = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    for k in set_here:
        os.environ[k] = defaults[k]
    try:
        yield
    finally:
        for k in set_here:
            os.environ.pop(k, None)
