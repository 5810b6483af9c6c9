"""A pick exported by `hwnas.extract` is what the latency table timed: the blocks of the exported
model in the target's deploy form have the fingerprints of the table rows."""
from __future__ import annotations

import json

import pytest
import yaml

import hwnas
import search_spaces
from hwnas.extract import extract
from hwnas.latency import LatencyTable
from hwnas.latency.deploy import deploy_form
from hwnas.latency.fingerprint import cache_for, model_block_fingerprints, scheme_info


def small_table(path, arch, form, target: str = "torch_cuda") -> LatencyTable:
    """A `target` (torch_cuda) table for the blocks of `arch`, as profile_gpu.py writes it: rows with the
    fingerprints of the current code's deploy form (the latencies are made up; the GPU is elsewhere)."""
    fps = cache_for(form).get_many(arch.block_keys())
    rows = {k: {"median_ms": 0.1, "p10_ms": 0.09, "spread": 0.1, "runs": 50, "fingerprint": fp}
            for k, fp in fps.items()}
    prov = {"target": target, "source": "measured", "statistic": "median_ms", "spaces": [arch.space],
            "device": "NVIDIA H200", "precision": form.precision, "batch": form.batch,
            "fingerprint": {**scheme_info(), "form": form.settings()}, "complete": {arch.space: True}}
    t = LatencyTable(rows, prov, path)
    t.save()
    return t


@pytest.mark.parametrize("space", ["efficientformerv2", "nextvit"])
def test_torch_cuda_pick_exported_is_what_the_table_timed(tmp_path, space):
    sp = search_spaces.get_space(space)
    arch = sp.sample_many(1, seed=4)[0]
    ref = {"arch_id": "x", "accuracy": 50.0, "latency_ms": 1.0, "params": 1, "mes": 1.0}
    run = tmp_path / "search"
    run.mkdir()
    (run / "picks.yaml").write_text(yaml.safe_dump(
        {"ref": {"reference": ref, "pick": dict(ref, arch_id=arch.id, trial=1, arch=arch.to_dict())}}))
    good = small_table(tmp_path / "tables" / "torch_cuda" / "nvidia-h200.csv", arch, deploy_form("torch_cuda"))
    # a table timed without channels_last: its rows are not the blocks of the torch_cuda deploy form
    nchw = small_table(tmp_path / "tables" / "torch_cuda" / "nchw.csv", arch,
                       deploy_form("torch_cuda", channels_last=False))
    # a table one of whose rows timed other code
    stale = small_table(tmp_path / "tables" / "torch_cuda" / "stale.csv", arch, deploy_form("torch_cuda"))
    odd = arch.block_keys()[-1]
    stale.rows[odd]["fingerprint"] = "0" * 16
    stale.save()
    out = tmp_path / "export"
    manifest = extract(run=str(run), pick="ref", formats=["pt"], out_dir=out,
                       latency_tables=[good.path, stale.path])
    lat = manifest["predicted_latency_ms"]
    ok, bad = lat["torch_cuda/nvidia-h200.csv"], lat["torch_cuda/stale.csv"]
    assert ok["ms"] == pytest.approx(0.1 * len(arch.block_keys()))
    assert ok["deploy"]["timed_what_ships"] and ok["deploy"]["blocks"] == len(arch.block_keys())
    assert bad["ms"] is None and "StaleRowsError" in bad["error"] and odd in bad["error"]
    assert not bad["deploy"]["timed_what_ships"] and bad["deploy"]["differing_blocks"] == [odd]
    assert json.loads((out / "manifest.json").read_text())["predicted_latency_ms"] == lat

    # independently of the manifest: the exported artefact, deployed as the docs say, block by block
    form = deploy_form("torch_cuda")
    model = form.module(hwnas.load(out))
    pairs = model_block_fingerprints(model, form)
    assert [k for k, _ in pairs] == list(arch.block_keys())
    assert all(good.rows[k]["fingerprint"] == fp for k, fp in pairs)
    assert not all(nchw.rows[k]["fingerprint"] == fp for k, fp in pairs)
    # and the artefact deployed without one step of the recipe (channels_last) is not what it timed
    nchw_form = deploy_form("torch_cuda", channels_last=False)
    pairs_nchw = model_block_fingerprints(nchw_form.module(hwnas.load(out)), nchw_form)
    assert not any(good.rows[k]["fingerprint"] == fp for k, fp in pairs_nchw)


def test_shipped_onnx_table_timed_what_an_onnx_export_ships(tmp_path):
    manifest = extract(arch="efficientformerv2_s0", formats=["pt"], out_dir=tmp_path / "e")
    entry = manifest["predicted_latency_ms"]["onnxruntime_cpu/amd-epyc.csv"]
    assert entry["ms"] > 0 and entry["deploy"]["timed_what_ships"], entry


def test_an_aoti_export_compiles_as_the_torch_inductor_table_timed(tmp_path):
    """format=aoti takes the torch_inductor form settings of the table that predicts the export (here
    depthwise=shifted, autotune=false, not the form's defaults at this batch), so the package is the graph
    the table timed: the manifest's deploy check says so, and the package still computes the model."""
    sp = search_spaces.get_space("efficientformerv2", resolution=64)
    arch = sp.min_arch()
    timed = deploy_form("torch_inductor", batch=2, depthwise="shifted", autotune=False)
    assert deploy_form("torch_inductor", batch=2).settings() != timed.settings()  # the defaults differ
    table = small_table(tmp_path / "tables" / "torch_inductor" / "nvidia-h100.csv", arch, timed, "torch_inductor")
    (tmp_path / "arch.yaml").write_text(json.dumps(arch.to_dict()))
    manifest = extract(arch=str(tmp_path / "arch.yaml"), formats=["aoti"], out_dir=tmp_path / "export", batch=2,
                       latency_tables=[table.path])
    aoti = manifest["formats"]["aoti"]["check"]
    assert aoti["passed"], aoti
    assert aoti["form"]["depthwise"] == "shifted" and aoti["form"]["autotune"] is False
    assert "shifted multiply-adds" in aoti["deploy_form"] and "max_autotune" not in aoti["deploy_form"]
    assert manifest["predicted_latency_ms"]["torch_inductor/nvidia-h100.csv"]["deploy"]["timed_what_ships"]
