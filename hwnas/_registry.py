"""One registry of named plug-ins (targets, export formats, search strategies, datasets): what each
extension axis shares -- add under a name (a later one of that name replaces the earlier, in its
place), look up with one clear error, list in a stated order. The axes keep their own checks of
what they register and their own public names (`register_target`, `get_format`, ...) over it.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Named entries of one kind. Reads like a read-only dict (`reg[name]` raises `KeyError`, `.get`,
    `in`, iteration in registration order); `lookup(name)` is the user-facing get: an unknown name
    raises `error` with "unknown <kind> 'name' (allowed: a, b, c)" and `hint` (how to add one).

    `sort`: whether `names()` lists alphabetically (True) or in registration order (False, where the
    order means something, as the order an export writes its formats in)."""

    def __init__(self, kind: str, error: type[Exception], hint: str = "", sort: bool = True):
        self.kind, self.error, self.hint, self.sort = kind, error, hint, sort
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register `entry` as `name`, replacing an earlier entry of that name (at its place in the order)."""
        if not isinstance(name, str) or not name:
            raise self.error(f"a {self.kind} needs a non-empty name, got {name!r}")
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> T | None:
        """Forget `name` (a plug-in test cleaning up after itself); the entry removed, or None."""
        return self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries) if self.sort else list(self._entries)

    def unknown(self, name: object) -> Exception:
        """The error for a name that is not registered (for callers that check several names at once)."""
        hint = f"; {self.hint}" if self.hint else ""
        return self.error(f"unknown {self.kind} {name!r} (allowed: {', '.join(self.names())}){hint}")

    def lookup(self, name: str) -> T:
        """The entry registered as `name`; an unknown name raises `error`, listing the known ones."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise self.unknown(name) from None

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
