"""Ctrl-C is never lost (hwnas._interrupt): a KeyboardInterrupt swallowed by a finaliser is raised again at
the next step of a long loop, and the search's loop is such a step (CI once saw a search go on after SIGINT)."""
import subprocess
import sys
import textwrap

import optuna
import pytest

from hwnas import _interrupt
from hwnas.search.study import run_trials

SWALLOWED = textwrap.dedent("""
    import os, signal, sys
    from hwnas import _interrupt
    assert _interrupt.install() is signal.default_int_handler
    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # the handler runs in here: its KeyboardInterrupt is swallowed
            for _ in range(10000):
                pass
    try:
        for step in range(50):
            if step == 3:
                Finalised()
            {check}
        print("finished")
    except KeyboardInterrupt:
        print("interrupted at", step)
        sys.exit(130)
""")


@pytest.mark.parametrize("check", [True, False])
def test_a_ctrl_c_swallowed_by_a_finaliser_ends_the_loop_at_its_next_check(check):
    code = SWALLOWED.format(check="_interrupt.check()" if check else "pass")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Exception ignored" in r.stderr and "KeyboardInterrupt" in r.stderr, r.stderr  # it was swallowed
    if check:
        assert (r.returncode, r.stdout.strip()) == (130, "interrupted at 3"), (r.stdout, r.stderr)
    else:  # what happened before: the loop went on
        assert (r.returncode, r.stdout.strip()) == (0, "finished"), (r.stdout, r.stderr)


def test_the_search_loop_checks_before_every_trial(monkeypatch):
    study = optuna.create_study(directions=["maximize"])
    asked = []
    monkeypatch.setattr(_interrupt, "_requested", True)
    with pytest.raises(KeyboardInterrupt):
        run_trials(study, 5, lambda t: asked.append(t) or [1.0], progress=False)
    assert asked == [] and not study.trials


def test_install_leaves_a_handler_it_did_not_replace_alone():
    import signal
    mine = lambda *a: None  # noqa: E731 -- a program embedding the app, handling Ctrl-C itself
    before = signal.signal(signal.SIGINT, mine)
    try:
        assert _interrupt.install() is None and signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, before)
