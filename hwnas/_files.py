"""Files that appear whole or not at all: written under a temporary name beside the target, then
renamed over it (one `os.replace`, atomic on one filesystem). A reader -- or a rerun after a kill --
sees the previous file or the new one, never half of one.

    atomic_write(path, text_or_bytes)           # a file of data
    with atomic_path(path) as tmp:              # anything written by name: torch.save, an ONNX
        torch.onnx.export(model, x, str(tmp))   # export, a Core ML .mlpackage directory

A temporary name carries its writer's process id (`owner_tag`), so what a killed writer left
(SIGKILL runs no cleanup) is recognised and removed by the next run in that folder
(`remove_stale_temps`), and never what a live writer is still writing.

Scratch space outside a run folder (the ONNX files a profile times, in the system temp folder) and
an export's temporary folder inside the user's output folder are also findable by any later run of
any app (`sweep_dead_temps`, called by `hwnas.cli.run_app` at start-up):

    with owned_temp_dir("ort") as d:            # <tmp>/hwnas-ort-<pid>-<ticks>-XXXX, removed at the end
    d = scratch_until_exit("deploy-speed")      # the same, removed when the process exits (a script's scratch)
    register_temp(path)                         # a temp path elsewhere: listed in <tmp>/hwnas-temps/<pid>-<ticks>
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

_COUNTER = itertools.count()
#: temporary names of `atomic_path` (.<stem>.<pid>-<n>.tmp<suffix>) and export bundles (.export-<pid>-<ticks>-<x>.tmp)
_TEMP = re.compile(r"^\.(?:.+\.(?P<pid>\d+)-\d+\.tmp(?:\..*)?|export-(?P<xpid>\d+)-(?P<ticks>\d+|x)-.+\.tmp)$")


def _start_ticks(pid: int) -> str:
    """When process `pid` started (clock ticks since boot), to tell a reused pid from the original."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "x"


def owner_tag() -> str:
    """`<pid>-<start ticks>` of this process, for temporary names (`owner_alive` reads it back)."""
    return f"{os.getpid()}-{_start_ticks(os.getpid())}"


def owner_alive(pid: int, ticks: str = "x") -> bool:
    """Process `pid` (started at `ticks`, when known) is alive on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return ticks == "x" or _start_ticks(pid) in (ticks, "x")


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders in `folder` whose writer is dead (killed mid-write);
    returns what was removed. An export folder of an hwnas before owner tags (`.export-<random>.tmp`)
    has no owner to ask and is removed too."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        if not p.name.startswith("."):
            continue
        m = _TEMP.match(p.name)
        if m:
            pid, ticks = (int(m["pid"]), "x") if m["pid"] else (int(m["xpid"]), m["ticks"])
            stale = not owner_alive(pid, ticks)
        else:
            stale = p.name.startswith(".export-") and p.name.endswith(".tmp") and p.is_dir()
        if stale:
            _remove(p)
            removed.append(p)
    return removed


#: <tmp>/hwnas-<what>-<pid>-<ticks>-<random>: scratch folders of `owned_temp_dir`
_SCRATCH = re.compile(r"^hwnas-[a-z]+-(?P<pid>\d+)-(?P<ticks>\d+|x)-")
_REGISTERED: set[str] = set()


def temp_root() -> Path:
    import tempfile
    return Path(tempfile.gettempdir())


def _registry() -> Path:
    return temp_root() / "hwnas-temps"


@contextlib.contextmanager
def owned_temp_dir(what: str) -> Iterator[Path]:
    """A fresh scratch folder in the system temp folder, named with this process's owner tag (so a
    later run removes it if this process is killed), removed when the block ends."""
    import tempfile
    d = Path(tempfile.mkdtemp(prefix=f"hwnas-{what}-{owner_tag()}-", dir=temp_root()))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def scratch_until_exit(what: str) -> Path:
    """An `owned_temp_dir` for a whole script: removed when the interpreter exits (normally or by an
    exception), and by the next `sweep_dead_temps` when the process is killed."""
    import atexit
    stack = contextlib.ExitStack()
    d = stack.enter_context(owned_temp_dir(what))
    atexit.register(stack.close)
    return d


def register_temp(path: str | os.PathLike) -> None:
    """Record a temporary path (named by `_TEMP`, anywhere) for this process: if it is killed before
    removing it, the next `sweep_dead_temps` of any app removes it."""
    path = os.path.abspath(path)
    if path in _REGISTERED:
        return
    reg = _registry()
    reg.mkdir(exist_ok=True)
    with open(reg / owner_tag(), "a") as f:
        f.write(path + "\n")
    if not _REGISTERED:
        import atexit
        atexit.register(_forget_registry, reg / owner_tag())
    _REGISTERED.add(path)


def _forget_registry(listing: Path) -> None:
    with contextlib.suppress(OSError):
        listing.unlink()


def sweep_dead_temps() -> list[Path]:
    """Remove what killed hwnas processes left: their scratch folders in the system temp folder
    (`owned_temp_dir`) and the temporary paths they registered (`register_temp`, e.g. a killed
    extract's `.export-*.tmp` in its output folder). Only paths whose owner is dead; returns them."""
    removed: list[Path] = []
    root = temp_root()
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _SCRATCH.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and not owner_alive(int(m["pid"]), m["ticks"]):
            _remove(p)
            removed.append(p)
    reg = _registry()
    for listing in (reg.iterdir() if reg.is_dir() else []):
        pid, _, ticks = listing.name.partition("-")
        if not pid.isdigit() or owner_alive(int(pid), ticks or "x"):
            continue
        with contextlib.suppress(OSError):
            for line in listing.read_text().splitlines():
                p = Path(line)
                m = _TEMP.match(p.name)
                if m and (m["pid"] or m["xpid"]) == pid and (p.exists() or p.is_symlink()):
                    _remove(p)  # only a temporary name of that very process
                    removed.append(p)
            listing.unlink()
    return removed


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


__all__ = ["atomic_path", "atomic_write", "owned_temp_dir", "owner_alive", "owner_tag", "register_temp",
           "remove_stale_temps", "sweep_dead_temps"]
