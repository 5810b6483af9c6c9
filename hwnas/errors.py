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
"""
from search_spaces.errors import HwnasError


class ConfigError(HwnasError, ValueError):
    """A setting that cannot be used (a misspelt key, a value out of range); the message names it."""


__all__ = ["ConfigError", "HwnasError"]
