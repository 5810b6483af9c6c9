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
