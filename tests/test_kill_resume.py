"""Interrupted jobs (issue 18): SIGKILL a real process in the middle of its work, then run again.

- The built-in supernet a search trains when no `checkpoint=` is given: the rerun resumes the
  training from its last epoch (not from step 0) and leaves no temporary folder in the cache.
- An extract into the folder of an earlier export: the kill leaves that export and its `.hydra/`
  as they were, and the next extract there removes the killed one's `.export-*.tmp`.
- A killed profile (its ONNX scratch folder in the temp folder) and a killed extract (its
  `.export-*.tmp`): the next run of another app, elsewhere, removes both (issue 24).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

SEARCH = ["+target=onnxruntime_cpu", "progress=false", "search=random", "search.n_trials=1", "search.seed_archs=[]",
          "references=[efficientformerv2_s0]", "evaluator=supernet", "evaluator.recalib_batches=1",
          "evaluator.max_val_batches=1",
          "evaluator.batch_size=8",
          'pretrain.overrides=["train.epochs=2","train.max_steps_per_epoch=1","train.batch_size=4",'
          '"train.num_random=0","train.eval_calib_batches=0","train.progress=false"]']


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 600) -> None:
    """SIGKILL `proc` as soon as `ready()` holds (fails if the process ends first)."""
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"ended before it could be killed:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < end, "timed out waiting for the moment to kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)


def test_killed_builtin_supernet_training_resumes_and_leaves_no_temp_folder(tmp_path):
    cache = tmp_path / "cache"
    args = ["-m", "hwnas.search", *SEARCH, f"pretrain.cache_dir={cache}", f"hydra.run.dir={tmp_path / 'run'}"]
    first = _start(args, tmp_path)
    states = lambda: list(cache.glob(".efficientformerv2-*.partial/train_state.pt"))  # noqa: E731
    _kill_when(first, lambda: bool(states()))  # after the first of two epochs
    [state] = states()
    killed = torch.load(state, weights_only=True)
    assert killed["epoch"] == 1 and not list(cache.glob("efficientformerv2-*/supernet.pt"))

    r = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "resuming the training of" in log and "1/2 epochs done" in log, log[-3000:]
    [ckpt] = cache.glob("efficientformerv2-*/supernet.pt")
    history = torch.load(ckpt, weights_only=True)["meta"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    # epoch 1 is the killed run's (its timing too), not trained again; json: NaN == NaN there
    assert json.dumps(history[0], sort_keys=True) == json.dumps(killed["history"][0], sort_keys=True)
    assert not [p for p in cache.iterdir() if p.is_dir() and p.name.startswith(".")], list(cache.iterdir())
    assert not [p for p in ckpt.parent.iterdir() if ".tmp" in p.name]


def _files(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and p.suffix != ".log" and not p.relative_to(folder).parts[0].startswith(".export-")}


def test_killed_extract_leaves_the_earlier_export_and_the_next_extract_cleans_up(tmp_path):
    out = tmp_path / "export"
    base = ["-m", "hwnas.extract", "arch=efficientformerv2_s0", "resolution=64", "num_classes=10",
            f"hydra.run.dir={out}"]
    r = subprocess.run([sys.executable, *base, "format=pt"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    earlier = _files(out)
    assert Path(".hydra/config.yaml") in earlier and Path("manifest.json") in earlier

    # killed once it has written into its temporary folder (model.pt is the first file of the bundle)
    killed = _start([*base, "format=[pt,onnx,torchscript]", "seed=1"], tmp_path)
    _kill_when(killed, lambda: any(out.glob(".export-*.tmp/model.pt")))
    assert list(out.glob(".export-*.tmp")), "the killed run's temporary folder (what the next run must remove)"
    assert _files(out) == earlier

    # the next extract into the folder fails in its task (its checkpoint is no checkpoint) ...
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(1024))
    r = subprocess.run([sys.executable, *base, "format=pt", f"checkpoint={junk}"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "not a PyTorch checkpoint file" in r.stderr, r.stderr[-3000:]
    # ... and still removes what the killed one left; the earlier export and its .hydra/ are unchanged
    assert not list(out.glob(".export-*")) and not list(out.glob(".*.tmp*"))
    assert _files(out) == earlier


def test_whatever_killed_runs_left_is_removed_by_the_next_run_of_any_app(tmp_path):
    """Issue 24: a killed profile left its ONNX files in the temp folder forever, a killed extract its
    100-300 MB until the next extract into that very folder. Any later app run removes both."""
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}  # a temp folder of this test's own
    (tmp_path / "tmp").mkdir()

    def start(args):
        return subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    profile = start(["-m", "hwnas.profile", "+target=onnxruntime_cpu", "space=efficientformerv2", "progress=false",
                     "target.canary=false", f"out={tmp_path / 'tables' / 'cpu.csv'}", f"hydra.run.dir={tmp_path / 'p'}"])
    _kill_when(profile, lambda: any((tmp_path / "tmp").glob("hwnas-ort-*/m.onnx")))
    assert list((tmp_path / "tmp").glob("hwnas-ort-*")), "the killed profile's ONNX scratch folder"
    # an extract elsewhere removes it at start-up; killed itself mid-export, it leaves its own
    out = tmp_path / "export"
    extract = start(["-m", "hwnas.extract", "arch=efficientformerv2_s0", "resolution=64", "num_classes=10",
                     "format=[pt,onnx]", f"hydra.run.dir={out}"])
    _kill_when(extract, lambda: any(out.glob(".export-*.tmp/model.pt")))
    assert not list((tmp_path / "tmp").glob("hwnas-ort-*")) and list(out.glob(".export-*.tmp"))

    r = subprocess.run([sys.executable, "-m", "hwnas.extract", "arch=efficientformerv2_s0", "resolution=64",
                        "num_classes=10", "format=pt", f"hydra.run.dir={tmp_path / 'other'}"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list((tmp_path / "tmp").glob("hwnas-*-*-*")) and not list(out.glob(".export-*"))
    assert not list((tmp_path / "tmp" / "hwnas-temps").glob("*")), "the registry of the dead is emptied"
    assert not list(tmp_path.rglob("*.lock"))


def test_ctrl_c_ends_a_real_search_with_one_line_and_keeps_its_study(tmp_path):
    """Issue 24: Ctrl-C (SIGINT to the process) printed a traceback; now one line saying what was kept
    and how to resume, exit status 130."""
    run = tmp_path / "run"
    # -X faulthandler: should the search hang after the Ctrl-C, SIGABRT prints where each thread was
    proc = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "hwnas.search", "+target=onnxruntime_cpu", "evaluator=proxy",
                             "progress=false", "search.n_trials=100000", f"hydra.run.dir={run}"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a Ctrl-C as a terminal sends it: a test run started in the background without job
                            # control (`.ci/run &`) passes SIGINT on ignored, and the search rightly keeps that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    import sqlite3
    try:
        end = time.monotonic() + 300
        while True:  # interrupted once two trials are in the study
            if (run / "study.db").exists():
                with sqlite3.connect(run / "study.db") as con:
                    try:
                        if con.execute("select count(*) from trials where state='COMPLETE'").fetchone()[0] >= 2:
                            break
                    except sqlite3.OperationalError:
                        pass
            assert proc.poll() is None and time.monotonic() < end, "the search ended or never ran two trials"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            pytest.fail(f"the search did not end within 120 s of the Ctrl-C; where it was:\n{err[-6000:]}")
    finally:
        proc.kill()
    lines = [ln for ln in err.splitlines() if ln.startswith("hwnas.search: interrupted (Ctrl-C); ")]
    assert proc.returncode == 130 and len(lines) == 1, err[-3000:]
    assert f"resume it with the same command and hydra.run.dir={run}" in lines[0]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_a_ctrl_c_inside_a_storage_call_is_held_until_the_call_is_done(tmp_path):
    """A Ctrl-C that lands inside a storage call (SQLAlchemy mid-commit) ended a search with an
    AssertionError from SQLAlchemy instead of its one line, or hung it (CI, 2026-12-07): the storage
    now finishes the call, then raises KeyboardInterrupt; a second Ctrl-C inside the call raises at once."""
    import threading

    import optuna
    from hwnas.search.study import OwnedTrialStorage
    assert threading.current_thread() is threading.main_thread()  # where Python delivers SIGINT
    url = f"sqlite:///{tmp_path / 's.db'}"
    backend = optuna.storages.RDBStorage(url)
    storage = OwnedTrialStorage(backend, url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    real = backend.create_new_trial

    def pressed(times):
        def create(*args, **kwargs):
            for _ in range(times):  # lands inside the call, before its commit
                os.kill(os.getpid(), signal.SIGINT)
            return real(*args, **kwargs)
        return create

    # Python's own Ctrl-C handler, whatever this process inherited: a test run started in the background of a
    # non-interactive shell (`.ci/run &`) inherits SIGINT ignored, and there the storage rightly holds nothing
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        backend.create_new_trial = pressed(1)
        with pytest.raises(KeyboardInterrupt):
            storage.create_new_trial(study_id)
        assert len(backend.get_all_trials(study_id)) == 1  # the call finished before the Ctrl-C was raised
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        backend.create_new_trial = pressed(2)
        with pytest.raises(KeyboardInterrupt):
            storage.create_new_trial(study_id)
        assert len(backend.get_all_trials(study_id)) == 1  # the user insisted: stopped inside the call
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # an ignored Ctrl-C stays ignored: the call runs as it is, and the process's choice is kept
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        backend.create_new_trial = pressed(1)
        storage.create_new_trial(study_id)
        assert len(backend.get_all_trials(study_id)) == 2
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)
