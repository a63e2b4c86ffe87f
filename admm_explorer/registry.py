"""One registry type for models, datasets and stage kinds, and the one "did you mean" every lookup uses."""
from __future__ import annotations

import difflib
from typing import Generic, Iterable, Iterator, Mapping, TypeVar

from .errors import UnknownName

T = TypeVar("T")


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """'; did you mean a, b?' for close matches of `name`, or ''."""
    close = difflib.get_close_matches(str(name), list(names), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else ""


def lookup(mapping: Mapping[str, T], name: str, what: str) -> T:
    """mapping[name], or UnknownName naming close matches and everything known."""
    if name in mapping:
        return mapping[name]
    raise UnknownName(f"unknown {what} {name!r}{did_you_mean(name, mapping)} (known: {', '.join(sorted(mapping))})")


class Registry(Generic[T]):
    """Names -> entries, in registration order. `registry[name]` and `get(name)` raise UnknownName with close
    matches; `register` refuses a name twice."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        return lookup(self._entries, name, self.what)

    __getitem__ = get

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self):
        return self._entries.items()

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
