"""The errors hwnas reports to its users: every one derives from `HwnasError`.

    try:
        ...
    except hwnas.HwnasError as e:   # bad input: the message is the whole story
        print(e)

Each error is defined where it is raised and keeps a standard mixin where callers relied on one
(`ArchError` is also a `ValueError`, `CheckpointError` a `RuntimeError`, `TensorRTUnavailable`
an `ImportError`). The apps print a `HwnasError` as one line and exit with status 2
(`hwnas.cli`). `HwnasError` itself lives in `search_spaces.errors`, the lowest layer, so that
every package can derive from it.

The checks at the bottom are what the typed config schemas run in `__post_init__`, so a value out
of range fails when the config is read (at an app's start-up), naming the key, the value and what
it may be:

    check_min("train", "epochs", self.epochs, 1)    # ConfigError: train.epochs=0: must be >= 1
"""
from __future__ import annotations

import math
from typing import Any, Iterable

from search_spaces.errors import HwnasError


class ConfigError(HwnasError, ValueError):
    """A setting that cannot be used (a misspelt key, a value out of range); the message names it."""


def _fail(error: type, section: str, key: str, value: Any, what: str, hint: str) -> None:
    name = f"{section}.{key}" if section else key
    raise error(f"{name}={value!r}: {what}" + (f" ({hint})" if hint else ""))


def _finite(value: Any) -> bool:
    """inf passes every lower bound, and an infinite rate, MES constant or count is never meant."""
    try:
        return math.isfinite(value)
    except TypeError:  # not a number: the comparison above has failed it already, or will
        return True


def _a_number(value: Any) -> str:
    return "" if _finite(value) else "a finite number "


def check_min(section: str, key: str, value: Any, low: float, *, optional: bool = False,
              hint: str = "", error: type = ConfigError) -> None:
    """`value >= low` (None too, when `optional`)."""
    if value is None and optional:
        return
    if value is None or not value >= low or not _finite(value):
        _fail(error, section, key, value, f"must be {_a_number(value)}>= {low}" + (" or null" if optional else ""), hint)


def check_positive(section: str, key: str, value: Any, *, optional: bool = False, hint: str = "",
                   error: type = ConfigError) -> None:
    """`value > 0` (None too, when `optional`)."""
    if value is None and optional:
        return
    if value is None or not value > 0 or not _finite(value):
        _fail(error, section, key, value, f"must be {_a_number(value)}> 0" + (" or null" if optional else ""), hint)


def check_range(section: str, key: str, value: Any, low: float, high: float, *, optional: bool = False,
                hint: str = "", error: type = ConfigError) -> None:
    """`low <= value <= high` (None too, when `optional`)."""
    if value is None and optional:
        return
    if value is None or not low <= value <= high:
        _fail(error, section, key, value, f"must be in [{low}, {high}]" + (" or null" if optional else ""), hint)


def check_choice(section: str, key: str, value: Any, allowed: Iterable[Any], *, hint: str = "",
                 error: type = ConfigError) -> None:
    """`value` is one of `allowed`."""
    allowed = list(allowed)
    if value not in allowed:
        _fail(error, section, key, value, f"allowed: {', '.join(map(str, allowed))}", hint)


__all__ = ["ConfigError", "HwnasError", "check_choice", "check_min", "check_positive", "check_range"]
