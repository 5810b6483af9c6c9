"""optuna-dashboard opens a search's study: its server runs on loopback as a user starts it
(`optuna-dashboard sqlite:///RUN_DIR/study.db`) and the test reads the study through its HTTP API:
the objective names, and per trial the arch, its id, the latency on each target and whether that
latency is estimated or measured."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("optuna_dashboard", reason="pip install -e '.[test]' installs optuna-dashboard")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def test_optuna_dashboard_reads_our_study(tmp_path):
    from hwnas.search.app import compose_config, run
    out = run(compose_config(["targets=[coreml,torch_cuda]", "evaluator=proxy", "progress=false", "search=random",
                              "search.n_trials=6"]), tmp_path)
    exe = Path(sys.executable).with_name("optuna-dashboard")
    exe = str(exe) if exe.exists() else shutil.which("optuna-dashboard")
    assert exe, "the optuna-dashboard command is not installed"
    port = _free_port()
    proc = subprocess.Popen([exe, f"sqlite:///{tmp_path / 'study.db'}", "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, studies = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None:
            try:
                studies = _get(f"{base}/api/studies")["study_summaries"]
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.3)
        assert studies is not None, proc.stdout.read() if proc.poll() is not None else "no answer"
        (study,) = [s for s in studies if s["study_name"] == "coreml+torch_cuda-efficientformerv2-random"]
        detail = _get(f"{base}/api/studies/{study['study_id']}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert detail["objective_names"] == ["accuracy", "latency.coreml", "latency.torch_cuda", "params"]
    assert detail["directions"] == ["maximize", "minimize", "minimize", "minimize"]
    trials = [t for t in detail["trials"] if t["state"] == "Complete"]
    assert len(trials) == 6
    by_number = {r["number"]: r for r in out["records"]}
    for t in trials:
        attrs = {a["key"]: a["value"] for a in t["user_attrs"]}
        r = by_number[t["number"]]
        assert attrs["arch_id"] == r["arch_id"] and json.loads(attrs["arch"]) == json.loads(r["arch"])
        assert float(attrs["latency_ms.coreml"]) == pytest.approx(r["latency_ms.coreml"])
        assert float(attrs["latency_ms.torch_cuda"]) == pytest.approx(r["latency_ms.torch_cuda"])
        assert attrs["latency_source.coreml"] == "estimated" and attrs["latency_source.torch_cuda"] == "measured"
        assert [float(v) for v in t["values"]] == pytest.approx(
            [r["accuracy"], r["latency_ms.coreml"], r["latency_ms.torch_cuda"], r["params"]])
