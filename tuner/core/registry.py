"""A small name -> factory registry shared by every extension point (models, connectors, data, spaces).

A name and its facts (metadata) are declared apart from the factory that builds it: the shipped models,
connectors and data sets are declared in ``tuner.core.catalog``, which imports nothing heavy, and the module
that builds them (torch) only provides each declared name's factory. Names and facts are read without the
factories' modules, so a bad name in a config is refused before torch loads (docs/architecture.md, "Layers").
"""
from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Dict, Generic, Iterator, List, Mapping, Optional, Sequence, TypeVar

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

    Each name carries its facts (e.g. a model's native input size) for filters such as "every student
    that fits this data set". A name is either declared (``declare``: the name and its facts, no factory)
    and later provided (``provide``: the factory of a declared name), or registered in one call
    (``register``: both, for a user's own model). Names, facts and the unknown-name error read only the
    declarations; ``get`` imports ``provider`` (the module whose import provides every declared factory)
    the first time a declared name's factory is asked for.

    Args:
        kind: what is registered, as error messages name it (``model``).
        facts: the facts every name must declare, no more, no fewer (empty: any).
        provider: the module that provides the declared names' factories (``tuner.core.models``).
        check: ``check(name, factory, facts)`` raises when a factory does not fit its name's facts.
    """

    def __init__(self, kind: str, facts: Sequence[str] = (), provider: Optional[str] = None,
                 check: Optional[Callable[[str, T, Mapping[str, Any]], None]] = None) -> None:
        self.kind = kind
        self.facts = tuple(facts)
        self.provider = provider
        self._check = check
        self._meta: Dict[str, Dict[str, Any]] = {}  # declared names, in declaration order
        self._entries: Dict[str, T] = {}  # their factories, once provided

    def declare(self, name: str, **facts: Any) -> None:
        """Add ``name`` with its facts and no factory yet (``provide`` gives it one)."""
        if name in self._meta:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if self.facts and set(facts) != set(self.facts):
            wrong = sorted(set(self.facts) ^ set(facts))
            raise ValueError(f"{self.kind} {name!r}: facts {', '.join(wrong)} missing or unknown; "
                             f"a {self.kind} declares exactly {', '.join(self.facts)}")
        self._meta[name] = dict(facts)

    def provide(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.provide("name")``, the factory of a declared name (each name once)."""

        def add(fn: T) -> T:
            if name not in self._meta:
                raise ValueError(f"{self.kind} {name!r} is not declared: declare it with its facts "
                                 f"({', '.join(self.facts) or 'any'}) first, or register it with them in one call")
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already provided")
            if self._check is not None:
                self._check(name, fn, self._meta[name])
            self._entries[name] = fn
            return fn

        return add

    def register(self, name: str, **facts: Any) -> Callable[[T], T]:
        """Decorator: ``@REGISTRY.register("name", key=value)`` declares ``name`` and provides its factory."""

        def add(fn: T) -> T:
            self.declare(name, **facts)
            try:
                return self.provide(name)(fn)
            except Exception:
                del self._meta[name]
                raise

        return add

    def get(self, name: str) -> T:
        """The factory of ``name``; a declared name's first use imports ``provider``."""
        if name not in self._meta:
            raise UnknownNameError(self.unknown(name))
        if name not in self._entries and self.provider is not None:
            importlib.import_module(self.provider)  # the factories' module (torch): only once one is built
        try:
            return self._entries[name]
        except KeyError:
            raise RuntimeError(f"{self.kind} {name!r} is declared but no factory provides it "
                               f"(importing {self.provider} did not)") from None

    def check_provided(self) -> None:
        """Raise unless every declared name has its factory: ``provider`` calls it once it has provided them."""
        missing = [n for n in self._meta if n not in self._entries]
        if missing:
            raise RuntimeError(f"{self.kind} {', '.join(map(repr, missing))} declared but provided by no factory "
                               f"after {self.provider or 'its module'} was imported")

    def provided(self) -> List[str]:
        """The names that have a factory now, in declaration order."""
        return [n for n in self._meta if n in self._entries]

    def unknown(self, name: str, field: str | None = None) -> str:
        """The one-line error message for an unknown name."""
        names = self.names()
        field = field or self.kind
        return f"{field}: unknown {self.kind} {name!r}{did_you_mean(name, names)}; choose from: {', '.join(names)}"

    def meta(self, name: str) -> Dict[str, Any]:
        if name not in self._meta:
            raise UnknownNameError(self.unknown(name))
        return dict(self._meta[name])

    def names(self, **where: Any) -> List[str]:
        """Registered names in declaration order, optionally filtered by metadata equality."""
        return [n for n in self._meta if all(self._meta[n].get(k) == v for k, v in where.items())]

    def __contains__(self, name: object) -> bool:
        return name in self._meta

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta)

    def __len__(self) -> int:
        return len(self._meta)
