"""`hwnas._files`: a file (or a directory) appears whole or not at all; a failure leaves the old one."""
import pytest

from hwnas._files import atomic_path, atomic_write


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.md"
    atomic_write(path, "old")
    atomic_write(path, b"new \xe2\x9c\x93")
    assert path.read_text() == "new ✓"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


def test_a_failure_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("complete old export")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp.suffix == ".onnx" and tmp != path
            tmp.write_text("half of a new")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "complete old export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_directory_is_replaced_only_by_a_complete_one(tmp_path):
    path = tmp_path / "model.mlpackage"
    for run, files in (("a", ["weights.bin", "model.mil"]), ("b", ["model.mil"])):
        with atomic_path(path) as tmp:
            tmp.mkdir()
            for name in files:
                (tmp / name).write_text(run)
    assert sorted(p.name for p in path.iterdir()) == ["model.mil"] and (path / "model.mil").read_text() == "b"
    with pytest.raises(OSError):
        with atomic_path(path) as tmp:
            tmp.mkdir()
            (tmp / "model.mil").write_text("c")
            raise OSError("disk full")
    assert (path / "model.mil").read_text() == "b" and [p.name for p in tmp_path.iterdir()] == ["model.mlpackage"]


def test_what_a_dead_writer_left_is_removed_and_a_live_writers_temporaries_are_kept(tmp_path):
    """remove_stale_temps (issue 18, 5 and 6): a temporary name carries its writer's pid and start
    time; what a writer that died mid-write left (a real process ending without cleanup, as SIGKILL
    does) is removed, a live writer's temporaries and every other file are kept."""
    import os
    import subprocess
    import sys
    from hwnas._files import owner_tag, remove_stale_temps
    code = ("import os, sys; from hwnas._files import atomic_path, owner_tag\n"
            "os.mkdir(f'{sys.argv[1]}/.export-{owner_tag()}-1.tmp')\n"
            "with atomic_path(sys.argv[1] + '/model.onnx') as tmp:\n"
            "    tmp.write_text('half of a model'); os._exit(0)  # no cleanup runs, as after a SIGKILL\n")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    dead = sorted(p.name for p in tmp_path.iterdir())
    assert len(dead) == 2 and dead[0].startswith(".export-") and dead[1].startswith(".model.")
    live = [f".export-{owner_tag()}-2.tmp", f".report.{os.getpid()}-7.tmp.md"]
    pid, ticks = owner_tag().split("-")
    reused = f".export-{pid}-{int(ticks) + 1}-3.tmp"  # this pid, another start time: a dead writer's pid reused
    kept = [".hydra", "model.onnx", ".notes.tmp", *live]
    for name in (*live, reused, ".export-1a2b3c.tmp", ".hydra"):  # .export-<random>.tmp: an older hwnas's
        (tmp_path / name).mkdir()
    for name in ("model.onnx", ".notes.tmp"):
        (tmp_path / name).write_text("keep")
    removed = remove_stale_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted([*dead, reused, ".export-1a2b3c.tmp"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


@pytest.mark.parametrize("ending, left_behind", [("pass", False), ("raise SystemExit('failed')", False),
                                                 ("os._exit(0)", True)])
def test_a_scripts_scratch_folder_goes_at_exit_or_with_the_next_sweep(tmp_path, ending, left_behind, monkeypatch):
    """scratch_until_exit (the experiments' scratch folders): removed when the script ends, normally or
    by an error; a process ended without cleanup (as by SIGKILL) leaves it to the next sweep."""
    import os
    import subprocess
    import sys
    from hwnas._files import sweep_dead_temps
    code = ("import os, sys; from hwnas._files import scratch_until_exit\n"
            "d = scratch_until_exit('script'); (d / 'model.pt2').write_bytes(b'x' * 1000); print(d)\n" + ending)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    scratch = tmp_path / os.path.basename(r.stdout.strip())
    assert scratch.name.startswith("hwnas-script-") and scratch.parent == tmp_path, r.stderr
    assert scratch.exists() == left_behind
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    removed = sweep_dead_temps()
    assert removed == ([scratch] if left_behind else []) and not scratch.exists()
