"""A small name -> factory registry shared by every extension point (models, connectors, data, spaces)."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, Generic, Iterator, List, TypeVar

__all__ = ["Registry", "UnknownNameError", "did_you_mean"]

T = TypeVar("T", bound=Callable[..., Any])


class UnknownNameError(KeyError, ValueError):
    """A name that is not in a registry; its message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0])


def did_you_mean(value: str, choices: List[str]) -> str:
    """Return ' (did you mean "x"?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Registry(Generic[T]):
    """Maps names to factories; duplicates raise, unknown names raise listing the valid ones.

    Each entry may carry metadata (e.g. a model's native input size) for filters such as
    "every student that fits this data set".
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: Dict[str, T] = {}
        self._meta: Dict[str, Dict[str, Any]] = {}

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name", key=value)``."""

        def add(fn: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            self._meta[name] = dict(meta)
            return fn

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown(name)) from None

    def unknown(self, name: str, field: str | None = None) -> str:
        """The one-line error message for an unknown name."""
        names = self.names()
        field = field or self.kind
        return f"{field}: unknown {self.kind} {name!r}{did_you_mean(name, names)}; choose from: {', '.join(names)}"

    def meta(self, name: str) -> Dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def names(self, **where: Any) -> List[str]:
        """Registered names in registration order, optionally filtered by metadata equality."""
        return [n for n in self._entries if all(self._meta[n].get(k) == v for k, v in where.items())]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
