"""Files that appear whole or not at all: written under a temporary name beside the target, then
renamed over it (one `os.replace`, atomic on one filesystem). A reader -- or a rerun after a kill --
sees the previous file or the new one, never half of one.

    atomic_write(path, text_or_bytes)           # a file of data
    with atomic_path(path) as tmp:              # anything written by name: torch.save, an ONNX
        torch.onnx.export(model, x, str(tmp))   # export, a Core ML .mlpackage directory
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
from pathlib import Path
from typing import Iterator

_COUNTER = itertools.count()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh temporary path beside `path` (a hidden name, same suffix) to write a file or a
    directory to; it replaces `path` when the block ends normally and is removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}-{next(_COUNTER)}.tmp{path.suffix}")
    _remove(tmp)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # os.replace cannot replace a non-empty directory
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def atomic_write(path: str | os.PathLike, data: str | bytes, fsync: bool = True) -> Path:
    """Write `data` (text as UTF-8) to `path` atomically; `fsync` flushes it to the disk before the
    rename, so a power cut too leaves the old file or the new one."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return path


__all__ = ["atomic_path", "atomic_write"]
