"""The profile app on real ONNX Runtime: a valid table, and a run killed mid-way that resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import search_spaces
from hwnas.latency import LatencyTable
from hwnas.latency.table import read_rows

ROOT = Path(__file__).resolve().parents[1]
FAST = ["target.warmup=2", "target.repeats=15", "target.min_runs=5", "target.max_seconds=0.2", "progress=false"]


def profile(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hwnas.profile", "+target=onnxruntime_cpu", "space=efficientformerv2",
           f"out={tmp_path / 'cpu.csv'}", f"hydra.run.dir={tmp_path / 'run'}", *FAST, *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_small_profile_writes_valid_table(tmp_path):
    p = profile(tmp_path, "archs=[efficientformerv2_s0]", "n_fit=2")
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out
    t = LatencyTable.load(tmp_path / "cpu.csv", target="onnxruntime_cpu", space="efficientformerv2")
    arch = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0")
    assert {b.key for b in arch.blocks()} <= set(t.rows)
    for r in t.rows.values():
        assert 0 < r["p10_ms"] <= r["median_ms"] and r["runs"] >= 5 and r["spread"] >= 0
    prov = t.provenance
    for k in ("runtime_version", "device", "precision", "batch", "threads", "warmup", "repeats", "date",
              "method", "mes_unit_latency_ms"):
        assert prov[k] not in (None, ""), k
    assert prov["source"] == "measured" and prov["threads"] == 1 and prov["batch"] == 1
    corr = prov["correction"]["efficientformerv2"]
    assert corr["fit_networks"] == 3  # the given arch + 2 random subnets
    assert corr["loo_mape"] == {"scale": None}  # too few networks to leave one out: not measured
    def no_constant(c):
        raise AssertionError(f"the provenance holds {c}: not strict JSON")
    json.loads((tmp_path / "cpu.json").read_text(), parse_constant=no_constant)
    assert t.predict(arch) > 0 and t.predict(arch) == pytest.approx(
        sum(corr["a"].get(b.kind, 1.0) * t.rows[b.key]["p10_ms"] for b in arch.blocks()) + corr["b"])
    nets = (tmp_path / "cpu.networks.csv").read_text().splitlines()
    assert len(nets) == 1 + 3


def test_killed_profile_resumes_without_duplicates_or_losses(tmp_path):
    csv_path = tmp_path / "cpu.csv"
    p = profile(tmp_path, "archs=[efficientformerv2_l]", "n_fit=0")
    deadline = time.time() + 120
    n_before = 0
    while time.time() < deadline and p.poll() is None:
        if csv_path.exists():
            n_before = len(read_rows(csv_path))
            if n_before >= 4:
                break
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = read_rows(csv_path)  # a killed run leaves a readable table: writes are atomic
    assert len(before) >= 4
    all_keys = {b.key for b in search_spaces.get_space("efficientformerv2").reference("efficientformerv2_l").blocks()}
    assert len(before) < len(all_keys)

    p = profile(tmp_path, "archs=[efficientformerv2_l]", "n_fit=0")
    out, _ = p.communicate(timeout=240)
    assert p.returncode == 0, out
    after = read_rows(csv_path)  # raises on a duplicate key
    assert set(after) == all_keys
    lines = csv_path.read_text().splitlines()
    assert len(lines) == 1 + len(all_keys)
    for k, r in before.items():  # rows measured before the kill were kept, not re-measured
        assert after[k] == r
    prov = json.loads(csv_path.with_suffix(".json").read_text())
    assert prov["profiling"]["efficientformerv2"]["n_measured"] == len(all_keys)


def test_unknown_target_fails_at_startup(tmp_path):
    p = subprocess.run([sys.executable, "-m", "hwnas.profile", "+target=tpu_magic", "space=nextvit",
                        f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    err = p.stdout + p.stderr
    assert "tpu_magic" in err and "onnxruntime_cpu" in err
