"""The `torch_inductor` target on a machine without a GPU: what can run here does (its deploy form,
fingerprints, its schema, the parallel compile workers and their cache, for the CPU), and what
cannot says so (timing needs CUDA; a search without a measured table names the profile command)."""
import copy
import subprocess
import sys

import pytest
import torch

import search_spaces
import supernet
from hwnas.errors import ConfigError
from hwnas.latency import TimingUnavailable, deploy_form, get_backend
from hwnas.latency.fingerprint import block_fingerprint, spec_for_key
from hwnas.latency.inductor import compile_all, package_key

HEADS = ["efficientformerv2.head(in=176,classes=1000,hw=7)", "nextvit.head(in=512,classes=1000,hw=7)"]


def test_its_deploy_form_is_the_gpu_recipe_compiled_and_fingerprinted_apart():
    form = deploy_form("torch_inductor")
    assert form.settings() == {"batch": 8, "precision": "fp16", "channels_last": True, "depthwise": "cudnn",
                               "autotune": True}
    assert "AOTInductor" in form.describe()
    spec = spec_for_key("efficientformerv2.attn(dim=192,hidden=576,stride=2,hw=14)")
    # the same module as torch_cuda's (the recipe), but a compiled graph is another row
    cuda = block_fingerprint(spec, deploy_form("torch_cuda"))
    assert block_fingerprint(spec, form) != cuda
    assert block_fingerprint(spec, form) != block_fingerprint(spec, deploy_form("torch_inductor", batch=1))
    with pytest.raises(ConfigError, match="takes no setting 'opset'"):
        deploy_form("torch_inductor", opset=17)
    with pytest.raises(ConfigError, match="depthwise='fused': allowed: auto, cudnn, shifted"):
        deploy_form("torch_inductor", depthwise="fused")


def test_its_defaults_are_what_measured_fastest_and_each_names_what_runs(monkeypatch, tmp_path):
    """depthwise=auto is shifted at batch 1 and cudnn above; autotune compiles CUDA packages with Inductor's
    max_autotune (not CPU ones). Settings name the resolved choice, and a package compiled with autotuning
    is fingerprinted apart (a table timed without it does not claim to time what ships with it)."""
    assert deploy_form("torch_inductor", batch=1).settings()["depthwise"] == "shifted"
    assert deploy_form("torch_inductor", batch=8).settings()["depthwise"] == "cudnn"
    assert deploy_form("torch_inductor", batch=1, depthwise="cudnn").settings()["depthwise"] == "cudnn"
    assert deploy_form("torch_inductor", batch=8, depthwise="shifted").settings()["depthwise"] == "shifted"
    tuned, plain = deploy_form("torch_inductor"), deploy_form("torch_inductor", autotune=False)
    assert tuned.inductor_configs("cuda") == {"max_autotune": True}
    assert tuned.inductor_configs("cpu") == plain.inductor_configs("cuda") == {}
    assert "max_autotune" in tuned.describe() and "max_autotune" not in plain.describe()
    spec = spec_for_key("efficientformerv2.attn(dim=192,hidden=576,stride=2,hw=14)")
    assert block_fingerprint(spec, tuned) != block_fingerprint(spec, plain)
    with pytest.raises(ConfigError, match="autotune='yes': allowed: true, false"):
        deploy_form("torch_inductor", autotune="yes")
    # what compile_aoti is asked for: max_autotune on CUDA (an explicit config wins), recorded in the metadata
    import hwnas.convert.aoti as aoti
    seen = []
    monkeypatch.setattr(aoti, "compile_aoti", lambda *a, **k: seen.append(k))
    tuned.compile(torch.nn.Identity(), (8, 3, 8, 8), tmp_path / "p.pt2", device="cuda")
    tuned.compile(torch.nn.Identity(), (8, 3, 8, 8), tmp_path / "p.pt2", device="cuda",
                  inductor_configs={"max_autotune": False})
    plain.compile(torch.nn.Identity(), (8, 3, 8, 8), tmp_path / "p.pt2", device="cuda")
    assert [k["inductor_configs"] for k in seen] == [{"max_autotune": True}, {"max_autotune": False}, None]
    assert seen[0]["metadata"]["form"]["autotune"] is True
    assert seen[0]["metadata"]["inductor_configs"] == {"max_autotune": True}


def test_shifted_depthwise_is_another_graph_computing_the_same_outputs():
    """depthwise=shifted: every depthwise convolution of the form becomes k² multiply-adds (fused by
    Inductor), outputs equal the convolution's, and the block is fingerprinted apart (another graph)."""
    from hwnas.convert.optimize import ShiftedDepthwiseConv2d
    spec = spec_for_key("efficientformerv2.attn(dim=192,hidden=576,stride=2,hw=14)")
    cudnn = deploy_form("torch_inductor", precision="fp32", channels_last=False)
    shifted = deploy_form("torch_inductor", precision="fp32", channels_last=False, depthwise="shifted")
    assert "shifted" in shifted.describe() and "shifted" not in cudnn.describe()
    assert block_fingerprint(spec, shifted) != block_fingerprint(spec, cudnn)
    torch.manual_seed(0)
    block = supernet.build_block(spec).eval()
    for p in block.parameters():  # non-trivial BN statistics and biases to fold
        p.data.normal_(0, 0.1)
    a = cudnn.module(copy.deepcopy(block))
    b = shifted.module(copy.deepcopy(block))
    n = sum(isinstance(m, ShiftedDepthwiseConv2d) for m in b.modules())
    assert n == sum(isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
                    for m in a.modules()) > 0
    x = torch.randn(2, 192, 14, 14)
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("settings, message", [
    ({"compile_workers": 0}, "target.compile_workers=0: must be >= 1"),
    ({"precision": "int8"}, "allowed: fp16, bf16, fp32"),
    ({"threads": 4}, "target.threads: target torch_inductor takes no such key"),
    ({"opset": 17}, "target.opset: target torch_inductor takes no such key")])
def test_its_schema_refuses_bad_settings_before_any_work(settings, message):
    with pytest.raises(ConfigError) as e:
        get_backend("torch_inductor", **settings)
    assert message in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_timing_needs_a_gpu_and_says_so():
    with pytest.raises(TimingUnavailable, match="needs an NVIDIA GPU"):
        get_backend("torch_inductor")


def test_blocks_compile_in_parallel_workers_once(tmp_path):
    """The compile step the profiler runs before timing, here for the CPU: two blocks in two spawned
    worker processes, each package loadable and equal to its block; a second call finds both in
    the cache and compiles nothing."""
    form = deploy_form("torch_inductor", batch=1, precision="fp32")
    jobs = []
    for key in HEADS:
        spec = spec_for_key(key)
        shape = supernet.block_input_shape(spec, 1)
        fp = block_fingerprint(spec, form)
        path = tmp_path / f"{package_key(fp, shape, True, form.settings(), 'cpu')}.pt2"
        jobs.append({"kind": "block", "what": key, "shape": list(shape), "native": True, "form": form.settings(),
                     "device": "cpu", "path": str(path)})
    stats = compile_all(jobs, workers=2, progress=False)
    assert stats["packages"] == 2 and stats["seconds"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{package_key(block_fingerprint(spec_for_key(k), form), supernet.block_input_shape(spec_for_key(k), 1), True, form.settings(), 'cpu')}.pt2" for k in HEADS)  # noqa: E501
    from hwnas.convert.aoti import load_aoti
    for job in jobs:
        run = load_aoti(job["path"])
        assert run.metadata["what"] == job["what"] and run.metadata["input_layout"] == "channels_last"
        x = torch.randn(job["shape"]).contiguous(memory_format=torch.channels_last)
        assert run(x).shape == (1, 1000)
    assert compile_all(jobs, workers=2, progress=False)["packages"] == 0


def test_the_deadline_kills_compiles_under_way(tmp_path):
    """A deadline is a hard stop for the compile workers (a max_autotune compile can outlast a GPU
    session): with it already as good as passed, compile_all returns without waiting for the two
    compiles (a spawned worker alone takes longer than this to import torch), writes no package and
    leaves no worker process behind, nor the half-written package of a compile killed earlier (a temporary
    file whose writer is dead); a live writer's stays."""
    import multiprocessing
    import os
    import time
    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()
    stale = tmp_path / f".0.{gone.pid}-0.tmp.pt2"  # as hwnas._files.atomic_path names it
    live = tmp_path / f".1.{os.getpid()}-0.tmp.pt2"
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    form = deploy_form("torch_inductor", batch=1, precision="fp32")
    jobs = [{"kind": "block", "what": key, "shape": list(supernet.block_input_shape(spec_for_key(key), 1)),
             "native": True, "form": form.settings(), "device": "cpu", "path": str(tmp_path / f"{i}.pt2")}
            for i, key in enumerate(HEADS)]
    stats = compile_all(jobs, workers=2, progress=False, deadline=time.monotonic() + 0.5)
    assert stats["packages"] == 0
    assert not list(tmp_path.glob("[!.]*.pt2"))
    assert not multiprocessing.active_children()
    assert not stale.exists() and live.exists()


def test_a_search_without_a_measured_table_names_the_profile_command(tmp_path):
    """No table is made up: without a measured torch_inductor table the search stops at start-up,
    naming the command that profiles one (here: an empty tables folder, so it holds whatever ships)."""
    r = subprocess.run([sys.executable, "-m", "hwnas.search", "+target=torch_inductor", "space=nextvit",
                        f"target.tables_dir={tmp_path / 'none'}", f"hydra.run.dir={tmp_path / 'run'}",
                        "evaluator=proxy", "search.n_trials=2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "no latency table for target 'torch_inductor' and nextvit" in r.stderr
    assert "python -m hwnas.profile +target=torch_inductor space=nextvit" in r.stderr
    assert not (tmp_path / "run" / "trials.csv").exists()


def test_the_profiler_compiles_a_chunk_then_times_it(tmp_path):
    """A compiled target gets the blocks to compile a chunk at a time (4 per worker), each chunk
    before it is timed, so a run stopped by its deadline keeps what it measured; the compile time
    goes into the space's profiling record. (ONNX Runtime stands in for the GPU timing here; what
    is checked is the profiler's order of work.)"""
    from hwnas.latency.backends import OnnxRuntimeCPU
    from hwnas.latency.fingerprint import scheme_info
    from hwnas.latency.profiler import profile_blocks
    from hwnas.latency.table import LatencyTable

    events = []

    class Compiled(OnnxRuntimeCPU):
        compile_workers = 1

        def precompile(self, items, progress=True, deadline=None):
            events.append(("compile", [spec.key for spec, _, _ in items]))
            return {"packages": len(items), "seconds": 2.0 * len(items), "wall_seconds": 1.0}

        def measure_onnx(self, onnx_path, input_shape):
            return {"median_ms": 1.0, "p10_ms": 1.0, "spread": 0.0, "runs": 1}

        def measure(self, model, input_shape):
            events.append(("time", input_shape))
            return super().measure(model, input_shape)

    specs = search_spaces.get_space("efficientformerv2").min_arch().blocks()[:6]
    table = LatencyTable({}, {"target": "onnxruntime_cpu", "source": "measured", "statistic": "p10_ms",
                              "fingerprint": {**scheme_info(), "form": {"batch": 1, "precision": "fp32", "opset": 17}}},
                         tmp_path / "t.csv", check=False)
    profile_blocks(Compiled(canary=False, clock="wall"), table, specs, "efficientformerv2", progress=False)
    kinds = [e[0] for e in events]
    assert kinds == ["compile"] + ["time"] * 4 + ["compile"] + ["time"] * 2
    assert events[0][1] == [s.key for s in specs[:4]] and events[5][1] == [s.key for s in specs[4:]]
    prof = table.provenance["profiling"]["efficientformerv2"]
    assert prof["compile_seconds"] == 12.0 and prof["compiled_packages"] == 6 and prof["compile_wall_seconds"] == 2.0
