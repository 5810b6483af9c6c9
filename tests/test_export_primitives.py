"""Conversion primitives on real tools: ONNX (checked by ONNX Runtime), Core ML ML Program specs,
the Core ML bundle + import round trip, and TensorRT's clear absence."""
from __future__ import annotations

import csv
import json
from collections import Counter

import numpy as np
import pytest
import torch

import search_spaces
import supernet
from hwnas.convert.onnx import export_onnx
from hwnas.latency.deploy import fold as deploy_form


def first_block(space: str, kind: str, ref: str, stride: int | None = None):
    for spec in search_spaces.get_space(space).reference(ref).blocks():
        if spec.kind == kind and (stride is None or spec.get("stride") == stride):
            return spec
    raise AssertionError(kind)


def test_onnx_export_matches_torch(tmp_path):
    import onnxruntime as ort
    spec = first_block("efficientformerv2", "efficientformerv2.attn", "efficientformerv2_s0")
    block = deploy_form(supernet.build_block(spec))
    shape = supernet.block_input_shape(spec)
    path = export_onnx(block, shape, tmp_path / "b.onnx")
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    want = block(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind


@pytest.mark.parametrize("space,kind,ref,stride,expected", [
    ("nextvit", "nextvit.ntb", "nextvit_s", None, {"conv", "linear", "matmul", "softmax", "avg_pool", "concat", "relu"}),
    ("efficientformerv2", "efficientformerv2.attn", "efficientformerv2_s0", 2,
     {"conv", "matmul", "softmax", "gelu", "upsample_bilinear"}),
])
def test_coreml_block_is_ml_program_with_expected_ops(tmp_path, space, kind, ref, stride, expected, monkeypatch):
    import tempfile
    from hwnas.convert.coreml import convert_coreml, coreml_ops
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    spec = first_block(space, kind, ref, stride)
    block = deploy_form(supernet.build_block(spec))
    path = convert_coreml(block, supernet.block_input_shape(spec), tmp_path / "block.mlpackage")
    assert path.is_dir() and (path / "Manifest.json").exists()
    # coremltools' own temporary package is gone now, not at exit (which a pool worker never reaches)
    assert not list(system_tmp.glob("*.mlpackage"))
    ops = Counter(coreml_ops(path))  # raises unless the spec is an ML Program
    assert expected <= set(ops), sorted(ops)
    assert "batch_norm" not in ops  # folded before conversion
    # fp16 ML Program: the input is cast to fp16 once
    assert ops["cast"] >= 1


def test_coreml_bundle_then_import_makes_a_measured_table(tmp_path):
    from hwnas.latency import LatencyTable, get_backend
    from hwnas.latency.coreml_bundle import RESULT_COLUMNS, build_bundle, import_results
    space = search_spaces.get_space("efficientformerv2")
    backend = get_backend("coreml")
    bundle = build_bundle(tmp_path / "bundle", space, backend, limit=2, progress=False)
    manifest = list(csv.DictReader(open(bundle / "manifest.csv")))
    assert [m["kind"] for m in manifest] == ["block", "block", "network"]
    for m in manifest:
        assert (bundle / m["file"]).is_dir()
    assert (bundle / "run_bundle.py").exists()
    compile(open(bundle / "run_bundle.py").read(), "run_bundle.py", "exec")
    # What run_bundle.py writes on a Mac (timings made up here: no Mac is reachable)
    with open(bundle / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULT_COLUMNS)
        for i, m in enumerate(manifest):
            w.writerow([m["kind"], m["role"], m["name"], 0.5 + i, 0.4 + i, 0.05, 50])
    (bundle / "results.json").write_text(json.dumps({"device": "iPhone13,4 Apple A14", "os": "macOS 15",
                                                     "coremltools": "9.0"}))
    table = import_results(bundle / "results.csv", space, backend, out=tmp_path / "mac.csv")
    t = LatencyTable.load(tmp_path / "mac.csv", target="coreml", space="efficientformerv2")
    assert not t.is_estimated and len(t.rows) == 2 and t.provenance["mes_unit_latency_ms"] == pytest.approx(2.5)
    assert t.provenance["device"] == "iPhone13,4 Apple A14" and table.path == tmp_path / "mac.csv"


def test_tensorrt_primitives_say_how_to_install():
    from hwnas.convert.tensorrt import TensorRTUnavailable, build_engine, tensorrt_available
    if tensorrt_available():
        pytest.skip("TensorRT is installed here")
    with pytest.raises(TensorRTUnavailable, match="untested"):
        build_engine("x.onnx", "x.engine")
