"""The profile app on real ONNX Runtime: a valid table, and a run killed mid-way that resumes."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import search_spaces
from hwnas.latency import LatencyTable
from hwnas.latency.table import networks_path, read_rows

ROOT = Path(__file__).resolve().parents[1]
FAST = ["target.warmup=2", "target.repeats=15", "target.min_runs=5", "target.max_seconds=0.2", "progress=false"]


def profile(tmp_path: Path, *overrides: str, out: str | None = "cpu.csv") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "hwnas.profile", "+target=onnxruntime_cpu", "space=efficientformerv2",
           *([f"out={tmp_path / out}"] if out else []), f"hydra.run.dir={tmp_path / 'run'}", *FAST, *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_small_profile_writes_valid_table(tmp_path):
    p = profile(tmp_path, "archs=[efficientformerv2_s0]", "n_fit=2", "fidelity=2")
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
    assert len(nets) == 1 + 3 + 2  # 3 fit networks, 2 held-out (fidelity=2)
    fid = prov["fidelity"]["efficientformerv2"]  # the table says how good it is
    assert fid["n"] == 2 and 0 <= fid["within_10pct"] <= 1
    result = json.loads((tmp_path / "run" / "latency_fidelity_onnxruntime_cpu_efficientformerv2.json").read_text())
    assert {n["arch_id"] for n in result["networks"]}.isdisjoint(corr["fit_arch_ids"])
    assert all(r["fingerprint"] for r in t.rows.values()) and prov["complete"]["efficientformerv2"] is False


def _copy_table(src_csv: Path, dst_csv: Path, device: str | None = None) -> None:
    """A copy of a shipped table (with its networks), optionally claiming another device."""
    dst_csv.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src_csv, dst_csv)
    shutil.copyfile(networks_path(src_csv), networks_path(dst_csv))
    prov = json.loads(src_csv.with_suffix(".json").read_text())
    if device is not None:
        prov["device"] = device
    dst_csv.with_suffix(".json").write_text(json.dumps(prov))


def test_killed_profile_never_replaces_the_complete_table_and_resumes(tmp_path):
    """A profile killed mid-way leaves its rows in its own `.partial` file; the complete table stays
    the default (and a search uses it); a rerun resumes from the partial file, measures nothing twice,
    and the finished table still is not the default while it does not cover the space."""
    from hwnas.latency import default_table_path
    from hwnas.latency.backends import cpu_name, slug
    from hwnas.latency.profiler import partial_path

    tables = tmp_path / "tables"
    complete = tables / "onnxruntime_cpu" / "another-machine.csv"
    _copy_table(default_table_path("onnxruntime_cpu", "efficientformerv2"), complete, device="Another CPU")
    mine = tables / "onnxruntime_cpu" / f"{slug(cpu_name())}.csv"
    work = partial_path(mine)
    args = (f"tables_dir={tables}", "archs=[efficientformerv2_l]", "n_fit=1", "target.canary=false",
            "target.clock=wall")
    p = profile(tmp_path, *args, out=None)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if work.exists() and len(read_rows(work)) >= 4:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    before = read_rows(work)  # a killed run leaves a readable table: writes are atomic
    all_keys = {b.key for b in search_spaces.get_space("efficientformerv2").reference("efficientformerv2_l").blocks()}
    assert 4 <= len(before) < len(all_keys)
    assert not mine.exists()  # nothing but the partial file
    assert default_table_path("onnxruntime_cpu", "efficientformerv2", tables) == complete

    from hwnas.search.app import compose_config, run
    cfg = compose_config(["+target=onnxruntime_cpu", "evaluator=proxy", "progress=false", "search=random",
                          "search.n_trials=4", f"target.tables_dir={tables}", "references=[efficientformerv2_s0]"])
    out = run(cfg, tmp_path / "search")
    assert str(complete) in (tmp_path / "search" / "report.md").read_text()
    assert out["references"]["efficientformerv2_s0"]["latency_ms"] > 0

    p = profile(tmp_path, *args, out=None)
    log, _ = p.communicate(timeout=400)
    assert p.returncode == 0, log
    after = read_rows(mine)  # raises on a duplicate key
    assert all_keys <= set(after) and not work.exists()
    for k, r in before.items():  # rows measured before the kill were kept, not re-measured
        assert after[k] == r
    prov = json.loads(mine.with_suffix(".json").read_text())
    assert prov["complete"]["efficientformerv2"] is False  # some archs' blocks only: never the default
    assert default_table_path("onnxruntime_cpu", "efficientformerv2", tables) == complete


def test_table_choice(tmp_path):
    """Complete tables first (a finished but grown-out one only when none is); measured over
    estimated; this machine's device over another; newest."""
    from hwnas.latency import LatencyTableError, default_table_path
    folder = tmp_path / "onnxruntime_cpu"
    folder.mkdir()

    def table(name, **prov):
        (folder / f"{name}.csv").write_text("key,median_ms,p10_ms,spread,runs,fingerprint\n")
        (folder / f"{name}.json").write_text(json.dumps({"target": "onnxruntime_cpu", "spaces": ["nextvit"], **prov}))

    table("half-done", source="measured", device="X", date="2030-01-01", complete={"nextvit": False})
    table("x.partial", source="measured", device="X", date="2030-01-02", complete={"nextvit": True})
    with pytest.raises(LatencyTableError, match="no complete latency table.*half-done"):
        default_table_path("onnxruntime_cpu", "nextvit", tmp_path)
    # a finished profile (its correction fitted) of a space that has grown since: used only while no
    # table is complete (predict then raises MissingRowsError for archs with a new block)
    table("grown", source="measured", device="X", date="2019-01-01", complete={"nextvit": False},
          correction={"nextvit": {"form": "scale", "a": {}, "b": 0.0}})
    assert default_table_path("onnxruntime_cpu", "nextvit", tmp_path).name == "grown.csv"
    table("old", source="measured", device="X", date="2020-01-01", complete={"nextvit": True})
    table("est", source="estimated", device="Y", date="2029-01-01", complete={"nextvit": True})
    assert default_table_path("onnxruntime_cpu", "nextvit", tmp_path).name == "old.csv"
    table("new", source="measured", device="Z", date="2021-01-01", complete={"nextvit": True})
    assert default_table_path("onnxruntime_cpu", "nextvit", tmp_path).name == "new.csv"
    assert default_table_path("onnxruntime_cpu", "nextvit", tmp_path, this_device="X").name == "old.csv"


def test_search_on_another_device_names_both_and_the_profile_command(tmp_path, capsys):
    from hwnas.latency import default_table_path
    from hwnas.latency.backends import cpu_name
    from hwnas.search.app import compose_config, run

    tables = tmp_path / "tables"
    other = "Intel(R) Xeon(R) CPU @ 2.20GHz" if "Intel" not in cpu_name() else "AMD EPYC 7B13"
    _copy_table(default_table_path("onnxruntime_cpu", "efficientformerv2"),
                tables / "onnxruntime_cpu" / "elsewhere.csv", device=other)
    cfg = compose_config(["+target=onnxruntime_cpu", "evaluator=proxy", "progress=false", "search=random",
                          "search.n_trials=4", f"target.tables_dir={tables}", "references=[efficientformerv2_s0]"])
    run(cfg, tmp_path / "search")
    console = capsys.readouterr()
    report = (tmp_path / "search" / "report.md").read_text()
    cmd = "python -m hwnas.profile +target=onnxruntime_cpu space=efficientformerv2"
    for text in (console.err, console.out, report):
        assert other in text and cpu_name() in text and cmd in text


def test_unknown_target_fails_at_startup(tmp_path):
    p = subprocess.run([sys.executable, "-m", "hwnas.profile", "+target=tpu_magic", "space=nextvit",
                        f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    err = p.stdout + p.stderr
    assert "tpu_magic" in err and "onnxruntime_cpu" in err
