"""Ctrl-C that is never lost: `hwnas.cli.run_app` installs the handler, long loops call `check`.

Python raises KeyboardInterrupt wherever the main thread is when SIGINT arrives. Where that is a
finaliser (`__del__`, a weakref callback) or a library's catch-all, the exception is swallowed
("Exception ignored in ...") and the loop goes on: a search of 100000 trials then never ends (CI
under load, once: SIGINT sent after two trials, no exit within 120 s). The handler records the
request before it raises, and `check`, called at every step of a long loop, raises it again, so a
swallowed Ctrl-C still ends the app at the next step, with the app's one line.
"""
from __future__ import annotations

import signal
import threading

_requested = False


def _handler(signum, frame) -> None:
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install():
    """Handle SIGINT with the recording handler; returns the handler it replaced (pass it to
    `restore`), or None where nothing was installed: off the main thread, or where SIGINT is not
    Python's default (a program embedding the app handles Ctrl-C itself)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    before = signal.getsignal(signal.SIGINT)
    if before is not signal.default_int_handler:
        return None
    signal.signal(signal.SIGINT, _handler)
    return before


def restore(before) -> None:
    global _requested
    if before is not None:
        signal.signal(signal.SIGINT, before)
        _requested = False


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even where its first KeyboardInterrupt was swallowed."""
    if _requested:
        raise KeyboardInterrupt
