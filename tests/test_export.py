"""Exports: every CPU format round-trips a random subnet of each space within its tolerance,
`hwnas.load` restores the model, the manifest's numbers are the arch's, nothing is half-written."""
import hashlib
import json
import random
from pathlib import Path

import pytest
import torch

import hwnas
import search_spaces
import supernet
from hwnas.export import verify
from hwnas.export.bundle import ExportError, check_formats, write_export
from hwnas.export.format import tolerance
from hwnas.convert.optimize import Upsample2xBilinear, optimize_for_gpu, reference_upsample

RES = 64
NUM_CLASSES = 10
CPU_FORMATS = ["pt", "onnx", "torchscript", "coreml"]


def trained_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give a fresh model a trained model's scales: LayerScales that matter and BatchNorm statistics
    of real activations (so every layer's output is O(1), as after training, not ~1e-5)."""
    torch.manual_seed(seed)
    for m in model.modules():
        if hasattr(m, "gamma"):
            m.gamma.data.uniform_(0.3, 1.0)
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    res = model.arch.resolution
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, res, res))
    return model.eval()


def random_arch(space_name: str, seed: int = 1):
    return search_spaces.get_space(space_name, resolution=RES).sample(random.Random(seed))


@pytest.fixture(scope="module")
def small():
    arch = search_spaces.get_space("efficientformerv2", resolution=32).min_arch()
    return arch, trained_like(supernet.build_model(arch, num_classes=NUM_CLASSES))


@pytest.fixture(scope="module")
def exported(space_name, tmp_path_factory):
    arch = random_arch(space_name)
    model = trained_like(supernet.build_model(arch, num_classes=NUM_CLASSES))
    out = tmp_path_factory.mktemp(f"export-{space_name}")
    manifest = write_export(model, arch, out, CPU_FORMATS, num_classes=NUM_CLASSES,
                            weights={"source": "test"}, latency={})
    return arch, model, out, manifest


def test_every_cpu_format_round_trips_within_its_tolerance(exported):
    arch, model, out, manifest = exported
    assert manifest["checks_passed"], manifest["errors"]
    for fmt in ("pt", "onnx", "torchscript"):
        check = manifest["formats"][fmt]["check"]
        assert check["passed"] and check["rel_err"] <= tolerance(fmt).rel, check
        assert check["ref_max_abs"] > 1e-2  # the outputs compared are not vanishingly small
    coreml = manifest["formats"]["coreml"]["check"]
    assert coreml["passed"], coreml
    assert coreml["program"] == "mlProgram"
    assert coreml["input_shapes"] == [[1, 3, RES, RES]] and coreml["output_shapes"] == [[1, NUM_CLASSES]]
    assert coreml["fp16_weight_tensors"] > 0
    assert coreml["op_counts"]["conv"] >= len(arch.blocks())  # every block convolves at least once
    for name in ("model.pt", "arch.yaml", "model.onnx", "model.ts", "model.mlpackage", "manifest.json"):
        assert (out / name).exists(), name
    assert not list(out.glob(".export-*")), "temporary directory left behind"


def test_the_onnx_export_is_static_and_bn_free(exported):
    import onnx
    _, _, out, manifest = exported
    g = onnx.load(str(out / "model.onnx")).graph
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] == [1, 3, RES, RES]
    assert "BatchNormalization" not in {n.op_type for n in g.node}
    assert manifest["formats"]["onnx"]["check"]["runtime"].startswith("onnxruntime")


def test_a_check_fails_on_a_wrong_export(small, tmp_path):
    """The ONNX check compares numbers: a model that computes something else fails it."""
    arch, model = small
    from hwnas.convert.onnx import export_onnx
    shape = (1, 3, arch.resolution, arch.resolution)
    x = verify.reference_input(shape)
    with torch.no_grad():
        ref = model(x)
    wrong = trained_like(supernet.build_model(arch, num_classes=NUM_CLASSES), seed=5)
    export_onnx(supernet.fuse_for_deploy(wrong), shape, tmp_path / "m.onnx")
    check = verify.check_onnx(tmp_path / "m.onnx", x, ref)
    assert not check["passed"] and "exceeds the onnx tolerance" in check["error"]


def test_load_restores_an_identical_plain_model(exported):
    arch, model, out, _ = exported
    loaded = hwnas.load(out)
    assert type(loaded) is supernet.DeployModel and loaded.arch == arch and not loaded.training
    ref = model.state_dict()
    got = loaded.state_dict()
    assert list(got) == list(ref)
    for k in ref:
        assert torch.equal(got[k], ref[k]), k
    x = torch.randn(2, 3, RES, RES)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert hwnas.load(out / "model.pt").arch == arch  # the file path works as well


def test_manifest_numbers_are_the_archs(exported):
    arch, model, out, manifest = exported
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    assert on_disk["params"] == arch.params(NUM_CLASSES)
    assert on_disk["macs"] == arch.macs(NUM_CLASSES)
    assert on_disk["torch_params"] == sum(p.numel() for p in model.parameters()) == arch.params(NUM_CLASSES)
    assert search_spaces.Arch.from_dict(on_disk["arch"]) == arch and on_disk["arch_id"] == arch.id
    assert set(on_disk["tolerances"]) == set(CPU_FORMATS)
    assert on_disk["formats"]["pt"]["files"] == ["model.pt", "arch.yaml"]


def test_manifest_predicts_latency_on_every_shipped_table_of_the_space():
    from hwnas.latency.predict import predicted_latencies, shipped_tables
    from hwnas.latency.table import LatencyTable
    arch = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0")
    tables = [p for p in shipped_tables() if arch.space in LatencyTable.load(p).spaces]
    if not tables:
        pytest.skip("no shipped latency table covers efficientformerv2 yet")
    from hwnas.latency import StaleRowsError
    pred = predicted_latencies(arch)
    for p in tables:
        entry = pred[f"{p.parent.name}/{p.name}"]
        table = LatencyTable.load(p)
        try:
            ms = round(table.predict(arch), 4)
        except StaleRowsError:  # a table that no longer describes the code records why, not a number
            assert entry["ms"] is None and "StaleRowsError" in entry["error"]
            continue
        assert entry["ms"] == ms
        assert entry["estimated"] == table.is_estimated


def test_a_killed_profiles_partial_table_is_no_table_of_the_manifest(tmp_path):
    """Issue 24: a killed profile leaves `<device>.partial.csv` + `.json`; the manifest's tables (and
    so `predicted_latency_ms`) never include it."""
    import shutil
    from hwnas.latency.predict import shipped_tables
    from hwnas.latency.table import TABLES_DIR
    src = TABLES_DIR / "onnxruntime_cpu" / "amd-epyc"
    (tmp_path / "onnxruntime_cpu").mkdir()
    for suffix in (".csv", ".json"):
        shutil.copyfile(src.with_suffix(suffix), tmp_path / "onnxruntime_cpu" / f"amd-epyc{suffix}")
        shutil.copyfile(src.with_suffix(suffix), tmp_path / "onnxruntime_cpu" / f"amd-epyc.partial{suffix}")
    assert [p.name for p in shipped_tables(tmp_path)] == ["amd-epyc.csv"]


# ---- never half-written -------------------------------------------------------------------------------
def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


def _boom(*args, **kwargs):
    raise RuntimeError("simulated crash in the middle of the export")


def test_a_failure_mid_export_leaves_the_previous_export_intact(small, tmp_path, monkeypatch):
    arch, model = small
    write_export(model, arch, tmp_path, ["pt", "onnx"], num_classes=NUM_CLASSES, weights={}, latency={})
    (tmp_path / "extract.log").write_text("hydra's files stay\n")
    before = _snapshot(tmp_path)
    # pt and onnx of the new export are written (into the temporary directory) before this fails
    monkeypatch.setattr("hwnas.convert.torchscript.export_torchscript", _boom)
    retrained = trained_like(supernet.build_model(arch, num_classes=NUM_CLASSES), seed=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_export(retrained, arch, tmp_path, ["pt", "onnx", "torchscript"], num_classes=NUM_CLASSES,
                     weights={}, latency={})
    assert _snapshot(tmp_path) == before
    assert not list(tmp_path.glob(".export-*"))


def test_a_failure_in_a_fresh_directory_leaves_no_export(small, tmp_path, monkeypatch):
    arch, model = small
    monkeypatch.setattr("hwnas.export.verify.check_onnx", _boom)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_export(model, arch, tmp_path / "out", ["pt", "onnx"], num_classes=NUM_CLASSES, weights={},
                     latency={})
    assert list((tmp_path / "out").iterdir()) == []


def test_a_new_export_replaces_the_old_one_completely(small, tmp_path):
    arch, model = small
    write_export(model, arch, tmp_path, ["pt", "onnx"], num_classes=NUM_CLASSES, weights={}, latency={})
    write_export(model, arch, tmp_path, ["torchscript"], num_classes=NUM_CLASSES, weights={}, latency={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "model.ts"]
    assert list(json.loads((tmp_path / "manifest.json").read_text())["formats"]) == ["torchscript"]


# ---- clear errors ---------------------------------------------------------------------------------------
def test_unknown_format_is_a_clear_error():
    with pytest.raises(ExportError, match=r"unknown export format 'tflite'.*pt.*onnx.*coreml"):
        check_formats(["pt", "tflite"])
    assert check_formats("[onnx,pt]") == ["pt", "onnx"]


def test_tensorrt_without_tensorrt_is_a_clear_error_before_any_work(small, tmp_path):
    from hwnas.convert.tensorrt import tensorrt_available
    if tensorrt_available():
        pytest.skip("TensorRT is installed here")
    arch, model = small
    with pytest.raises(Exception, match="TensorRT") as e:
        write_export(model, arch, tmp_path / "out", ["onnx", "tensorrt"], num_classes=NUM_CLASSES,
                     weights={}, latency={})
    assert "install" in str(e.value).lower()
    assert not (tmp_path / "out").exists()


# ---- the GPU deploy rewrite -----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 5, 7, 7), (1, 3, 1, 1), (1, 4, 2, 9), (3, 16, 14, 14)])
def test_upsample_rewrite_equals_bilinear(shape):
    x = torch.randn(*shape) * 10
    assert (Upsample2xBilinear()(x) - reference_upsample(x)).abs().max() <= 1e-6 * x.abs().max()
    xd = x.double()
    assert torch.allclose(Upsample2xBilinear()(xd), reference_upsample(xd), rtol=0, atol=1e-12)


def test_gpu_deploy_recipe_keeps_the_outputs():
    import copy
    arch = search_spaces.get_space("efficientformerv2", resolution=64).reference("efficientformerv2_s0")
    model = trained_like(supernet.build_model(arch, num_classes=NUM_CLASSES))
    fast = optimize_for_gpu(copy.deepcopy(model), channels_last=True)
    ups = [m for m in fast.modules() if isinstance(m, Upsample2xBilinear)]
    assert len(ups) == 2 and not [m for m in fast.modules() if isinstance(m, torch.nn.Upsample)]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        rel = ((fast(x.to(memory_format=torch.channels_last)) - ref).abs().max() / ref.abs().max()).item()
    assert rel < 1e-5
