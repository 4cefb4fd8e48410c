"""Where a sweep run as a Ray job may write: not in Ray's temporary copy of the job's working_dir.

``ray job submit --working-dir .`` uploads the folder and runs the entrypoint in an unpacked copy
under Ray's session folder (``.../runtime_resources/working_dir_files/_ray_pkg_*``), which Ray
deletes or re-extracts. Records written relative to the working directory would land there, so a
job's defaults become absolute paths beside ``storage_path``, and a path inside the copy is refused
(docs/architecture.md, "Running on a cluster").
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from tuner.core.config import ConfigError
from tuner.core.uri import is_uri, sqlite_file

#: set by Ray's job supervisor for the entrypoint: the job's runtime_env and metadata, as JSON
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def job_copy() -> Optional[Path]:
    """The unpacked working_dir this process runs in as a Ray job, or None outside a job (or without a working_dir)."""
    raw = os.environ.get(JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        runtime_env = json.loads(raw).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return None
    return Path.cwd().resolve() if runtime_env.get("working_dir") else None


def refuse_inside(field: str, path: Optional[str], copy: Optional[Path], flag: Optional[str] = None) -> None:
    """ConfigError naming ``field`` when the local ``path`` lies in the job's working-dir ``copy``.

    Args:
        path: a local path or ``sqlite:///`` URI (anything else, e.g. s3:// or http://, passes).
        flag: the CLI flag that sets the field (None: set in the config file only), for the message.
    """
    if copy is None or path is None:
        return
    local = sqlite_file(path) or (None if is_uri(path) else Path(path).expanduser())
    if local is None:
        return
    resolved = local.resolve()
    if resolved == copy or copy in resolved.parents:
        raise ConfigError(
            f"{field}: {path} is inside Ray's temporary copy of this job's working_dir ({copy}), which Ray "
            f"deletes; give {flag or field} an absolute path outside it (on a cluster: storage every node sees)")
