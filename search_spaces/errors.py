"""`HwnasError`: the one base of every error hwnas reports to its user.

A `HwnasError` means bad input -- a setting, a file, an architecture -- and its message names the
problem and the fix; an app prints it as one line and exits with status 2. Any other exception is
a bug and keeps its traceback. The class lives in the lowest package so that `search_spaces`,
`supernet` and `hwnas` all derive their errors from it without an upward import; `hwnas.HwnasError`
and `hwnas.errors.HwnasError` are this class.
"""


class HwnasError(Exception):
    """Bad input to hwnas; the message says what is wrong and what to do about it."""


__all__ = ["HwnasError"]
