"""Why a search worker behind Optuna's gRPC storage proxy stopped on NOT_FOUND (issue 14).

A worker creates a trial through the proxy and suggests a first parameter; the proxy is then killed
and started again (a real server process on loopback, in front of SQLite) and the worker suggests a
second parameter of the same, still RUNNING, trial. Run twice:

- `optuna`: Optuna's own `run_grpc_proxy_server` over `get_storage(URL)` (what Optuna's docs show);
- `hwnas`: `python -m hwnas.search.server` (the same, with `ProxiedStorage` around the cache).

Optuna 5.0's cache (`_CachedStorage.set_trial_param`) looks the trial's study up in a map of the
trials this process created or read; the restarted proxy has read none, so the first answers
NOT_FOUND, which Optuna's client raises as KeyError. Both runs use a plain `GrpcStorageProxy` client
(a fresh one after the restart), no hwnas code on the client side.

    python experiments/archive/grpc_proxy_restart.py

Writes experiments/archive/results/grpc_proxy_restart.{json,md} (atomically).
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import optuna

from hwnas._files import atomic_write
from hwnas.latency.backends import cpu_name

ROOT = Path(__file__).resolve().parents[2]  # experiments/archive/ -> the repository
OPTUNA_SERVER = ("import sys, optuna; optuna.storages.run_grpc_proxy_server("
                 "optuna.storages.get_storage(sys.argv[1]), host='127.0.0.1', port=int(sys.argv[2]))")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(port: int) -> optuna.storages.BaseStorage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        proxy = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=port)
        proxy.wait_server_ready(timeout=120)
    return proxy


def run(kind: str, workdir: Path) -> dict:
    url, port = f"sqlite:///{workdir / f'{kind}.db'}", free_port()
    cmd = ([sys.executable, "-c", OPTUNA_SERVER, url, str(port)] if kind == "optuna" else
           [sys.executable, "-m", "hwnas.search.server", "--storage", url, "--port", str(port)])
    start = lambda: subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: E731
    server = start()
    try:
        storage = client(port)
        sampler = optuna.samplers.RandomSampler(seed=0)  # reads no trials (TPE would: see the .md)
        study = optuna.create_study(storage=storage, study_name="restart", sampler=sampler)
        trial = study.ask()
        trial.suggest_int("a", 0, 9)
        server.kill()
        server.wait()
        server = start()
        # a fresh client and channel, the same RUNNING trial (found without reading the study's trials)
        study = optuna.load_study(study_name="restart", storage=client(port), sampler=sampler)
        trial = optuna.Trial(study, study._storage.get_trial_id_from_study_id_trial_number(study._study_id, 0))
        try:
            trial.suggest_categorical("b", ["x", "y"])
            outcome = "ok"
        except KeyError:
            outcome = "KeyError (the proxy answered NOT_FOUND)"
    finally:
        server.kill()
        server.wait()
    return {"server": kind, "suggest_after_restart": outcome}


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        rows = [run(kind, Path(d)) for kind in ("optuna", "hwnas")]
    for r in rows:
        print(f"{r['server']:7s} {r['suggest_after_restart']}", flush=True)
    meta = {"optuna": optuna.__version__, "python": platform.python_version(), "cpu": cpu_name(), "cores": os.cpu_count()}
    out = ROOT / "experiments" / "archive" / "results"
    atomic_write(out / "grpc_proxy_restart.json", json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = ["# A RUNNING trial's suggest after a restart of the gRPC storage proxy",
          "", f"Optuna {meta['optuna']}, Python {meta['python']}, {meta['cpu']} ({meta['cores']} cores); "
          "`python experiments/archive/grpc_proxy_restart.py`. A worker suggests a parameter of its RUNNING trial "
          "through a proxy restarted since the trial began:", "",
          "| proxy | suggest after the restart |", "|---|---|",
          *[f"| {'run_grpc_proxy_server(get_storage(URL))' if r['server'] == 'optuna' else 'python -m hwnas.search.server'}"
            f" | {r['suggest_after_restart']} |" for r in rows], "",
          "Optuna 5.0's cache in the proxy (`_CachedStorage.set_trial_param`) finds the trial's study in a map "
          "of the trials the proxy process created or read; a restarted proxy has read none until some "
          "worker reads the study's trials (a `GetTrials`: TPE's suggest, `study.trials`, `study.ask`), so "
          "in a search the NOT_FOUND came or not depending on which call reached the new proxy first: 1 of "
          "4 runs of the kill/restart test before the repair (`tests/test_search_storage.py`). "
          "`hwnas.search.server.ProxiedStorage` makes the cache read the trial's study on that KeyError, "
          "then makes the call.", ""]
    atomic_write(out / "grpc_proxy_restart.md", "\n".join(md))


if __name__ == "__main__":
    main()
