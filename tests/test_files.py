"""`hwnas.files`: a file (or a directory) appears whole or not at all; a failure leaves the old one."""
import pytest

from hwnas.files import atomic_path, atomic_write


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
