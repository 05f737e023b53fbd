"""A small name -> object registry shared by methods, datasets, exporters and backends."""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from .errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; a miss names the closest matches instead of a bare KeyError."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj
        return add

    def get(self, name: str, *, file: str | None = None, key: str | None = None) -> T:
        if name not in self._items:
            raise BadInput(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}",
                           file=file, key=key, hint=self.suggest(name))
        return self._items[name]

    def suggest(self, name: str) -> str | None:
        close = difflib.get_close_matches(name, self.names(), n=3)
        return f"did you mean {' or '.join(close)}?" if close else None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self):
        return sorted(self._items.items())
