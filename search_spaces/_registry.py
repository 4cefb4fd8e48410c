"""The search-space registry: name -> ``SearchSpace``."""
from __future__ import annotations

from typing import List

from search_spaces._base import SearchSpace
from tuner.core.registry import Registry, UnknownNameError

__all__ = ["SPACES", "register_space", "get_space", "list_spaces", "describe_spaces"]

SPACES: Registry = Registry("search space")


def register_space(space: SearchSpace) -> SearchSpace:
    """Add ``space`` under ``space.name`` (duplicates raise) and return it."""
    return SPACES.register(space.name, description=space.description)(space)


def get_space(name: str) -> SearchSpace:
    """The registered space ``name``.

    Raises:
        UnknownNameError: unknown name; the message suggests the closest one and lists them all.
    """
    if name not in SPACES:
        raise UnknownNameError(SPACES.unknown(name, field="space"))
    return SPACES.get(name)


def list_spaces() -> List[str]:
    """Registered space names, in registration order."""
    return SPACES.names()


def describe_spaces() -> str:
    """One line per space: the name padded to a column, then its description (``--list-spaces``)."""
    names = list_spaces()
    width = max((len(n) for n in names), default=0)
    return "\n".join(f"{n.ljust(width)}  {SPACES.get(n).description}" for n in names)
