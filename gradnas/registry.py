"""Name → factory registries: every swappable part of gradnas is chosen by name."""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from .errors import GradnasError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories with a helpful error for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = obj
            return obj

        return add

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise GradnasError(f"unknown {self.kind} {name!r}; choose from {', '.join(sorted(self._entries))}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)
