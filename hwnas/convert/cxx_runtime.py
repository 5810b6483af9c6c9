"""The C++ runtime an AOTInductor package needs, and loads that cannot crash the caller.

An AOTInductor package holds a `wrapper.so` that the system C++ compiler built against its own
libstdc++. On the GPU machine (torch 2.11.0+cu130, g++ 13) loading one dies with SIGSEGV inside
the package's `std::regex` (`parse_device_str`, from `AOTInductorModelContainer`'s constructor)
unless g++'s libstdc++ is preloaded (`LD_PRELOAD`): the process resolves the C++ runtime's symbols
from another library first. Preloading is only possible when the process starts, so:

- `plan_preload` decides, from plain data (the environment, the libstdc++ files this process has
  mapped, g++'s libstdc++ and their GLIBCXX versions), whether a process should restart with g++'s
  libstdc++ preloaded; `ensure_preloaded` does it (`os.execve`, once) -- the apps call it at start
  when they will load a package;
- `run_isolated` runs a piece of code (a package load) in a child process first, so a load that
  would crash is reported as one line naming the cause and the work-around (`CrashError`), never
  as a segfault of the caller.

Torch-free on purpose: it must be usable before torch is imported.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from hwnas.errors import HwnasError

#: set in the environment of a process that restarted itself with g++'s libstdc++ preloaded (no second restart)
REEXEC_ENV = "HWNAS_LIBSTDCXX_PRELOADED"
#: `HWNAS_LIBSTDCXX_PRELOAD=0` turns the restart off (the crash is then reported by the probe, not fixed)
SWITCH_ENV = "HWNAS_LIBSTDCXX_PRELOAD"

_GLIBCXX = re.compile(rb"GLIBCXX_3\.4(?:\.(\d+))?\x00")


class CrashError(HwnasError, RuntimeError):
    """Code run in a child process (a package load) crashed it: the caller would have crashed too."""


def glibcxx_version(path: str | os.PathLike) -> int:
    """The newest `GLIBCXX_3.4.N` symbol version a libstdc++ file defines (N; 0 for plain 3.4), or -1
    where the file cannot be read or defines none."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return -1
    versions = [int(m.group(1) or 0) for m in _GLIBCXX.finditer(data)]
    return max(versions, default=-1)


def mapped_libstdcxx(maps: str | None = None) -> list[str]:
    """The libstdc++ files mapped into this process (resolved paths, in the order of `/proc/self/maps`,
    or of the text `maps` given)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return []
    seen: dict[str, None] = {}
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and "libstdc++.so" in Path(parts[5]).name:
            seen[os.path.realpath(parts[5].strip())] = None
    return list(seen)


def compiler_libstdcxx(cxx: str | None = None) -> str | None:
    """The libstdc++ that the C++ compiler AOTInductor uses (`$CXX`, else `g++`) links against:
    `g++ -print-file-name=libstdc++.so.6`, resolved; None where there is no such compiler or file."""
    cxx = cxx or os.environ.get("CXX") or "g++"
    try:
        out = subprocess.run([cxx, "-print-file-name=libstdc++.so.6"], capture_output=True, text=True,
                             timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    if not out or os.sep not in out or not os.path.isfile(out):
        return None  # the compiler prints the bare name when it has no such file
    return os.path.realpath(out)


@dataclass(frozen=True)
class PreloadPlan:
    """Whether to restart with `path` preloaded (`path` None: no restart), and why, in one line."""
    path: str | None
    reason: str


def plan_preload(environ: Mapping[str, str], mapped: Sequence[str], compiler_lib: str | None,
                 version: Callable[[str], int] = glibcxx_version) -> PreloadPlan:
    """Should a process that will load AOTInductor packages restart with `compiler_lib` (g++'s
    libstdc++) in `LD_PRELOAD`? Yes unless: it was turned off (`HWNAS_LIBSTDCXX_PRELOAD=0`), it is
    already preloaded or this process already restarted once, there is no compiler libstdc++, or a
    libstdc++ this process has mapped is newer than the compiler's (preloading an older runtime
    would break the libraries that need the newer one; the probe reports that case instead).
    A mapped libstdc++ that is the compiler's own file still gets preloaded: the crash comes from
    the order in which symbols resolve, which only a preload fixes."""
    if environ.get(SWITCH_ENV, "1") == "0":
        return PreloadPlan(None, f"turned off ({SWITCH_ENV}=0)")
    if environ.get(REEXEC_ENV):
        return PreloadPlan(None, f"already restarted with {environ[REEXEC_ENV]} preloaded")
    if not compiler_lib:
        return PreloadPlan(None, "no C++ compiler libstdc++ found (g++ -print-file-name=libstdc++.so.6)")
    preloaded = [os.path.realpath(p) for p in re.split(r"[\s:]+", environ.get("LD_PRELOAD", "")) if p]
    if compiler_lib in preloaded:
        return PreloadPlan(None, f"{compiler_lib} is already in LD_PRELOAD")
    want = version(compiler_lib)
    if want < 0:
        return PreloadPlan(None, f"{compiler_lib} is no readable libstdc++")
    newer = [p for p in mapped if p != compiler_lib and version(p) > want]
    if newer:
        return PreloadPlan(None, f"this process runs {newer[0]} (GLIBCXX_3.4.{version(newer[0])}), newer than "
                                 f"the compiler's {compiler_lib} (GLIBCXX_3.4.{want}): preloading the older one "
                                 "would break it")
    others = [p for p in mapped if p != compiler_lib]
    why = (f"this process runs {others[0]} (GLIBCXX_3.4.{version(others[0])}), older than the compiler's"
           if others else "the compiler's")
    return PreloadPlan(compiler_lib, f"{why} {compiler_lib} (GLIBCXX_3.4.{want}) must resolve first")


def ensure_preloaded(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None,
                     execve: Callable = os.execve) -> PreloadPlan:
    """Restart this process (`execve` of `argv`, by default the command line it was started with)
    with g++'s libstdc++ first in `LD_PRELOAD`, where `plan_preload` says so; else return the plan.
    Call it at start, before any work, in a process that will load AOTInductor packages."""
    environ = dict(os.environ if environ is None else environ)
    plan = plan_preload(environ, mapped_libstdcxx(), compiler_libstdcxx(environ.get("CXX")))
    if plan.path is None or not sys.platform.startswith("linux"):
        return plan
    env = {**environ, REEXEC_ENV: plan.path,
           "LD_PRELOAD": ":".join([plan.path] + [p for p in environ.get("LD_PRELOAD", "").split(":") if p])}
    argv = list(argv if argv is not None else getattr(sys, "orig_argv", [sys.executable, *sys.argv]))
    sys.stdout.flush()
    sys.stderr.flush()
    execve(sys.executable, argv, env)
    return plan  # only reached with a stand-in execve


def signal_name(returncode: int) -> str | None:
    """`SIGSEGV` for a child that a signal ended (a negative return code), else None."""
    if returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def run_isolated(code: str, args: Sequence[str] = (), what: str = "this", env: Mapping[str, str] | None = None,
                 timeout: float = 600) -> subprocess.CompletedProcess | None:
    """Run `python -c code args...` in a child first. A child that a signal ends (what the same code
    would do to this process) raises `CrashError`, one line: what crashed, the signal, and the
    work-around -- where g++'s libstdc++ is not yet preloaded, the child is run again with it
    preloaded, and the line says whether that works. Returns the finished child (its return code may
    be non-zero: an ordinary error is the caller's to report), or None where it timed out."""
    env = dict(os.environ if env is None else env)

    def child(extra: Mapping[str, str]) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run([sys.executable, "-c", code, *args], env={**env, **extra},
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    proc = child({})
    if proc is None or proc.returncode >= 0:
        return proc
    sig = signal_name(proc.returncode)
    lib = compiler_libstdcxx(env.get("CXX"))
    preloaded = lib is not None and lib in [os.path.realpath(p) for p in env.get("LD_PRELOAD", "").split(":") if p]
    if lib is None:
        fix = ("no C++ compiler libstdc++ was found to preload (g++ -print-file-name=libstdc++.so.6); "
               "load it on a machine whose g++ compiled it")
    elif preloaded:
        fix = (f"it crashes with g++'s libstdc++ ({lib}) already preloaded, so the C++ runtime is not the cause "
               "here: compile the package again on this machine with this torch")
    else:
        again = child({"LD_PRELOAD": ":".join([lib] + [p for p in env.get("LD_PRELOAD", "").split(":") if p])})
        if again is not None and again.returncode == 0:
            fix = (f"cause: the C++ runtime -- the package was built by g++ against {lib}, but this process resolves "
                   f"libstdc++ symbols from another library first; work-around (tested in a child): start Python "
                   f"with LD_PRELOAD={lib} (hwnas's apps restart themselves that way unless {SWITCH_ENV}=0)")
        else:
            got = "crashes too" if again is None or again.returncode < 0 else f"fails (exit {again.returncode})"
            fix = (f"with LD_PRELOAD={lib} it {got}, so it is not only the C++ runtime: compile the package again on "
                   "this machine with this torch")
    last = next((ln.strip() for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "")
    detail = f" (its last words: {last[:160]})" if last else ""
    raise CrashError(" ".join(f"loading {what} crashed a test process with {sig}{detail}, so it was not loaded in "
                              f"this one; {fix}".split()))


__all__ = ["CrashError", "PreloadPlan", "REEXEC_ENV", "SWITCH_ENV", "compiler_libstdcxx", "ensure_preloaded",
           "glibcxx_version", "mapped_libstdcxx", "plan_preload", "run_isolated", "signal_name"]
