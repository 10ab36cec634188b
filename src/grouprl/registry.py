"""One small generic registry: each extension kind (advantage, ratio, objective, reward, task, rollout
backend ...) gets one instance, owned by the package that defines the kind.

Registering is a decorator; it may attach facts about the entry (``register("x", params=("eps",))``) that the
package reads back with ``info``. Lookup is by name, and an unknown name is an error that lists the known
ones, so a typo in a config never falls through to a default. This module imports nothing of the project.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

F = TypeVar("F", bound=Callable)


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered. Both a KeyError (lookup) and a ValueError (bad input)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[F]):
    """A named table of functions that all share one signature (documented where the kind is defined)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._table: dict[str, F] = {}
        self._info: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **info: Any) -> Callable[[F], F]:
        """Decorator: add ``fn`` under ``name``, with ``info`` (facts the owning package defines)."""

        def add(fn: F) -> F:
            if name in self._table:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._table[name], self._info[name] = fn, info
            return fn

        return add

    def info(self, name: str) -> dict[str, Any]:
        """What was registered with ``name`` besides the function (``{}`` if nothing)."""
        self.get(name)
        return self._info[name]

    def get(self, name: str) -> F:
        """The function registered as ``name``; an unknown name lists the known ones."""
        try:
            return self._table[name]
        except KeyError:
            known = ", ".join(self.names())
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._table)

    def __iter__(self) -> Iterator[str]:
        """The registered names in registration order (for kinds whose entries compose in a fixed order)."""
        return iter(self._table)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is registered."""
        return name in self._table
