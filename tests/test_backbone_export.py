"""Exports of features-only backbones (ONNX with dynamic axes, TorchScript, Core ML), `hwnas.load` of
them, and timm's checkpoint layout out (`format=timm`)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

import hwnas
import search_spaces
import supernet
from hwnas.export.bundle import write_export
from hwnas.export.format import tolerance


def _backbone(space_name: str, ref: str, out_indices=None, size=(128, 160)):
    torch.manual_seed(0)
    arch = search_spaces.get_space(space_name).reference(ref).with_resolution(size)
    model = supernet.build_model(arch, features_only=True, out_indices=out_indices).eval()
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # BN statistics away from identity, so folding them is tested
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _ort(path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_features_only_onnx_round_trips_in_onnx_runtime_at_two_input_sizes(space_name, tmp_path):
    ref = search_spaces.get_space(space_name).reference_names[0]  # nextvit_s, efficientformerv2_s0
    model = _backbone(space_name, ref)
    manifest = write_export(model, model.arch, tmp_path / "a", ["pt", "onnx"], num_classes=0,
                            weights={"source": "fresh_init"}, latency={})
    check = manifest["formats"]["onnx"]["check"]
    assert manifest["checks_passed"] and check["rel_err"] <= tolerance("onnx").rel
    assert [o["name"] for o in manifest["outputs"]] == ["stage0", "stage1", "stage2", "stage3"]
    assert [o["reduction"] for o in manifest["outputs"]] == [4, 8, 16, 32]
    # the manifest's onnx entry (the format's own, issue 26) names the graph's outputs and axes
    assert manifest["onnx"]["outputs"] == ["stage0", "stage1", "stage2", "stage3"]
    assert manifest["onnx"]["dynamic_axes"]["input"]["0"] == "batch"
    sess = _ort(tmp_path / "a" / "model.onnx")
    shape = sess.get_inputs()[0].shape
    assert [o.name for o in sess.get_outputs()] == ["stage0", "stage1", "stage2", "stage3"]
    assert isinstance(shape[0], str)  # a dynamic batch axis
    dynamic_hw = supernet.get_family(space_name).onnx_dynamic_hw
    assert isinstance(shape[2], str) == dynamic_hw and isinstance(shape[3], str) == dynamic_hw
    # a second input size: the same file where the graph follows the input, else a second export
    second = (192, 96)
    if dynamic_hw:
        path = tmp_path / "a" / "model.onnx"
        ref_model = model
    else:
        ref_model = _backbone(space_name, ref, size=second)  # a graph fixed at the second size
        write_export(ref_model, ref_model.arch, tmp_path / "b", ["onnx"], num_classes=0,
                     weights={"source": "fresh_init"}, latency={})
        path = tmp_path / "b" / "model.onnx"
    x = torch.randn(2, 3, *second)  # and another batch size
    outs = _ort(path).run(None, {"input": x.numpy()})
    with torch.no_grad():
        want = ref_model(x)
    for o, w in zip(outs, want):
        assert o.shape == tuple(w.shape)
        assert np.abs(o - w.numpy()).max() / w.abs().max().item() <= tolerance("onnx").rel


def test_features_only_torchscript_and_core_ml_exports(tmp_path):
    model = _backbone("efficientformerv2", "efficientformerv2_s0", out_indices=(1, 2, 3), size=(64, 96))
    manifest = write_export(model, model.arch, tmp_path, ["pt", "torchscript", "coreml"], num_classes=0,
                            weights={"source": "fresh_init"}, latency={})
    assert manifest["checks_passed"], manifest["errors"]
    ts = manifest["formats"]["torchscript"]["check"]
    assert len(ts["rel_errs"]) == 3 and ts["rel_err"] <= tolerance("torchscript").rel
    cm = manifest["formats"]["coreml"]["check"]
    assert cm["program"] == "mlProgram"
    assert cm["output_shapes"] == [[1, 48, 8, 12], [1, 96, 4, 6], [1, 176, 2, 3]]
    assert {"conv", "gelu", "softmax"} <= set(cm["op_counts"]) and "linear" not in cm["op_counts"]


def test_hwnas_load_gives_back_the_backbone_with_its_out_indices(tmp_path):
    model = _backbone("nextvit", "nextvit_s", out_indices=(1, 3), size=(64, 64))
    write_export(model, model.arch, tmp_path, ["pt"], num_classes=0, weights={"source": "fresh_init"}, latency={})
    data = yaml.safe_load((tmp_path / "arch.yaml").read_text())
    assert data["out_indices"] == [1, 3] and data["arch"]["task"] == "backbone"
    loaded = hwnas.load(tmp_path)
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        got, want = loaded(x), model(x)
    assert loaded.features_only and loaded.out_indices == (1, 3) and len(got) == 2
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_format_timm_writes_timms_names_for_the_references_and_refuses_other_archs(tmp_path):
    from hwnas.extract import ExtractError, extract
    from supernet.pretrained import PretrainedError
    m = extract(arch="efficientformerv2_s0", formats=["timm"], out_dir=tmp_path / "ef", resolution=64,
                latency_tables=[])
    sd = torch.load(tmp_path / "ef" / "model_timm.pth", weights_only=True)
    assert {"norm.weight", "head.weight", "head_dist.weight"} <= set(sd) and not any(k.startswith("head.norm") for k in sd)
    info = m["formats"]["timm"]["check"]
    assert info["passed"] and info["timm_model"] == "efficientformerv2_s0"
    assert "img_size=(64, 64)" in info["load_with"]  # its attention biases are sized for the input
    m = extract(arch="nextvit_s", formats=["timm"], out_dir=tmp_path / "nv", resolution=64, latency_tables=[])
    sd = torch.load(tmp_path / "nv" / "model_timm.pth", weights_only=True)
    assert {"norm.weight", "head.fc.weight", "stages.3.blocks.2.mlp.fc1.weight"} <= set(sd)
    assert m["formats"]["timm"]["check"]["load_with"] == "timm.create_model('nextvit_small', checkpoint_path='model_timm.pth')"
    sub = search_spaces.get_space("nextvit").reference("nextvit_s")
    stages = [dict(s) for s in sub.stages]
    stages[2]["l"] = 3
    (tmp_path / "sub.yaml").write_text(yaml.safe_dump(search_spaces.Arch("nextvit", stages).to_dict()))
    with pytest.raises(PretrainedError, match=r"not a timm model.*stages\[2\]\.l is 3, nextvit_s has 2"):
        extract(arch=str(tmp_path / "sub.yaml"), formats=["timm"], out_dir=tmp_path / "sub", latency_tables=[])
    assert not (tmp_path / "sub" / "manifest.json").exists()  # refused before any work
    with pytest.raises(ExtractError, match="features_only"):
        extract(arch="nextvit_s", formats=["pt"], out_dir=tmp_path / "x", out_indices=[1], latency_tables=[])


def test_the_extract_app_exports_a_backbone(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "hwnas.extract", "arch=efficientformerv2_s0", "features_only=true",
                        "input=[64,96]", "out_indices=[2,3]", "format=[onnx,timm]", f"hydra.run.dir={out}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "manifest.json").read_text())
    assert m["task"] == "backbone" and m["features_only"] and m["out_indices"] == [2, 3]
    assert m["input_shape"] == [1, 3, 64, 96] and [o["shape"] for o in m["outputs"]] == [[1, 96, 4, 6], [1, 176, 2, 3]]
    assert m["params"] == m["torch_params"]  # a backbone's count has no head
    assert m["checks_passed"] and set(m["formats"]) == {"pt", "onnx", "timm"}
    bad = subprocess.run([sys.executable, "-m", "hwnas.extract", "arch=efficientformerv2_s0", "input=[64,90]",
                          f"hydra.run.dir={tmp_path / 'bad'}"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "multiples of 32" in bad.stderr
