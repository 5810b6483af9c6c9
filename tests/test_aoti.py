"""`format=aoti`: an AOTInductor package of the `torch_inductor` deploy form, compiled for the CPU here.

One package per space (a random subnet, kept shallow: AOTInductor compiles every fused kernel with
the C++ compiler, minutes on a 2-core machine) is made by `hwnas.extract` and reused: its check in
the manifest, a reload in a fresh process that does not import hwnas, and the errors for inputs it
was not compiled for.
"""
import json
import random
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import search_spaces
from hwnas.convert.aoti import AOTIError, compile_aoti, load_aoti
from hwnas.export.format import tolerance
from hwnas.export.verify import reference_input
from hwnas.extract import extract

RES = 64


def shallow_random_arch(space, seed: int):
    """A random subnet with at most two blocks per stage (widths, ratios and EfficientFormerV2's
    last attention block drawn at random), so that it compiles in a test's time."""
    from search_spaces.efficientformerv2 import ATTN_POSITIONS
    rng = random.Random(seed)
    params = {}
    for name, values in space.parameters().items():
        m = re.fullmatch(r"s(\d)\.(n|l|e(\d+)|attn)", name)
        if m and m.group(2) == "attn":
            params[name] = 1
        elif m and m.group(3) and int(m.group(3)) in ATTN_POSITIONS[int(m.group(1))][-1:]:
            params[name] = rng.choice([v for v in values if v])
        elif m and (m.group(2) in ("n", "l") or int(m.group(3) or 0) >= 2):
            params[name] = min(values)
        else:
            params[name] = rng.choice(values)
    arch = space.decode(params)
    space.validate(arch)
    return arch


@pytest.fixture(scope="module")
def export(space_name, tmp_path_factory):
    """A fresh-init random subnet extracted with format=[pt, aoti]: (folder, manifest, what the app logged)."""
    import logging
    arch = shallow_random_arch(search_spaces.get_space(space_name, resolution=RES), seed=16)
    out = tmp_path_factory.mktemp(f"aoti-{space_name}")
    (out / "arch.yaml").write_text(json.dumps(arch.to_dict()))
    said = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger("hwnas.extract")
    level, logger.level = logger.level, logging.INFO
    logger.addHandler(handler)
    try:
        manifest = extract(arch=str(out / "arch.yaml"), formats=["aoti"], out_dir=out / "export", num_classes=10,
                           batch=2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return out / "export", manifest, said


def test_the_package_computes_what_the_model_computes(export):
    folder, manifest, said = export
    check = manifest["formats"]["aoti"]["check"]
    assert manifest["formats"]["aoti"]["files"] == ["model.pt2"] and (folder / "model.pt2").is_file()
    assert check["passed"], check
    assert check["device"] == "cpu" and check["precision"] == "fp32"
    assert check["tolerance_rel"] == tolerance("aoti").rel == 1e-4
    assert check["rel_err"] <= 1e-4
    assert check["input"] == {"shape": [2, 3, RES, RES], "dtype": "float32", "layout": "NCHW contiguous",
                              "device": "cpu"}
    assert check["compile_seconds"] > 0
    assert check["how"].startswith("torch._inductor.aoti_load_package('model.pt2', run_single_threaded=True)(x)")
    assert check["needs"] == {"torch": torch.__version__, "device": "cpu", "cuda": None}
    # the app's output says where the package runs, not only the manifest
    assert f"  aoti: needs torch {torch.__version__} on cpu; how to run it without hwnas: manifest.json " \
           "formats.aoti.check.how" in said, said
    assert "aoti" in manifest["tolerances"] and manifest["checks_passed"]


FRESH = textwrap.dedent("""
    import json, sys, torch
    run = torch._inductor.aoti_load_package(sys.argv[1])
    meta = json.loads(run.get_metadata()["hwnas"])
    x = torch.randn(*meta["input_shape"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.save(run(x), sys.argv[2])
    try:
        run(torch.randn(meta["input_shape"][0] + 1, *meta["input_shape"][1:]))
        error = None
    except RuntimeError as e:
        error = str(e)
    ours = sorted(m for m in sys.modules if m.split(".")[0] in ("hwnas", "supernet", "search_spaces"))
    print(json.dumps({"meta": meta, "imported": ours, "wrong_shape_error": error}))
""")


def test_the_package_reloads_in_a_process_without_hwnas(export, tmp_path):
    """Only torch: the package holds the graph and the weights; with AOTI_RUNTIME_CHECK_INPUTS=1
    (what the manifest tells a user without hwnas) the runtime refuses a batch it was not compiled for."""
    folder, manifest, _ = export
    import hwnas
    model = hwnas.load(folder)
    script = tmp_path / "run.py"
    script.write_text(FRESH)
    env = {"PATH": "/usr/bin:/bin", "AOTI_RUNTIME_CHECK_INPUTS": "1", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(script), str(folder / "model.pt2"), str(tmp_path / "y.pt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["imported"] == []
    assert report["meta"]["input_shape"] == [2, 3, RES, RES] and report["meta"]["arch_id"] == manifest["arch_id"]
    assert "unmatched dim value at 0" in report["wrong_shape_error"]
    y = torch.load(tmp_path / "y.pt", weights_only=True)
    with torch.no_grad():
        ref = model(reference_input((2, 3, RES, RES)))
    assert y.dtype == torch.float32 and y.shape == ref.shape
    assert float((y - ref).abs().max() / ref.abs().max()) <= tolerance("aoti").rel


def test_an_input_the_package_was_not_compiled_for_is_a_clear_error(export):
    folder, _, _ = export
    run = load_aoti(folder / "model.pt2")
    assert run.single_threaded  # the runtime a CUDA graph can capture, loaded as the table times it
    x = reference_input((2, 3, RES, RES))
    assert run(x).shape == (2, 10)
    with pytest.raises(AOTIError, match=r"compiled for a float32 NCHW input of shape \[2, 3, 64, 64\] on cpu, "
                                        r"got shape \[1, 3, 64, 64\].*format=aoti batch=1 resolution=64"):
        run(x[:1])
    with pytest.raises(AOTIError, match=r"got shape \[2, 3, 96, 96\].*resolution=96"):
        run(torch.randn(2, 3, 96, 96))
    with pytest.raises(AOTIError, match=r"got torch.float16: pass x.float\(\)"):
        run(x.half())
    with pytest.raises(AOTIError, match="non-contiguous tensor: pass x.contiguous()"):
        run(x.contiguous(memory_format=torch.channels_last))


def test_a_file_that_is_no_package_is_a_clear_error(tmp_path):
    (tmp_path / "model.pt2").write_bytes(b"not a zip file")
    with pytest.raises(AOTIError, match="cannot be loaded as an AOTInductor package.*export it again"):
        load_aoti(tmp_path / "model.pt2")
    with pytest.raises(AOTIError, match="no such AOTInductor package"):
        load_aoti(tmp_path / "missing.pt2")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_compiling_for_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    with pytest.raises(AOTIError, match="device=cuda: .* sees no CUDA GPU here"):
        compile_aoti(torch.nn.Conv2d(3, 4, 3), (1, 3, 8, 8), tmp_path / "m.pt2", device="cuda")
    assert not list(tmp_path.iterdir())
