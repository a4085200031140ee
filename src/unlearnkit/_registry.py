"""One generic name -> object registry (the timm ``@register_model`` idiom).

Registration happens on import, by decorator; ``get`` suggests close names for typos and ``list``
filters with shell-style globs.
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from unlearnkit.errors import UnlearnkitError, suggest

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of entries (methods, metrics, datasets, models)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that stores ``obj`` under ``name`` and returns it unchanged."""

        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins", stacklevel=2)
            self._entries[name] = obj
            return obj

        return deco

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` under ``name`` without a decorator."""
        return self.register(name)(obj)

    def get(self, name: str) -> T:
        """Return the entry called ``name``; an unknown name raises with suggestions."""
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise UnlearnkitError(
                f"unknown {self.kind} {name!r}{suggest(name, self._entries)}; known: {known}"
            ) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Sorted names matching the glob ``pattern``."""
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)
