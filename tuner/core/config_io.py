"""Reading config files: the one-line ``ConfigError`` for bad input, and YAML parsed as data, never code,
with its aliases bounded (``tuner.core.config`` builds its dataclasses on top)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import yaml

__all__ = ["ConfigError", "load_yaml", "parse_yaml"]


class ConfigError(ValueError):
    """Bad user input: a one-line message naming the field, the value and what is allowed."""


def load_yaml(path: Union[str, Path]) -> Dict[str, Any]:
    """Parse a YAML config as data, never code (safe_load, aliases bounded)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config: file {str(p)!r} does not exist")
    return parse_yaml(p.read_text(), str(p))


def parse_yaml(text: str, where: str, field: str = "config") -> Dict[str, Any]:
    """The mapping a YAML document holds; a one-line ConfigError naming ``field`` and ``where`` otherwise."""
    try:
        data = yaml.load(text, Loader=_BoundedLoader) or {}
    except _TooManyAliases:
        raise ConfigError(f"{field}: {where} uses more than {_MAX_ALIASES} YAML aliases; write the values out") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{field}: {where}{line} is not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{field}: {where} must hold a mapping of field: value, got {type(data).__name__}")
    return data


_MAX_ALIASES = 100  # a config needs a handful; nested aliases grow a document exponentially


class _TooManyAliases(Exception):
    pass


class _BoundedLoader(yaml.SafeLoader):
    """``yaml.safe_load`` (data, never code) that refuses documents with more than ``_MAX_ALIASES`` aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > _MAX_ALIASES:
                raise _TooManyAliases()
        return super().compose_node(parent, index)
