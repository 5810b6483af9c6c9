"""The four apps start and fail the same way: a user error (every one a `HwnasError`) is one line
and exit status 2; a bug keeps its traceback. Real processes, run from outside the repository."""
from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import hwnas
import search_spaces
import supernet
from hwnas.errors import HwnasError

ROOT = Path(__file__).resolve().parents[1]
# Exceptions that never reach a user: control flow inside one package (a trial outside the budget; a
# time-boxed profile stopping between two measurements, caught by experiments/profile_gpu.py).
INTERNAL = {"hwnas.search.study.Infeasible", "hwnas.latency.profiler.DeadlineReached",
            "hwnas.predictor._NonFinite"}  # caught inside the module, never reaches a user


def _modules():
    for pkg in (search_spaces, supernet, hwnas):
        yield pkg.__name__
        for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
            if not info.name.endswith("__main__"):
                yield info.name


def test_every_error_class_derives_from_hwnas_error():
    found = {}
    for name in _modules():
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == name:
                found[f"{name}.{obj.__qualname__}"] = obj
    assert "search_spaces.core.ArchError" in found and "hwnas.latency.errors.LatencyTableError" in found
    outside = sorted(k for k, c in found.items() if not issubclass(c, HwnasError) and k not in INTERNAL)
    assert not outside, f"errors without the HwnasError base: {outside}"
    assert hwnas.HwnasError is HwnasError is search_spaces.errors.HwnasError


@pytest.mark.parametrize("name, mixin", [
    ("search_spaces.core.ArchError", ValueError), ("supernet.pretrained.PretrainedError", ValueError),
    ("hwnas.data.DataError", ValueError), ("hwnas.mes.MESError", ValueError),
    ("hwnas.extract.ExtractError", ValueError), ("hwnas.export.pt.LoadError", ValueError),
    ("hwnas.checkpoint.CheckpointError", RuntimeError), ("hwnas.export.bundle.ExportError", RuntimeError),
    ("hwnas.convert.tensorrt.TensorRTUnavailable", ImportError),
    ("hwnas.latency.backends.UnknownTargetError", ValueError), ("hwnas.errors.ConfigError", ValueError)])
def test_errors_keep_their_standard_mixins(name, mixin):
    mod, _, cls = name.rpartition(".")
    assert issubclass(getattr(importlib.import_module(mod), cls), mixin)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


USER_ERRORS = {  # app: (arguments with a user's mistake, what the one line must say)
    "search": (["evaluator=proxy"], "no target given: choose one with +target=NAME"),
    "profile": (["+target=onnxruntime_cpu", "archs=[nextvit_xxl]"], "unknown reference 'nextvit_xxl'"),
    "extract": (["arch=nextvit_s", "format=[tflite]"], "unknown export format 'tflite'"),
    "train": (["data.image_size=33"], "data.image_size: 33 is not a multiple of 32"),
}


@pytest.mark.parametrize("app", sorted(USER_ERRORS))
def test_a_user_error_is_one_line_and_exit_status_2(app, tmp_path):
    args, message = USER_ERRORS[app]
    r = _run(["-m", f"hwnas.{app}", *args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(f"hwnas.{app}: error: ")]
    assert len(lines) == 1 and message in lines[0], r.stderr[-3000:]
    assert "Traceback" not in r.stderr


# Where each app's work starts: replaced by a function with a bug in it.
TASKS = {"search": "hwnas.search.app.run", "profile": "hwnas.profile.run", "extract": "hwnas.extract.extract",
         "train": "hwnas.train.train_supernet"}


@pytest.mark.parametrize("app", sorted(TASKS))
def test_a_bug_keeps_its_traceback(app, tmp_path):
    mod, _, fn = TASKS[app].rpartition(".")
    entry = "hwnas.search.__main__" if app == "search" else f"hwnas.{app}"
    code = (f"import importlib, sys\ndef bug(*a, **k):\n    raise ValueError('a bug, not bad input')\n"
            f"setattr(importlib.import_module('{mod}'), '{fn}', bug)\n"
            f"sys.argv[0] = '{entry}'\nimportlib.import_module('{entry}').main()")
    extra = {"search": ["+target=onnxruntime_cpu", "evaluator=proxy"], "extract": ["arch=nextvit_s"],
             "profile": ["+target=onnxruntime_cpu"]}.get(app, [])  # valid: the start-up checks pass
    r = _run(["-c", code, *extra, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" in r.stderr and "ValueError: a bug, not bad input" in r.stderr, r.stderr[-3000:]
    assert f"hwnas.{app}: error" not in r.stderr
