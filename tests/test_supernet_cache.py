"""The built-in supernet's cache folder (issue 18, 5): every start removes what killed or failed
trainings left there that nobody uses, and keeps what may still be resumed or is in use."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from hwnas.search.supernet_cache import OLD_TEMP_HOURS, STALE_PARTIAL_DAYS, clean_cache


def _folder(path, age_s: float):
    path.mkdir()
    (path / "train_state.pt").write_bytes(b"state")
    t = time.time() - age_s
    for p in (path / "train_state.pt", path):
        os.utime(p, (t, t))
    return path


def test_start_removes_leftovers_nobody_uses_and_keeps_what_may_resume(tmp_path):
    days = STALE_PARTIAL_DAYS * 86400
    mine = _folder(tmp_path / ".efficientformerv2-aaaaaaaaaaaa.partial", 2 * days)  # this run's: it resumes
    recent = _folder(tmp_path / ".nextvit-bbbbbbbbbbbb.partial", 0.5 * days)  # may still be resumed
    old = _folder(tmp_path / ".nextvit-cccccccccccc.partial", 2 * days)  # other settings, untouched for long
    in_use = _folder(tmp_path / ".nextvit-dddddddddddd.partial", 2 * days)  # old, but its lock is held
    old_temp = _folder(tmp_path / ".efficientformerv2-eeeeeeeeeeee-k2j4h1", 2 * OLD_TEMP_HOURS * 3600)  # hwnas < 0.2
    new_temp = _folder(tmp_path / ".efficientformerv2-ffffffffffff-x8q1zz", 0.1 * OLD_TEMP_HOURS * 3600)
    done = _folder(tmp_path / "nextvit-cccccccccccc", 3 * days)  # a finished supernet: never touched
    lock = tmp_path / ".nextvit-dddddddddddd.lock"
    lock.touch()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time\n"
                               f"f = open({str(lock)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        removed = clean_cache(tmp_path, keep="efficientformerv2-aaaaaaaaaaaa")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(removed) == sorted([old, old_temp])
    assert all(p.is_dir() for p in (mine, recent, in_use, new_temp, done)) and not old.exists()


def _search_cfg(tmp_path):
    from hwnas.search.app import compose_config
    return compose_config(["+target=onnxruntime_cpu", "progress=false", f"pretrain.cache_dir={tmp_path / 'cache'}"])


def test_a_second_search_waits_for_the_training_of_the_first_and_uses_its_supernet(tmp_path, monkeypatch, capsys):
    """Two searches with the same settings (here two threads: flock locks of two open() calls
    exclude each other as those of two processes do) train the built-in supernet once."""
    import contextlib
    import threading
    import search_spaces
    import hwnas.train
    from hwnas.search import supernet_cache
    from hwnas.search.supernet_cache import ensure_checkpoint
    release, started, calls = threading.Event(), threading.Event(), []

    def train_supernet(tcfg, work):  # stands in for the training, which the other tests run for real
        calls.append(work)
        started.set()
        assert release.wait(60)
        work.mkdir(parents=True, exist_ok=True)
        (work / "supernet.pt").write_bytes(b"weights")
        return work / "supernet.pt"

    monkeypatch.setattr(hwnas.train, "train_supernet", train_supernet)
    real_lock, at_lock = supernet_cache._locked, threading.Event()

    @contextlib.contextmanager
    def locked(path):  # the real lock; says when the second search has come to it
        if threading.current_thread() is second:
            at_lock.set()
        with real_lock(path):
            yield

    monkeypatch.setattr(supernet_cache, "_locked", locked)
    cfg, space = _search_cfg(tmp_path), search_spaces.get_space("efficientformerv2")
    got = {}
    first = threading.Thread(target=lambda: got.setdefault("first", ensure_checkpoint(cfg, space)))
    second = threading.Thread(target=lambda: got.setdefault("second", ensure_checkpoint(cfg, space)))
    first.start()
    assert started.wait(60)
    second.start()
    assert at_lock.wait(60)
    second.join(1.0)
    assert second.is_alive()  # waiting for the lock, not training the same supernet again
    release.set()
    first.join(60)
    second.join(60)
    assert len(calls) == 1 and got["first"] == got["second"] and got["first"].read_bytes() == b"weights"
    assert got["first"].parent.name.startswith("efficientformerv2-") and not calls[0].exists()  # renamed into place
    assert "another search just trained" in capsys.readouterr().err


def test_a_training_that_fails_leaves_nothing_unless_it_can_resume(tmp_path, monkeypatch, capsys):
    import pytest
    import search_spaces
    import hwnas.train
    from hwnas.search.supernet_cache import ensure_checkpoint
    cfg, space = _search_cfg(tmp_path), search_spaces.get_space("efficientformerv2")

    def fails(checkpointed):
        def train_supernet(tcfg, work):
            work.mkdir(parents=True, exist_ok=True)
            (work / "metrics.csv").write_text("epoch\n")
            if checkpointed:
                (work / "train_state.pt").write_bytes(b"epoch 1")
            raise RuntimeError("out of memory")
        return train_supernet

    monkeypatch.setattr(hwnas.train, "train_supernet", fails(False))
    with pytest.raises(RuntimeError, match="out of memory"):  # a real failure keeps its traceback
        ensure_checkpoint(cfg, space)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # before a first checkpoint: nothing left
    monkeypatch.setattr(hwnas.train, "train_supernet", fails(True))
    with pytest.raises(RuntimeError, match="out of memory"):
        ensure_checkpoint(cfg, space)
    [work] = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert work.name.endswith(".partial") and (work / "train_state.pt").is_file()  # kept: the rerun resumes it
    assert "the same search resumes it" in capsys.readouterr().err


def test_the_cache_lock_excludes_and_leaves_no_lock_file(tmp_path):
    """Issue 24: `.lock` files stayed in the cache folder after every run. The lock still excludes a
    second holder (it enters only after the first left its block) and its file goes with the last holder."""
    from pathlib import Path
    from hwnas.search.supernet_cache import _locked
    lock, left = tmp_path / ".nextvit-aaaaaaaaaaaa.lock", tmp_path / "first-left"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from hwnas.search.supernet_cache import _locked\n"
                               "with _locked(Path(sys.argv[1])):\n"
                               "    print('locked', flush=True); time.sleep(1.0); Path(sys.argv[2]).touch()\n",
                               str(lock), str(left)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with _locked(Path(lock)):
            assert left.exists(), "entered while the first holder was inside its block"
    finally:
        holder.wait(timeout=60)
    assert not lock.exists() and not list(tmp_path.glob("*.lock")) and not list(tmp_path.glob(".*.lock"))


def test_opening_a_study_leaves_no_lock_file(tmp_path):
    import optuna
    from hwnas.search.study import default_storage, open_study
    open_study(default_storage(tmp_path), "s", ["maximize"], optuna.samplers.RandomSampler(seed=0))
    assert (tmp_path / "study.db").exists() and not list(tmp_path.glob("*.lock"))
