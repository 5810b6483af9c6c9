"""Deployment speed: our exported Next-ViT-S and EfficientFormerV2-S1 vs timm's same models.

GPU machine, compiled (issue 27): our AOTInductor package as shipped vs timm under torch.compile
(default, reduce-overhead, max-autotune), batch 1 and 8, Next-ViT-S and EfficientFormerV2-S0/S1;
rows written as measured, a rerun of the same command resumes (copy $OUT's two files into
experiments/results/ between runs), no compile starts after --deadline-s:

    cp experiments/results/deploy_speed_compiled_nvidia-h*.jsonl "$OUT/" 2>/dev/null; PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/deploy_speed.py --compiled --modes default reduce-overhead --deadline-s 280 --limit-s 400 --out "$OUT/deploy_speed_compiled_$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-')"
    PYTHONPATH=. python experiments/deploy_speed.py --compiled --device cpu --models efficientformerv2_s0 --batches 1 --modes default --out /tmp/ds   # CPU smoke

(The `cp` resumes from the committed rows: copy $OUT's .jsonl and .md into experiments/results/ and
commit after each run, then run the same line again until its last line says `"left": []`.
max-autotune compiles for minutes a model; a mode that would not fit the 570 s limit (--limit-s) is
left for the next run. Rows of one run are timed interleaved; rows of a `--modes max-autotune` run
apart are rows of their own.)

    PYTHONPATH=. python experiments/deploy_speed.py   # GPU machine: torch_cuda + ONNX Runtime CPU, ~3 min
    python experiments/deploy_speed.py --quick        # any CPU box: a few ORT runs of ours (smoke check)

- `torch_cuda`: fp16, batch 8, 224x224, eval, one CUDA graph per model, median of many replays
  timed with CUDA events. Ours is the deploy recipe of `hwnas.convert.optimize` (BatchNorms folded,
  EfficientFormerV2's x2 bilinear upsample as elementwise ops, channels_last); timm's model runs as
  timm builds it (NCHW) and, to be strict, also in channels_last -- the ratio is against timm's
  faster layout.
- `onnxruntime_cpu`: batch 1, fp32, 1 intra-op thread, full graph optimisation, timed by the
  calling thread's CPU time (robust on shared machines); both exported with the same exporter (TorchScript-based `torch.onnx.export`, opset 17), ours BN-folded as
  `python -m hwnas.extract format=onnx` writes it.

- compiled (`--compiled`, or `run_compiled` run by `experiments/inductor_gpu.py`): timm under
  `torch.compile` in each mode vs our AOTInductor package as `load_aoti` ships it (single-threaded
  runtime, one CUDA graph) and our eager recipe, batch 1 and 8, Next-ViT-S and EfficientFormerV2-S0/S1
  -> experiments/results/deploy_speed_compiled_<gpu>.{jsonl,md} (rows of one GPU per file: a rerun resumes only its own).

Where `supernet.pretrained` can import timm's state dict, ours carries timm's (random) weights and
the script reports the output difference, so both sides are provably the same function.
Measurements of the two sides are interleaved in rounds so drifting clocks hit both alike.
Writes experiments/results/deploy_speed_<gpu|cpu>.json and .md (needs no Hydra or Optuna).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch

import search_spaces
import supernet
from hwnas._files import atomic_write, scratch_until_exit
from hwnas.convert.onnx import export_onnx
from hwnas.convert.optimize import optimize_for_gpu
from hwnas.latency.backends import cpu_name, slug

ROOT = Path(__file__).resolve().parents[1]

MODELS = {"nextvit_s": "nextvit_small", "efficientformerv2_s1": "efficientformerv2_s1"}
SPACE = {"nextvit_s": "nextvit", "efficientformerv2_s1": "efficientformerv2", "efficientformerv2_s0": "efficientformerv2"}
#: the compiled comparison (--compiled): timm under torch.compile vs our AOTInductor package
COMPILED = {"nextvit_s": "nextvit_small", "efficientformerv2_s0": "efficientformerv2_s0",
            "efficientformerv2_s1": "efficientformerv2_s1"}


def build_ours(name: str, timm_model=None) -> tuple[torch.nn.Module, dict]:
    arch = search_spaces.get_space(SPACE[name]).reference(name)
    model = supernet.build_model(arch).eval()
    info = {"arch_id": arch.id, "params": arch.params(), "weights": "random (trunc-normal)"}
    if timm_model is not None:
        try:
            from supernet.pretrained import load_pretrained
            load_pretrained(model, {k: v.detach().cpu() for k, v in timm_model.state_dict().items()})
            x = torch.randn(2, 3, 224, 224)
            with torch.no_grad():
                a, b = model(x), timm_model.cpu().float().eval()(x)
            info["weights"] = "timm's, imported with supernet.pretrained.load_pretrained"
            info["max_rel_diff_vs_timm_fp32"] = float((a - b).abs().max() / b.abs().max())
        except Exception as e:  # the import is a bonus; the timing stands without it
            info["weights_note"] = f"timm weights not imported ({type(e).__name__}: {e})"
    return model, info


def build_timm(name: str):
    import timm
    return timm.create_model({**MODELS, **COMPILED}[name], pretrained=False).eval()


# ---- torch_cuda ------------------------------------------------------------------------------------
def cuda_graph_runner(model: torch.nn.Module, x: torch.Tensor):
    """Capture one forward in a CUDA graph; returns replay()."""
    from hwnas.device import warm_on_side_stream
    warm_on_side_stream(model, x)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.no_grad():
        model(x)
    return g.replay


def time_replays(replay, n: int) -> list[float]:
    start = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(n)]
    for i in range(n):
        start[i].record()
        replay()
        end[i].record()
    torch.cuda.synchronize()
    return [s.elapsed_time(e) for s, e in zip(start, end)]


def bench_cuda(variants: dict, batch: int, rounds: int, per_round: int) -> dict:
    runners = {}
    for key, (model, channels_last) in variants.items():
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=torch.float16).to(memory_format=fmt)
        runners[key] = cuda_graph_runner(model, x)
        for _ in range(20):
            runners[key]()
    torch.cuda.synchronize()
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            times[k] += time_replays(r, per_round)
    return {k: {"median_ms": statistics.median(v), "p10_ms": sorted(v)[len(v) // 10], "runs": len(v)}
            for k, v in times.items()}


def run_cuda(quick: bool, timm_models: dict, ours: dict) -> dict:
    out = {"device": torch.cuda.get_device_name(), "precision": "fp16", "batch": 8,
           "method": "one CUDA graph per model, CUDA-event timing per replay, interleaved rounds"}
    for name in MODELS:
        variants = {}
        base = ours[name]
        variants["ours_folded_nchw"] = (supernet.fuse_for_deploy(copy.deepcopy(base)).cuda().half(), False)
        variants["ours_deploy_nchw"] = (optimize_for_gpu(copy.deepcopy(base), channels_last=False).cuda().half(), False)
        variants["ours_deploy_channels_last"] = (
            optimize_for_gpu(copy.deepcopy(base), channels_last=True).cuda().half(), True)
        if name in timm_models:
            t = timm_models[name]
            variants["timm_nchw"] = (copy.deepcopy(t).cuda().half().eval(), False)
            variants["timm_channels_last"] = (
                copy.deepcopy(t).cuda().half().eval().to(memory_format=torch.channels_last), True)
        res = bench_cuda(variants, 8, rounds=2 if quick else 5, per_round=20 if quick else 100)
        ours_best = min(res[k]["median_ms"] for k in res if k.startswith("ours_deploy"))
        entry = {"variants": res, "ours_ms": ours_best}
        if name in timm_models:
            timm_best = min(res["timm_nchw"]["median_ms"], res["timm_channels_last"]["median_ms"])
            entry.update(timm_ms=timm_best, ratio=ours_best / timm_best,
                         ratio_vs_timm_default=ours_best / res["timm_nchw"]["median_ms"])
        out[name] = entry
        del variants
        torch.cuda.empty_cache()
    return out


# ---- ONNX Runtime CPU ---------------------------------------------------------------------------------
def ort_session(path: Path, threads: int):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def bench_ort(paths: dict, threads: int, rounds: int, per_round: int, warmup: int) -> dict:
    import numpy as np
    sessions = {k: ort_session(p, threads) for k, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    feeds = {k: {s.get_inputs()[0].name: x} for k, s in sessions.items()}
    for k, s in sessions.items():
        for _ in range(warmup):
            s.run(None, feeds[k])
    # With one intra-op thread ORT computes on the calling thread, so this thread's CPU time is the
    # run's compute time, unaffected by other processes on a shared machine; wall time is kept too.
    clock = time.thread_time if threads == 1 else time.perf_counter
    times = {k: [] for k in sessions}
    walls = {k: [] for k in sessions}
    for _ in range(rounds):
        for k, s in sessions.items():
            for _ in range(per_round):
                w0, t0 = time.perf_counter(), clock()
                s.run(None, feeds[k])
                times[k].append((clock() - t0) * 1e3)
                walls[k].append((time.perf_counter() - w0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "p10_ms": sorted(v)[len(v) // 10], "runs": len(v),
                "wall_median_ms": statistics.median(walls[k])} for k, v in times.items()}


def run_ort(quick: bool, timm_models: dict, ours: dict, threads: int) -> dict:
    import onnxruntime as ort
    out = {"device": cpu_name(), "runtime": f"onnxruntime {ort.__version__}", "precision": "fp32",
           "batch": 1, "threads": threads, "opset": 17,
           "method": ("ORT_ENABLE_ALL; per run the thread CPU time (1 thread: the compute itself; "
                      "wall time also kept), interleaved rounds") if threads == 1 else
                     "ORT_ENABLE_ALL, wall clock per run, interleaved rounds"}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            paths = {"ours": Path(tmp) / f"{name}_ours.onnx"}
            export_onnx(supernet.fuse_for_deploy(copy.deepcopy(ours[name]).cpu().float()),
                        (1, 3, 224, 224), paths["ours"], opset=17)
            if name in timm_models:
                paths["timm"] = Path(tmp) / f"{name}_timm.onnx"
                export_onnx(copy.deepcopy(timm_models[name]).cpu().float().eval(), (1, 3, 224, 224),
                            paths["timm"], opset=17)
            res = bench_ort(paths, threads, rounds=1 if quick else 24, per_round=3 if quick else 4,
                            warmup=1 if quick else 5)
            entry = {"variants": res, "ours_ms": res["ours"]["median_ms"]}
            if "timm" in res:
                entry.update(timm_ms=res["timm"]["median_ms"],
                             ratio=res["ours"]["median_ms"] / res["timm"]["median_ms"],
                             ratio_p10=res["ours"]["p10_ms"] / res["timm"]["p10_ms"])
            out[name] = entry
    return out


# ---- compiled: timm under torch.compile vs our AOTInductor package --------------------------------------
#: torch.compile modes timm runs under: "default" (replayed in our CUDA graph), and the two a GPU user
#: picks for speed, which bring their own CUDA graphs (cudagraph trees), so they are called, not re-captured
TIMM_MODES = ("default", "reduce-overhead", "max-autotune")
#: seconds a mode's compile (and its share of the timing) is given before it is started: max-autotune
#: benchmarks kernel choices for minutes (Next-ViT-S at batch 1 ran past 500 s on an H200 with our packages
#: compiling beside it: inductor_gpu.py, 2026-12-06), so it starts only at the head of a run of its own
#: (`--modes max-autotune`); a mode that would not fit before `hard_end` is left for the next run
MODE_BUDGET_S = {"default": 90.0, "reduce-overhead": 120.0, "max-autotune": 560.0}


def run_compiled(models: list[str], batches: list[int], rows_path: Path, deadline: float, workers: int = 6,
                 rounds: int = 5, per_round: int = 100, device: str = "cuda", log=print, profile_over: float = 0.8,
                 resolution: int = 224, modes: tuple[str, ...] = TIMM_MODES, hard_end: float | None = None,
                 ours_variants: dict | None = None, machine: dict | None = None) -> list:
    """Per model and batch: timm's model under `torch.compile` in each of `modes`, our deploy recipe
    eager (`torch_cuda`, in one CUDA graph) and our AOTInductor package as shipped (`format=aoti`,
    loaded by `hwnas.convert.aoti.load_aoti`: single-threaded runtime, float32 NCHW in, fp16
    channels_last inside, replayed from one CUDA graph), all fp16, interleaved rounds timed with CUDA
    events. `ours_aoti_shipped` is a call of the loaded package (input copied into the graph's static
    buffer, replay, output cloned: what a user's call costs); `ours_aoti_graph` the bare replay.
    timm `default` is replayed from our CUDA graph; `reduce-overhead` and `max-autotune` replay their
    own (each call after `torch.compiler.cudagraph_mark_step_begin()`), which copies the input too.
    Our packages compile in `workers` processes while timm compiles here. `ours_variants` ({name:
    {"form": torch_inductor form settings, "inductor_configs": {...}}}, `--ours-variant`): more packages
    of ours, each compiled so, called as shipped and timed in the same rounds (`ours_aoti_v_<name>`;
    their ratios in the row's `ours_variants`). Rows (one per model and
    batch) go to `rows_path` (JSON lines) as they are measured; a rerun skips the rows there that hold
    every mode of `modes` and every variant (so `--modes max-autotune`, run apart, adds rows of its own).
    No compile starts after `deadline` (time.monotonic()), nor one that `MODE_BUDGET_S` says would not
    end before `hard_end` (the command's time limit); a row cut so is written with `"partial": true`,
    the run stops there, and the next run measures that row again, whole. Where ours / timm's best > `profile_over`, the
    package's top CUDA kernels (torch.profiler, 20 runs without the graph) say where the time goes.
    `device="cpu"` (smoke runs): the same steps on the CPU, fp32, without graphs, at `resolution`,
    and without timm where it is not installed (the rows say so)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor
    from hwnas.convert.aoti import load_aoti
    from hwnas.latency.deploy import deploy_form
    from hwnas.latency.inductor import compile_job

    cuda = device == "cuda"
    precision = "fp16" if cuda else "fp32"
    dtype = torch.float16 if cuda else torch.float32
    rows_path = Path(rows_path)
    here = device_name(cuda)
    earlier = [r for r in _read_jsonl(rows_path) if not r.get("partial") and r.get("device_name") == here]
    ours_variants = dict(ours_variants or {})
    form = shipped_forms(batches, precision)
    done = {(r["model"], r["batch"]) for r in earlier if r["batch"] in form
            and covers(r, modes, ours_variants, form[r["batch"]].settings())}
    todo = [(m, b) for m in models for b in batches if (m, b) not in done]
    if not todo:
        return earlier
    tmp = scratch_until_exit("deploy-speed")
    timm_models, ours, jobs = {}, {}, {}
    try:
        import timm  # noqa: F401
        have_timm = True
    except ImportError:  # a CPU smoke run of the plumbing: ours only, said in every row
        have_timm = False
    for name in dict.fromkeys(m for m, _ in todo):
        torch.manual_seed(0)
        timm_models[name] = build_timm(name) if have_timm else None
        ours[name], _ = build_ours(name, timm_models[name])
        if resolution != 224:
            ours[name] = supernet.build_model(ours[name].arch.with_resolution(resolution)).eval()
        torch.save(ours[name].state_dict(), tmp / f"{name}.pt")
    pool = ProcessPoolExecutor(max_workers=max(1, min(workers, len(todo))), mp_context=mp.get_context("spawn"))
    for name, b in todo:
        arch = ours[name].arch
        jobs[(name, b)] = pool.submit(compile_job, {
            "kind": "network", "what": arch.to_dict(), "shape": [b, 3, resolution, resolution], "native": False,
            "form": form[b].settings(), "device": device, "path": str(tmp / f"{name}_b{b}.pt2"),
            "weights": str(tmp / f"{name}.pt"), "compile_threads": 1})
        for vname, v in ours_variants.items():
            jobs[(name, b, vname)] = pool.submit(compile_job, {
                "kind": "network", "what": arch.to_dict(), "shape": [b, 3, resolution, resolution], "native": False,
                "form": {**form[b].settings(), **v.get("form", {})}, "device": device,
                "inductor_configs": v.get("inductor_configs") or None,
                "path": str(tmp / f"{name}_b{b}_{vname}.pt2"), "weights": str(tmp / f"{name}.pt"),
                "compile_threads": 1})
    out = list(earlier)
    try:
        for name, b in todo:
            if time.monotonic() > deadline:
                log({"phase": "deadline", "left": [list(t) for t in todo if t not in {(r["model"], r["batch"]) for r in out}]})
                break
            x = torch.randn(b, 3, resolution, resolution, device=device)
            variants, compile_s, compiled, partial = {}, {}, {}, False
            base = timm_models[name] if have_timm else ours[name]
            with torch.no_grad():
                ref = copy.deepcopy(base).float().to(device)(x).float()
            timm_variants = {}  # compiled here while our package compiles in a worker
            for mode in (modes if have_timm else ()):
                if time.monotonic() > deadline or (hard_end is not None and
                                                   hard_end - time.monotonic() < MODE_BUDGET_S.get(mode, 120.0)):
                    partial = True
                    log({"phase": "deploy_speed_step", "model": name, "batch": b,
                         "step": f"out of time: timm {mode} left for the next run"})
                    break
                log({"phase": "deploy_speed_step", "model": name, "batch": b, "step": f"timm torch.compile mode={mode}"})
                t0 = time.perf_counter()
                m = copy.deepcopy(timm_models[name]).to(device=device, dtype=dtype).eval()
                with torch.no_grad():
                    # one eager call first: timm's EfficientFormerV2 caches its attention biases on the first
                    # eval call, and a cache written inside a CUDA-graph tree is overwritten by the next replay
                    # (H200, call 5 of 2026-12-06: "accessing tensor output of CUDAGraphs that has been
                    # overwritten"); filled eagerly, the compiled graph reads it as a constant
                    m(x.to(dtype))
                fn = torch.compile(m, mode=None if mode == "default" else mode)
                with torch.no_grad():
                    for _ in range(3):  # compiles; cudagraph trees record on the later calls
                        torch.compiler.cudagraph_mark_step_begin()
                        fn(x.to(dtype))
                compile_s[mode] = round(time.perf_counter() - t0, 1)
                compiled[mode] = fn
                timm_variants[f"timm_{mode}"] = (fn, x.to(dtype))
            deploy = deploy_form("torch_cuda", batch=b, precision=precision).module(copy.deepcopy(ours[name])).to(device)
            # the eager recipe with attention as one scaled_dot_product_attention call (issue 27's cheap change)
            deploy_sdpa = deploy_form("torch_cuda", batch=b, precision=precision, attention="sdpa").module(
                copy.deepcopy(ours[name])).to(device)
            log({"phase": "deploy_speed_step", "model": name, "batch": b, "step": "waiting for our AOTInductor package"})
            job = jobs[(name, b)].result()
            log({"phase": "deploy_speed_step", "model": name, "batch": b, "step": "loading our package",
                 "compile_seconds": round(job["seconds"], 1)})
            package = load_aoti(job["path"])  # as shipped: single-threaded runtime, CUDA graph on CUDA
            with torch.no_grad():
                y = package(x)
            variants["ours_deploy_eager"] = (deploy, x.to(dtype).contiguous(memory_format=torch.channels_last))
            variants["ours_deploy_eager_sdpa"] = (deploy_sdpa, x.to(dtype).contiguous(memory_format=torch.channels_last))
            variants["ours_aoti_shipped"] = (package, x)
            if cuda:
                variants["ours_aoti_graph"] = (package, x)
            v_done = {}
            for vname in ours_variants:
                log({"phase": "deploy_speed_step", "model": name, "batch": b, "step": f"loading our variant {vname}"})
                vjob = jobs[(name, b, vname)].result()
                vpack = load_aoti(vjob["path"])
                with torch.no_grad():
                    vy = vpack(x)
                v_done[vname] = {"settings": ours_variants[vname], "compile_seconds": round(vjob["seconds"], 1),
                                 "rel_err_vs_fp32": float((vy.float() - ref).abs().max() / ref.abs().max())}
                variants[f"ours_aoti_v_{vname}"] = (vpack, x)
            variants.update(timm_variants)
            log({"phase": "deploy_speed_step", "model": name, "batch": b, "step": "timing"})
            res = _bench(variants, rounds, per_round, cuda)
            timm_ms = {m: res[f"timm_{m}"]["median_ms"] for m in compile_s}
            best = min(timm_ms, key=timm_ms.get) if timm_ms else None
            shipped = res["ours_aoti_shipped"]["median_ms"]
            row = {"model": name, "batch": b, "resolution": resolution, "device": device, "device_name": here,
                   "precision": precision, "shipped_form": form[b].settings(),
                   "variants": res, "timm": "torch.compile(timm model, mode=...)" if have_timm else "NOT INSTALLED",
                   "timm_compile_seconds": compile_s, "aoti_compile_seconds": round(job["seconds"], 1),
                   "aoti_loaded": {"single_threaded": package.single_threaded, "cuda_graph": cuda},
                   "timm_best_mode": best, "timm_best_ms": timm_ms.get(best),
                   "ratio_shipped_vs_timm": {m: shipped / t for m, t in timm_ms.items()},
                   "ratio_aoti_vs_timm_compiled": shipped / timm_ms[best] if best else None,
                   "ratio_eager_vs_timm_compiled": res["ours_deploy_eager"]["median_ms"] / timm_ms[best] if best else None,
                   "ratio_eager_sdpa_vs_timm_compiled":
                       res["ours_deploy_eager_sdpa"]["median_ms"] / timm_ms[best] if best else None,
                   ("rel_err_vs_timm_fp32" if have_timm else "rel_err_vs_ours_fp32"):
                       float((y.float() - ref).abs().max() / ref.abs().max()), **({"partial": True} if partial else {})}
            for vname, v in v_done.items():
                ms = res[f"ours_aoti_v_{vname}"]["median_ms"]
                v.update(median_ms=ms, ratio_vs_shipped=ms / shipped,
                         ratio_vs_timm_compiled=ms / timm_ms[best] if best else None)
            if v_done:
                row["ours_variants"] = v_done
            if machine:
                row["machine"] = machine
            if cuda and best and row["ratio_aoti_vs_timm_compiled"] > profile_over:
                row["aoti_top_kernels"] = _top_kernels(package.runner, x)
                row["timm_compiled_top_kernels"] = _top_kernels(compiled[best], x.to(dtype))
            out.append(row)
            with open(rows_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            log({"phase": "deploy_speed", **{k: v for k, v in row.items() if not k.endswith("kernels")}})
            del compiled, deploy, package, variants, v_done
            if cuda:
                torch._dynamo.reset()
                torch.cuda.empty_cache()
            if partial:
                log({"phase": "deadline", "left": [list(t) for t in todo if t not in
                                                   {(r["model"], r["batch"]) for r in out if not r.get("partial")}]})
                break
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return out


def parse_variants(specs: list[str]) -> dict:
    """`NAME:KEY=VALUE,...` each -> {NAME: {"form": {...}, "inductor_configs": {...}}}: keys under
    `inductor.` are Inductor configs (values read as JSON where they parse: true, 3, "x"), the others
    torch_inductor deploy-form settings (checked by `deploy_form`)."""
    from hwnas.latency.deploy import deploy_form
    out = {}
    for spec in specs:
        name, sep, rest = spec.partition(":")
        if not sep or not name.isidentifier():
            raise SystemExit(f"--ours-variant {spec!r}: write NAME:KEY=VALUE,... (e.g. shifted:depthwise=shifted)")
        form, configs = {}, {}
        for item in filter(None, rest.split(",")):
            key, eq, value = item.partition("=")
            if not eq:
                raise SystemExit(f"--ours-variant {spec!r}: {item!r} is not KEY=VALUE")
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
            if key.startswith("inductor."):
                configs[key[len("inductor."):]] = value
            else:
                form[key] = value
        deploy_form("torch_inductor", **form)  # a bad setting fails here, before any compile
        out[name] = {"form": form, "inductor_configs": configs}
    return out


def device_name(cuda: bool) -> str:
    """What a compiled row was measured on (rows of another GPU are never resumed, nor tabled together)."""
    return torch.cuda.get_device_name() if cuda else cpu_name()


def compiled_stem(cuda: bool) -> Path:
    """experiments/results/deploy_speed_compiled_<gpu> (e.g. _nvidia-h200), or _cpu for a CPU smoke run."""
    return ROOT / "experiments" / "results" / f"deploy_speed_compiled_{slug(device_name(True)) if cuda else 'cpu'}"


def shipped_forms(batches, precision: str) -> dict:
    """{batch: the torch_inductor deploy form `format=aoti` ships at that batch}: what `ours_aoti_shipped` compiles."""
    from hwnas.latency.deploy import deploy_form
    return {b: deploy_form("torch_inductor", batch=b, precision=precision) for b in batches}


#: what `ours_aoti_shipped` was compiled as in rows measured before rows recorded it (`shipped_form`)
LEGACY_SHIPPED = {"depthwise": "cudnn", "autotune": False}


def shipped_form_of(row: dict) -> dict:
    """The torch_inductor form settings our shipped package of `row` was compiled with."""
    return row.get("shipped_form") or {"batch": row["batch"], "precision": row.get("precision", "fp16"),
                                       "channels_last": True, **LEGACY_SHIPPED}


def shipped_as(row: dict) -> str:
    """The table's cell for the form our shipped package of `row` was compiled with: "depthwise, autotuning"."""
    f = shipped_form_of(row)
    return f"{f['depthwise']}, {'max_autotune' if f['autotune'] else 'no'}"


def covers(row: dict, modes, ours_variants=(), shipped_form: dict | None = None) -> bool:
    """A complete row holding every timm mode of `modes` (or measured where timm was not installed)
    and every variant of ours named in `ours_variants`, and (where `shipped_form` is given) whose
    shipped package was compiled as the form ships now: a row of an older default is measured again."""
    if shipped_form is not None and any(shipped_form_of(row).get(k) != v for k, v in shipped_form.items()):
        return False
    return (not row.get("partial") and set(ours_variants) <= set(row.get("ours_variants") or {})
            and (row.get("timm") == "NOT INSTALLED" or set(modes) <= set(row.get("timm_compile_seconds") or {})))


def _read_jsonl(path: Path) -> list:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _bench(variants: dict, rounds: int, per_round: int, cuda: bool) -> dict:
    """Median / p10 of interleaved rounds. On CUDA: our package as a user calls it (`ours_aoti_shipped`)
    or its bare replay (`ours_aoti_graph`); timm under reduce-overhead / max-autotune called as
    compiled (they replay their own CUDA graphs); everything else captured in one CUDA graph here."""
    runners = {}
    for k, (fn, x) in variants.items():
        if not cuda:
            runners[k] = (lambda fn=fn, x=x: fn(x))
        elif k == "ours_aoti_graph":
            runners[k] = fn.cuda_graph(x).replay
        elif k == "ours_aoti_shipped" or k.startswith("ours_aoti_v_"):
            runners[k] = (lambda fn=fn, x=x: fn(x))
        elif k in ("timm_reduce-overhead", "timm_max-autotune"):
            def own_graphs(fn=fn, x=x):
                torch.compiler.cudagraph_mark_step_begin()
                fn(x)
            runners[k] = own_graphs
        else:
            runners[k] = cuda_graph_runner(fn, x)
        for _ in range(3 if not cuda else 20):
            with torch.no_grad():
                runners[k]()
    times = {k: [] for k in runners}
    for _ in range(rounds):
        for k, r in runners.items():
            if cuda:
                with torch.no_grad():
                    times[k] += time_replays(r, per_round)
            else:
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        r()
                    times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "p10_ms": sorted(v)[len(v) // 10], "runs": len(v)}
            for k, v in times.items()}


def _top_kernels(fn, x, runs: int = 20, top: int = 12) -> list:
    """The CUDA kernels that take the most time over `runs` calls (no graph), with their share."""
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad():
        for _ in range(3):
            fn(x)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                fn(x)
            torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if getattr(e, "device_time_total", 0) > 0]
    total = sum(e.device_time_total for e in events) or 1.0
    events.sort(key=lambda e: -e.device_time_total)
    return [{"kernel": e.key[:120], "ms_per_run": e.device_time_total / 1e3 / runs, "share": e.device_time_total / total,
             "calls_per_run": e.count / runs} for e in events[:top]]


def runs_to_show(rows: list) -> list:
    """Every complete row, in the order measured: rows of one model and batch measured in separate runs (other
    timm modes, other variants of ours) are separate comparisons, each timed in its own interleaved rounds, so
    none replaces another. A partial row is shown only where no complete row of its model and batch exists."""
    complete = {(r["model"], r["batch"]) for r in rows if not r.get("partial")}
    shown, seen_partial = [], set()
    for r in rows:
        key = (r["model"], r["batch"])
        if not r.get("partial"):
            shown.append(r)
        elif key not in complete and key not in seen_partial:
            seen_partial.add(key)
            shown.append(r)
    return shown


def markdown_compiled(rows: list, machine: dict) -> str:
    lines = ["# Deployment speed, compiled: our AOTInductor package vs timm under torch.compile", "",
             f"Machine: {machine.get('gpu') or machine.get('cpu')}; torch {machine.get('torch')}, timm {machine.get('timm')}",
             "", "fp16, 224x224, median of interleaved runs timed with CUDA events. timm: `torch.compile(model, mode=M)`; "
             "`default` replayed from one CUDA graph, `reduce-overhead` and `max-autotune` from their own. "
             "ours eager: the torch_cuda deploy form in one CUDA graph (in brackets, with attention=sdpa, where timed). ours shipped: the torch_inductor package "
             "(`format=aoti`, float32 NCHW in) loaded by `load_aoti` (run_single_threaded=True, one CUDA graph), "
             "called as a user calls it (input copy, replay, output clone), compiled as the torch_inductor form shipped when "
             "the row was measured (last column: rows before 2026-12-07's defaults depthwise=auto, autotune=true were "
             "cudnn without autotuning). Goal: ours shipped <= 0.8x timm's best mode.",
             ""] + (["**A smoke run on the CPU** (fp32, no CUDA graphs, small input, few runs): it checks the script, "
                     "not a speed result.", ""] if any(r.get("device") == "cpu" for r in rows) else []) + [
             "| model | batch | timm default ms | timm reduce-overhead ms | timm max-autotune ms | ours eager ms | "
             "ours shipped ms | ours graph ms | shipped / timm best | goal | compile s (timm modes / AOTI) | rel. err | "
             "shipped as (depthwise, autotune) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    def eager_sdpa(v):  # rows since the attention=sdpa setting also time the eager recipe with it
        return f" (sdpa {v['ours_deploy_eager_sdpa']['median_ms']:.3f})" if "ours_deploy_eager_sdpa" in v else ""
    all_rows, rows = rows, runs_to_show(rows)
    for r in sorted(rows, key=lambda r: (r["model"], r["batch"])):
        v = r["variants"]
        ratio = r["ratio_aoti_vs_timm_compiled"]
        ms = {m: v.get(f"timm_{m}", {}).get("median_ms") for m in TIMM_MODES}
        cs = r.get("timm_compile_seconds") or {}
        cs = cs if isinstance(cs, dict) else {"default": cs}
        lines.append(f"| {r['model']} | {r['batch']} | " + " | ".join(f(ms[m], '.3f') for m in TIMM_MODES) + " | "
                     f"{v['ours_deploy_eager']['median_ms']:.3f}{eager_sdpa(v)} | {v['ours_aoti_shipped']['median_ms']:.3f} | "
                     f"{f(v.get('ours_aoti_graph', {}).get('median_ms'), '.3f')} | "
                     f"{f(ratio, '.2f')}{' (' + r['timm_best_mode'] + ')' if r.get('timm_best_mode') else ''} | "
                     f"{'timm not installed' if ratio is None else 'met' if ratio <= 0.8 else 'NOT met'}"
                     f"{' (partial row)' if r.get('partial') else ''} | "
                     f"{' / '.join(f(cs.get(m), '.0f') for m in TIMM_MODES)} / {r['aoti_compile_seconds']:.0f} | "
                     f"{r.get('rel_err_vs_timm_fp32', r.get('rel_err_vs_ours_fp32')):.1e} | "
                     f"{shipped_as(r)} |")
    # variants of partial rows too: timed against our shipped package in the same rounds even where timm's
    # compile was left for a later run
    varied = [r for r in sorted(all_rows, key=lambda r: (r["model"], r["batch"])) if r.get("ours_variants")]
    if len({(r["model"], r["batch"]) for r in rows}) < len(rows):
        lines += ["", "A model and batch on several lines: separate runs (other timm modes or variants of ours), "
                      "each line's ratios from its own interleaved rounds."]
    if varied:
        lines += ["", "## Variants of our package (the same network compiled otherwise, timed in the same rounds)", "",
                  "| model | batch | variant | settings | ms | / shipped | / timm best | compile s | rel. err |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in varied:
            for name, v in r["ours_variants"].items():
                st = ", ".join(f"{k}={val}" for part in v["settings"].values() for k, val in part.items())
                lines.append(f"| {r['model']} | {r['batch']}{' (partial run)' if r.get('partial') else ''} | {name} | "
                             f"{st} | {v['median_ms']:.3f} | "
                             f"{v['ratio_vs_shipped']:.2f} | {f(v.get('ratio_vs_timm_compiled'), '.2f')} | "
                             f"{v['compile_seconds']:.0f} | {v['rel_err_vs_fp32']:.1e} |")
    for r in rows:
        if r.get("aoti_top_kernels"):
            lines += ["", f"## Where the time goes: {r['model']} batch {r['batch']} (top CUDA kernels, no graph)", "",
                      "| ours AOTI kernel | ms/run | share |", "|---|---|---|"]
            lines += [f"| `{k['kernel']}` | {k['ms_per_run']:.4f} | {100 * k['share']:.1f} % |" for k in r["aoti_top_kernels"]]
            lines += ["", f"| timm compiled ({r.get('timm_best_mode')}) kernel | ms/run | share |", "|---|---|---|"]
            lines += [f"| `{k['kernel']}` | {k['ms_per_run']:.4f} | {100 * k['share']:.1f} % |"
                      for k in r.get("timm_compiled_top_kernels", [])]
    return "\n".join(lines) + "\n"


def markdown(result: dict) -> str:
    lines = [f"# Deployment speed: ours vs timm ({result['tag']})", "",
             f"Command: `{result['command']}`  ", f"Date: {result['date']}  ",
             f"Machine: {result['machine']['cpu']}" + (f", {result['machine']['gpu']}" if result['machine'].get('gpu') else "")
             + f"; torch {result['machine']['torch']}, timm {result['machine'].get('timm', 'not installed')}", ""]
    for target in ("torch_cuda", "onnxruntime_cpu"):
        r = result.get(target)
        if not r:
            continue
        lines += [f"## {target}", "", ", ".join(f"{k}: {r[k]}" for k in r if not isinstance(r[k], dict)), "",
                  "| model | variant | median ms | p10 ms | runs |", "|---|---|---|---|---|"]
        for name in MODELS:
            for v, m in r[name]["variants"].items():
                lines.append(f"| {name} | {v} | {m['median_ms']:.3f} | {m['p10_ms']:.3f} | {m['runs']} |")
        lines += ["", "| model | ours ms | timm ms | ours / timm (medians) | goal |", "|---|---|---|---|---|"]
        for name in MODELS:
            e = r[name]
            ratio = e.get("ratio")
            lines.append(f"| {name} | {e['ours_ms']:.3f} | {e['timm_ms']:.3f} | {ratio:.3f}"
                         + (f" (p10: {e['ratio_p10']:.3f})" if "ratio_p10" in e else "")
                         + f" | {'met' if ratio <= 1.0 else 'NOT met'} (<= 1.0) |" if ratio is not None else
                         f"| {name} | {e['ours_ms']:.3f} | (timm not installed) | - | - |")
        lines.append("")
    w = result.get("weights", {})
    if w:
        lines += ["## Weights", ""] + [f"- {k}: {v}" for k, v in w.items()] + [""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few CPU runs only (smoke check of the script)")
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    ap.add_argument("--no-ort", action="store_true", help="skip the ONNX Runtime CPU comparison")
    ap.add_argument("--out", default=None, help="result file stem (default experiments/results/deploy_speed_<gpu|cpu>; --quick: the temp dir)")
    ap.add_argument("--compiled", action="store_true",
                    help="the compiled comparison only: our AOTInductor package as shipped vs timm under torch.compile")
    ap.add_argument("--models", nargs="+", default=list(COMPILED), help="--compiled: the models")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8], help="--compiled: the batch sizes")
    ap.add_argument("--modes", nargs="+", default=list(TIMM_MODES), choices=TIMM_MODES, help="--compiled: timm's modes")
    ap.add_argument("--deadline-s", type=float, default=480.0,
                    help="--compiled: no compile starts after this many seconds (rows are written as measured)")
    ap.add_argument("--limit-s", type=float, default=570.0,
                    help="--compiled: the command's hard time limit; a timm mode whose compile would not fit is left "
                         "for the next run")
    ap.add_argument("--workers", type=int, default=6, help="--compiled: processes compiling our packages")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="--compiled: cpu = a smoke run")
    ap.add_argument("--ours-variant", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                    help="--compiled: also time our package compiled otherwise: torch_inductor form settings "
                         "(depthwise=shifted) and Inductor configs (inductor.max_autotune=true), e.g. "
                         "shifted:depthwise=shifted; repeatable")
    ap.add_argument("--tabulate", metavar="ROWS.jsonl", default=None,
                    help="--compiled: only rewrite ROWS.md from the rows already measured (any machine, nothing timed)")
    args = ap.parse_args(argv)
    if args.compiled and args.tabulate:
        return tabulate_compiled(Path(args.tabulate))
    if args.compiled:
        return main_compiled(args)
    t0 = time.time()
    torch.manual_seed(0)
    try:
        import timm
        timm_version = timm.__version__
    except ImportError:
        timm, timm_version = None, None
    timm_models = {n: build_timm(n) for n in MODELS} if timm is not None else {}
    ours, weights = {}, {}
    for n in MODELS:
        ours[n], weights[n] = build_ours(n, timm_models.get(n))
    use_cuda = torch.cuda.is_available() and not args.quick
    tag = "gpu" if use_cuda else "cpu"
    result = {"tag": tag, "command": "python experiments/deploy_speed.py" + (" --quick" if args.quick else ""),
              "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                          "timm": timm_version, "python": platform.python_version(),
                          "gpu": torch.cuda.get_device_name() if use_cuda else None},
              "weights": weights}
    if use_cuda:
        torch.backends.cudnn.benchmark = True
        result["torch_cuda"] = run_cuda(args.quick, timm_models, ours)
    if not args.no_ort:
        result["onnxruntime_cpu"] = run_ort(args.quick, timm_models, ours, args.threads)
    result["seconds"] = round(time.time() - t0, 1)
    if args.out:
        stem = Path(args.out)
    elif args.quick:  # a smoke check never overwrites committed results
        stem = Path(tempfile.gettempdir()) / "deploy_speed_quick"
    else:
        stem = ROOT / "experiments" / "results" / f"deploy_speed_{tag}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {stem.with_suffix('.json')} and .md in {result['seconds']} s")
    return result


def tabulate_compiled(rows_path: Path) -> dict:
    """`--compiled --tabulate ROWS.jsonl`: ROWS.md again from the committed rows (e.g. after merging the rows of
    several GPU calls); the versions come from the rows' `machine` (older rows: the .md's Machine line)."""
    rows = _read_jsonl(rows_path)
    if not rows:
        raise SystemExit(f"{rows_path}: no rows to tabulate (is it a deploy_speed --compiled .jsonl?)")
    machine = next((r["machine"] for r in reversed(rows) if r.get("machine")), None)
    md = rows_path.with_suffix(".md")
    if machine is None:
        m = re.search(r"^Machine: (.*?); torch (\S+), timm (\S+)$", md.read_text() if md.exists() else "", re.M)
        machine = ({"gpu": m.group(1), "torch": m.group(2), "timm": m.group(3)} if m else
                   {"gpu": rows[-1].get("device_name"), "torch": "unrecorded", "timm": "unrecorded"})
    here = rows[-1].get("device_name")
    atomic_write(md, markdown_compiled([r for r in rows if r.get("device_name") == here], machine))
    print(f"wrote {md}")
    return {"rows": rows}


def main_compiled(args) -> dict:
    """`--compiled`: rows to <--out or experiments/results/deploy_speed_compiled_<gpu|cpu>>.jsonl as measured
    (a rerun resumes), the table to .md."""
    from hwnas.convert.cxx_runtime import ensure_preloaded
    ensure_preloaded()  # as the apps do: g++'s libstdc++ first, else loading the packages crashes on the GPU machine
    deadline = time.monotonic() + args.deadline_s
    hard_end = time.monotonic() + args.limit_s
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run this on the GPU machine, or --device cpu for a smoke run")
    cuda = args.device == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    stem = Path(args.out) if args.out else compiled_stem(cuda)
    stem.parent.mkdir(parents=True, exist_ok=True)
    small = {} if cuda else dict(rounds=2, per_round=3, resolution=64)
    try:
        import timm
        timm_version = timm.__version__
    except ImportError:
        timm_version = None
    here = device_name(cuda)
    machine = {"cpu": cpu_name(), "gpu": here if cuda else None, "torch": torch.__version__, "timm": timm_version}
    variants = parse_variants(args.ours_variant)
    try:
        rows = run_compiled(args.models, args.batches, stem.with_suffix(".jsonl"), deadline, workers=args.workers,
                            device=args.device, modes=tuple(args.modes),
                            hard_end=hard_end if args.device == "cuda" else None,
                            ours_variants=variants, machine=machine,
                            log=lambda rec: print(json.dumps(rec), flush=True), **small)
    finally:  # the table of the rows measured so far, also when a model fails (its traceback follows)
        rows_so_far = [r for r in _read_jsonl(stem.with_suffix(".jsonl")) if r.get("device_name") == here]
        stem.with_suffix(".md").write_text(markdown_compiled(rows_so_far, machine))
    shipped = shipped_forms(args.batches, "fp16" if cuda else "fp32")
    left = [(m, b) for m in args.models for b in args.batches
            if not any(r["model"] == m and r["batch"] == b and covers(r, args.modes, variants, shipped[b].settings())
                       for r in rows)]
    print(json.dumps({"phase": "end", "rows": str(stem.with_suffix(".jsonl")), "left": left}), flush=True)
    return {"rows": rows, "left": left}


if __name__ == "__main__":
    main()
