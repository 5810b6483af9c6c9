"""Timing backends behind one interface: export a static block or model to a runtime and time it.

    b = get_backend("onnxruntime_cpu", threads=1, warmup=10, repeats=50)
    b.measure(model, input_shape) -> {"median_ms", "p10_ms", "spread", "runs", "fingerprint"}

`spread` is (p90 − p10) / median of the timed runs. Every backend times its target's deploy form
(`b.deploy(model)`, from `hwnas.latency.deploy`), since that is what gets deployed, and returns the
fingerprint of exactly the module it timed. No Hydra or Optuna import here: this module runs on
the GPU machine, which has neither.
"""
from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hwnas.errors import ConfigError
from hwnas._files import owned_temp_dir

from .errors import LatencyTableError, TimingUnavailable, UnknownTargetError  # noqa: F401 (re-exported)
from .target import find_target, get_target, list_targets  # noqa: F401 (list_targets re-exported)


def summarize(times_ms: list[float] | np.ndarray) -> dict:
    t = np.asarray(times_ms, dtype=np.float64)
    p10, med, p90 = np.percentile(t, [10, 50, 90])
    return {"median_ms": float(med), "p10_ms": float(p10),
            "spread": float((p90 - p10) / med) if med > 0 else 0.0, "runs": int(t.size)}


def slug(name: str) -> str:
    s = re.sub(r"\(r\)|\(tm\)|cpu @.*|processor", "", name.lower())
    s = re.sub(r"[^a-z0-9]+", "-", s).strip("-")
    return s or "unknown-device"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess
        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            pass
    return platform.processor() or platform.machine()


def fingerprint_deployed(module, x, form) -> str:
    """The fingerprint of a module already in `form`'s deploy form, about to be timed on input `x`:
    a whole static model (`supernet.Model`) gets its blocks' network fingerprint, anything else
    (a block, MobileNetV2) the trace of the very module and input that are timed."""
    from .fingerprint import fingerprint_module, model_block_fingerprints, network_fingerprint
    if hasattr(module, "layout") and hasattr(module, "stem"):
        return network_fingerprint([fp for _, fp in model_block_fingerprints(module, form)])
    return fingerprint_module(module, x, form.salt())


class Backend:
    """One runtime on one device. Subclasses set `name`, `runtime` and implement `measure`."""

    name = ""
    runtime = ""
    statistic = "p10_ms"  # what tables of this backend sum (stored in the provenance)

    def __init__(self, precision: str = "fp32", batch: int = 1, threads: int = 1, warmup: int = 10,
                 repeats: int = 50, max_seconds: float = 5.0, min_runs: int = 10, clock: str = "wall",
                 canary: bool = False, rounds: int = 0):
        if clock not in ("wall", "thread"):
            raise ConfigError(f"target.clock={clock!r}: allowed: wall, thread")
        if int(rounds) < 0:
            raise ConfigError(f"target.rounds={rounds}: 0 (whole networks timed one after another) or a number "
                              "of round-robin rounds (e.g. 100)")
        if int(rounds) and not self.round_robin_capable():
            raise ConfigError(f"target.rounds={rounds}: {self.name} times whole networks one after another only; "
                              "leave target.rounds at 0")
        self.clock = clock
        self.rounds = int(rounds)
        self.canary = bool(canary)
        self.canary_ref_ms: float | None = None  # the canary's time in the reference state (see _time_loop)
        self.precision = precision
        self.batch = int(batch)
        self.threads = int(threads)
        self.warmup = int(warmup)
        self.repeats = int(repeats)
        self.max_seconds = float(max_seconds)
        self.min_runs = int(min_runs)
        self.keep_runs = False  # diagnostics: each result also holds its runs (and the canary's) in ms

    @property
    def form(self):
        """This target's deploy form, with this backend's settings (`hwnas.latency.deploy`)."""
        if getattr(self, "_form", None) is None:
            from .deploy import deploy_form
            self._form = deploy_form(self.name, **self.form_settings())
        return self._form

    def form_settings(self) -> dict:
        return {"batch": self.batch, "precision": self.precision}

    def deploy(self, model):
        """`model` (a static block or model) as this target runs it, in place."""
        return self.form.module(model)

    def device(self) -> str:
        return cpu_name()

    def device_slug(self) -> str:
        return slug(self.device())

    def runtime_version(self) -> str:
        return ""

    def method(self) -> str:
        return ""

    def info(self) -> dict:
        """The provenance fields this backend fixes."""
        return {"target": self.name, "runtime": self.runtime, "runtime_version": self.runtime_version(),
                "device": self.device(), "device_slug": self.device_slug(), "precision": self.precision,
                "batch": self.batch, "threads": self.threads, "warmup": self.warmup,
                "repeats": self.repeats, "max_seconds": self.max_seconds, "min_runs": self.min_runs,
                "method": self.method(), "statistic": self.statistic, "clock": self.clock,
                "canary": self.canary, "rounds": self.rounds, "deploy_form": self.form.describe(),
                "host": platform.node(), "python": platform.python_version()}

    def fingerprint_info(self) -> dict:
        """The provenance entry that says how row fingerprints were computed."""
        from .fingerprint import scheme_info
        return {**scheme_info(), "form": self.form.settings()}

    #: whole networks per round-robin group (their sessions are held in memory together)
    round_robin_group = 24
    #: timed runs per visit of a network in a round-robin round (after one untimed run)
    round_robin_runs = 2

    def _timer(self):
        return time.thread_time if self.clock == "thread" else time.perf_counter

    def _canary_ready(self):
        """With `canary`: the canary's callable, its reference state calibrated first if need be; else None."""
        if not self.canary:
            return None
        if self.canary_ref_ms is None:
            self.calibrate_canary()
        return self._canary_run()

    @classmethod
    def round_robin_capable(cls) -> bool:
        """Whether this backend can time networks round-robin (it implements `prepare`)."""
        return cls.prepare is not Backend.prepare

    def prepare(self, model, input_shape: tuple[int, ...]) -> tuple[Callable[[], Any], str | None]:
        """`model`'s deploy form made ready to run on an input of `input_shape`: a callable running it
        once, and its fingerprint (what `measure` would report). Backends that can time round-robin."""
        raise NotImplementedError(f"{self.name} cannot time networks round-robin")

    def time_round_robin(self, runs: dict[str, Callable[[], Any]], rounds: int, seed: int = 0) -> dict[str, dict]:
        """Time several networks together: each of `rounds` rounds visits every one once, in a fresh
        random order: one untimed run (its weights back in the cache, as in repeated deployment), then
        `round_robin_runs` timed runs, then (with `canary`) one timed canary run, after a network as
        `_time_loop` times it. A shared machine's speed drifts by 5-15 % over minutes; timed one after
        another, each network gets the speed of its own minute (two such timings of the same 50
        EfficientFormerV2 subnets agree at Kendall τ 0.86-0.92 on a 2-core VM), while here every network
        sees the whole pass (τ 0.976 between two passes, docs/latency.md). Returns, per key, `_time_loop`'s
        statistics, scaled by canary_ref / the canary's p10 over the pass."""
        if int(rounds) < 1:
            raise ValueError(f"time_round_robin: rounds={rounds}; at least 1 round is needed to time anything")
        timer, canary = self._timer(), self._canary_ready()
        for call in [*runs.values(), *([canary] if canary else [])]:
            for _ in range(self.warmup):
                call()
        keys = list(runs)
        times: dict[str, list[float]] = {k: [] for k in keys}
        ctimes: list[float] = []
        rng = np.random.default_rng(seed)
        for _ in range(int(rounds)):
            for i in rng.permutation(len(keys)):
                run = runs[keys[i]]
                run()
                for _ in range(self.round_robin_runs):
                    t0 = timer()
                    run()
                    times[keys[i]].append((timer() - t0) * 1e3)
                if canary is not None:
                    t0 = timer()
                    canary()
                    ctimes.append((timer() - t0) * 1e3)
        factor = self.canary_ref_ms / float(np.percentile(ctimes, 10)) if canary is not None else 1.0
        out = {}
        for k in keys:
            r = summarize(times[k])
            r["median_ms"] *= factor
            r["p10_ms"] *= factor
            r["rounds"] = int(rounds)
            if self.keep_runs:
                r.update(runs_ms=times[k], canary_runs_ms=ctimes)
            out[k] = r
        return out

    def _canary_run(self):
        """A callable running the fixed canary model once (backends that support `canary`)."""
        raise NotImplementedError(f"{self.name} has no canary")

    def _canary_partner(self):
        """A callable running the calibration workload (MobileNetV2 x1.0 at 224 px) once."""
        raise NotImplementedError(f"{self.name} has no canary")

    def calibrate_canary(self, runs: int = 200) -> float:
        """Fix the reference state: the canary's p10 when each run follows one run of MobileNetV2
        x1.0 at 224 px (the MES unit). Measured that way, the canary sees the cache a real
        network leaves behind, so a network's normalised latency stays on the scale of its plain
        thread time at calibration (MobileNetV2 itself scales by ~1)."""
        timer = self._timer()
        canary, partner = self._canary_run(), self._canary_partner()
        for _ in range(self.warmup):
            partner()
            canary()
        t = []
        for _ in range(runs):
            partner()
            t0 = timer()
            canary()
            t.append((timer() - t0) * 1e3)
        self.canary_ref_ms = float(np.percentile(t, 10))
        return self.canary_ref_ms

    def _runs(self):
        """The timed runs' indices: `repeats` of them, or fewer once `max_seconds` have passed and
        `min_runs` are done (every timing loop stops by this rule)."""
        start = time.perf_counter()
        n = 0
        while n < self.repeats and (n < self.min_runs or time.perf_counter() - start < self.max_seconds):
            yield n
            n += 1

    def _time_loop(self, run_once) -> dict:
        """Warm up, then time `run_once` until `repeats` runs, or `max_seconds` once `min_runs` are done.

        clock="thread" reads the calling thread's CPU time: on a shared machine a single-threaded
        run that gets preempted is not charged for the wait, so a 50 ms network and a 0.1 ms block
        are measured alike (wall-clock minima of long runs cannot escape preemption).

        canary=True runs a fixed model before every timed run and scales the result by
        canary_ref / canary_now: a shared (virtual) machine's speed drifts by 5-15 % over minutes
        with its neighbours' load, and blocks, fit networks and held-out networks are measured
        minutes apart. Measured on this box: test-retest spread of 15 networks 4.1 % -> 1.1 %,
        test-retest Kendall tau 0.87 -> 0.96. On a dedicated device the factor stays ~1.
        """
        timer, canary = self._timer(), self._canary_ready()
        for _ in range(self.warmup):
            run_once()
            if canary is not None:
                canary()
        times, ctimes = [], []
        for _ in self._runs():
            if canary is not None:
                t0 = timer()
                canary()
                ctimes.append((timer() - t0) * 1e3)
            t0 = timer()
            run_once()
            times.append((timer() - t0) * 1e3)
        r = summarize(times)
        if canary is not None:
            factor = self.canary_ref_ms / float(np.percentile(ctimes, 10))
            r["median_ms"] *= factor
            r["p10_ms"] *= factor
        if self.keep_runs:
            r.update(runs_ms=times, canary_runs_ms=ctimes)
        return r

    def _cuda_time_loop(self, run) -> dict:
        """Warm up, then time `run` (work queued on the current CUDA stream) with a pair of CUDA
        events around each run, under the same stopping rule as `_time_loop`."""
        import torch
        for _ in range(self.warmup):
            run()
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(self.repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(self.repeats)]
        done = 0
        for n in self._runs():
            starts[n].record()
            run()
            ends[n].record()
            done = n + 1
        torch.cuda.synchronize()
        return summarize([a.elapsed_time(b) for a, b in zip(starts[:done], ends[:done])])

    def measure(self, model, input_shape: tuple[int, ...]) -> dict:
        """Time `model`'s deploy form on an input of `input_shape`; the stats and its fingerprint."""
        raise NotImplementedError


CANARY_SHAPE = (1, 3, 128, 128)


class OnnxRuntimeCPU(Backend):
    """ONNX export of the BN-folded module, ORT CPU EP with full graph optimisation, wall-clock timing."""

    name = "onnxruntime_cpu"
    runtime = "onnxruntime"

    def __init__(self, precision: str = "fp32", batch: int = 1, threads: int = 1, opset: int = 17,
                 clock: str = "thread", **kw):
        if precision != "fp32":
            raise ConfigError(f"target.precision={precision!r}: onnxruntime_cpu measures fp32 only")
        if clock == "thread" and int(threads) != 1:
            raise ConfigError(f"target.threads={threads} with target.clock=thread: the thread clock measures the "
                              "calling thread only; use target.clock=wall with threads > 1")
        super().__init__(precision=precision, batch=batch, threads=threads, clock=clock, **kw)
        self.opset = opset
        import onnxruntime  # noqa: F401  (fail at construction, not mid-profile)

    def runtime_version(self) -> str:
        import onnxruntime
        return onnxruntime.__version__

    def method(self) -> str:
        return (f"ONNX opset {self.opset} export of the deploy form ({self.form.describe()}), ORT "
                f"CPUExecutionProvider, ORT_ENABLE_ALL, intra_op={self.threads}, inter_op=1, sequential; "
                f"{self.warmup} warm-up runs then up to {self.repeats} timed runs (>= {self.min_runs}, "
                f"<= {self.max_seconds}s), each timed around session.run with "
                + ("the calling thread's CPU time (time.thread_time; ORT runs a 1-thread session in the caller)"
                   if self.clock == "thread" else "time.perf_counter (wall clock)")
                + (f"; each timed run follows a canary run (MobileNetV2 x1.0 at {CANARY_SHAPE[-1]}px) and the "
                   "statistics are scaled by canary_ref/canary_p10 to cancel the machine's speed drift"
                   if self.canary else "")
                + (f"; whole networks timed round-robin instead (Backend.time_round_robin): {self.rounds} rounds "
                   f"over groups of up to {self.round_robin_group}, each visit one untimed run then "
                   f"{self.round_robin_runs} timed runs" + (" and one canary run" if self.canary else "")
                   if self.rounds else ""))

    def form_settings(self) -> dict:
        return {**super().form_settings(), "opset": self.opset}

    def _mobilenet_run(self, shape: tuple[int, ...]):
        from hwnas.convert.onnx import export_onnx
        from .reference_models import mobilenet_v2
        with owned_temp_dir("canary") as d:
            path = export_onnx(self.deploy(mobilenet_v2()), shape, Path(d) / "m.onnx", opset=self.opset)
            return self._runner(path, shape, seed=1)

    def _canary_run(self):
        if getattr(self, "_canary", None) is None:
            self._canary = self._mobilenet_run(CANARY_SHAPE)
        return self._canary

    def _canary_partner(self):
        return self._mobilenet_run((1, 3, 224, 224))

    def session(self, onnx_path: str | os.PathLike):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    def _runner(self, onnx_path: str | os.PathLike, input_shape: tuple[int, ...], seed: int = 0):
        """A callable running the ONNX model at `onnx_path` once on a fixed random input (ORT holds the
        model in memory: the file may go once this returns)."""
        sess = self.session(onnx_path)
        feed = {sess.get_inputs()[0].name: np.random.default_rng(seed).standard_normal(input_shape, dtype=np.float32)}
        return lambda: sess.run(None, feed)

    def measure_onnx(self, onnx_path: str | os.PathLike, input_shape: tuple[int, ...]) -> dict:
        return self._time_loop(self._runner(onnx_path, input_shape))

    @contextlib.contextmanager
    def _exported(self, model, input_shape: tuple[int, ...]):
        """`model`'s deploy form exported to ONNX in a scratch folder: (its path, its fingerprint)."""
        from hwnas.convert.onnx import export_onnx
        model = self.deploy(model.cpu())
        fp = fingerprint_deployed(model, self.form.example_input(input_shape), self.form)
        with owned_temp_dir("ort") as d:
            yield export_onnx(model, input_shape, Path(d) / "m.onnx", opset=self.opset), fp

    def prepare(self, model, input_shape: tuple[int, ...]):
        with self._exported(model, input_shape) as (path, fp):
            return self._runner(path, input_shape), fp

    def measure(self, model, input_shape: tuple[int, ...]) -> dict:
        with self._exported(model, input_shape) as (path, fp):
            return {**self.measure_onnx(path, input_shape), "fingerprint": fp}


class TorchCUDA(Backend):
    """PyTorch eager module captured in a CUDA graph, fp16, each replay timed with CUDA events."""

    name = "torch_cuda"
    runtime = "torch"
    statistic = "median_ms"  # graph replays are steady; the median is the usual GPU figure

    def __init__(self, precision: str = "fp16", batch: int = 8, cuda_graphs: bool = True,
                 channels_last: bool = True, attention: str = "matmul", **kw):
        super().__init__(precision=precision, batch=batch, **kw)
        import torch
        if not torch.cuda.is_available():
            raise TimingUnavailable("torch_cuda needs an NVIDIA GPU with a CUDA build of torch "
                                    f"(torch {torch.__version__} sees no GPU here)")
        if precision not in ("fp16", "fp32", "bf16"):
            raise ConfigError(f"target.precision={precision!r}: torch_cuda times fp16, bf16 or fp32")
        self.cuda_graphs = bool(cuda_graphs)
        self.channels_last = bool(channels_last)
        self.attention = attention

    def device(self) -> str:
        import torch
        return torch.cuda.get_device_name()

    def runtime_version(self) -> str:
        import torch
        return f"{torch.__version__} (CUDA {torch.version.cuda})"

    def form_settings(self) -> dict:
        return {**super().form_settings(), "channels_last": self.channels_last, "attention": self.attention}

    def method(self) -> str:
        g = "captured in one CUDA graph, replays" if self.cuda_graphs else "eager forward calls"
        return (f"deploy form ({self.form.describe()}), eval, "
                f"{g} timed one by one with CUDA events after {self.warmup} warm-up replays, up to "
                f"{self.repeats} runs (>= {self.min_runs}, <= {self.max_seconds}s)")

    def measure(self, model, input_shape: tuple[int, ...]) -> dict:
        import torch
        from hwnas.device import warm_on_side_stream
        model = self.deploy(model.cuda())
        x = self.form.example_input(input_shape, "cuda")
        fp = fingerprint_deployed(model, x, self.form)  # traced on the GPU: the very module timed
        with torch.inference_mode():
            if self.cuda_graphs:
                warm_on_side_stream(model, x)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(x)
                run = graph.replay
            else:
                def run():
                    model(x)
            stats = self._cuda_time_loop(run)
        return {**stats, "fingerprint": fp}


class TorchInductor(TorchCUDA):
    """The deploy form compiled by AOTInductor (what `format=aoti` ships), loaded and run in one CUDA
    graph, fp16, each replay timed with CUDA events. Blocks take the form's own dtype and memory
    format (as inside a network); whole networks the package's float32 NCHW interface, as shipped.
    Packages come from a cache, compiled in parallel worker processes by `precompile`."""

    name = "torch_inductor"
    runtime = "torch-aoti"

    def __init__(self, precision: str = "fp16", batch: int = 8, cuda_graphs: bool = True, channels_last: bool = True,
                 compile_workers: int = 8, compile_cache: str | None = None, depthwise: str = "auto",
                 autotune: bool = True, **kw):
        super().__init__(precision=precision, batch=batch, cuda_graphs=cuda_graphs, channels_last=channels_last, **kw)
        from hwnas.convert.aoti import aoti_api
        from .inductor import cache_dir
        self.depthwise = depthwise
        self.autotune = autotune
        aoti_api()
        self.compile_workers = int(compile_workers)
        self.cache = cache_dir(compile_cache)
        #: packages compiled by this backend, the compile time summed over them, and the wall time it took
        self.compile_stats = {"packages": 0, "seconds": 0.0, "wall_seconds": 0.0}

    def form_settings(self) -> dict:
        return {**super().form_settings(), "depthwise": self.depthwise, "autotune": self.autotune}

    def runtime_version(self) -> str:
        import torch
        return f"{torch.__version__} AOTInductor (CUDA {torch.version.cuda})"

    def method(self) -> str:
        g = "its run captured in one CUDA graph, replays" if self.cuda_graphs else "package runs"
        tuning = "max_autotune" if self.form.autotune else "default inductor settings, no autotuning"
        return (f"deploy form ({self.form.describe()}) compiled by torch._inductor.aoti_compile_and_package "
                f"({tuning}; blocks take the fp16 channels_last input they get inside a "
                f"network, whole networks the shipped float32 NCHW interface), loaded with aoti_load_package("
                f"run_single_threaded=True) as hwnas.convert.aoti.load_aoti loads it, {g} "
                f"timed one by one with CUDA events after {self.warmup} warm-up runs, up to {self.repeats} runs "
                f"(>= {self.min_runs}, <= {self.max_seconds}s)")

    def _package(self, fingerprint: str, shape, native: bool) -> Path:
        """Where the package of that graph, shape and interface is cached for this GPU and torch."""
        from .inductor import package_key
        return self.cache / f"{package_key(fingerprint, shape, native, self.form.settings(), self.device())}.pt2"

    def _job(self, what, shape, fingerprint: str) -> dict:
        from search_spaces import BlockSpec
        native = isinstance(what, BlockSpec)  # a lone block takes what it gets inside a network
        return {"kind": "block" if native else "network", "what": what.key if native else what.to_dict(),
                "shape": list(shape), "native": native, "form": self.form.settings(), "device": "cuda",
                "path": str(self._package(fingerprint, shape, native))}

    def precompile(self, items, progress: bool = True, deadline: float | None = None) -> dict:
        """Compile the packages of `items` ((BlockSpec or Arch, input shape, fingerprint) each) that
        the cache lacks, in `compile_workers` processes; `measure` then only loads them."""
        from .inductor import compile_all
        jobs = [self._job(w, shape, fp) for w, shape, fp in items]
        stats = compile_all(jobs, self.compile_workers, progress, f"{self.name} compiling", deadline)
        for k in self.compile_stats:
            self.compile_stats[k] = round(self.compile_stats[k] + stats[k], 2)
        return stats

    def measure(self, model, input_shape: tuple[int, ...]) -> dict:
        import torch
        from hwnas.convert.aoti import INPUT_DTYPE, AOTIError, load_aoti
        native = not (hasattr(model, "layout") and hasattr(model, "stem"))  # a lone block (or MobileNetV2)
        model = self.deploy(model.cuda())
        x = self.form.example_input(input_shape, "cuda")
        fp = fingerprint_deployed(model, x, self.form)
        path = self._package(fp, input_shape, native)
        if not path.exists():  # not precompiled (MobileNetV2, a lone call): compile here
            t0 = time.perf_counter()
            self.form.compile(model, tuple(input_shape), path, device="cuda", native_input=native)
            dt = time.perf_counter() - t0
            self.compile_stats = {"packages": self.compile_stats["packages"] + 1,
                                  "seconds": round(self.compile_stats["seconds"] + dt, 2),
                                  "wall_seconds": round(self.compile_stats["wall_seconds"] + dt, 2)}
        package = load_aoti(path, cuda_graph=self.cuda_graphs)  # single-threaded, crash-guarded: as shipped
        if not native:
            x = torch.randn(*input_shape, device="cuda", dtype=INPUT_DTYPE)
        with torch.inference_mode():
            if self.cuda_graphs:
                try:
                    replay = package.cuda_graph(x).replay  # warm-up on a side stream, then one capture
                except AOTIError as e:
                    raise TimingUnavailable(f"{e} (or time it so: target.cuda_graphs=false)") from e
            else:
                def replay():
                    package.runner(x)
            stats = self._cuda_time_loop(replay)
        return {**stats, "fingerprint": fp}


class CoreML(Backend):
    """Core ML ML Program (fp16). Converts anywhere; times only on macOS, through coremltools.

    On Linux, `hwnas.profile +target=coreml` writes a bundle (`hwnas.latency.coreml_bundle`) that a
    Mac times with `python run_bundle.py`, and imports the CSV it writes.
    """

    name = "coreml"
    runtime = "coremltools"
    statistic = "median_ms"

    def __init__(self, precision: str = "fp16", batch: int = 1, compute_units: str = "ALL", **kw):
        super().__init__(precision=precision, batch=batch, **kw)
        self.compute_units = compute_units

    def runtime_version(self) -> str:
        from hwnas.convert.coreml import import_coremltools
        return import_coremltools().__version__

    def method(self) -> str:
        return (f"ML Program ({self.precision}) via coremltools, compute units {self.compute_units}, "
                f"MLModel.predict timed with time.perf_counter after {self.warmup} warm-up calls, "
                f"up to {self.repeats} runs")

    def measure(self, model, input_shape: tuple[int, ...]) -> dict:
        if sys.platform != "darwin":
            raise TimingUnavailable(
                "Core ML models can be converted here but timed only on macOS. Build a bundle with "
                "`python -m hwnas.profile +target=coreml space=S` (it writes a folder of .mlpackage files "
                "and run_bundle.py), run it on the Mac, then import its CSV with "
                "`python -m hwnas.profile +target=coreml space=S coreml.import_csv=PATH`.")
        from hwnas.convert.coreml import convert_coreml, import_coremltools
        ct = import_coremltools()
        model = self.deploy(model.cpu())
        fp = fingerprint_deployed(model, self.form.example_input(input_shape), self.form)
        with owned_temp_dir("coreml") as d:
            path = convert_coreml(model, input_shape, Path(d) / "m.mlpackage", precision=self.precision)
            m = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, self.compute_units))
            feed = {"input": np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)}
            return {**self._time_loop(lambda: m.predict(feed)), "fingerprint": fp}


class TensorRT(Backend):
    """ONNX -> TensorRT 10 fp16 engine -> timed `execute_async_v3` with CUDA events. Untested here."""

    name = "tensorrt"
    runtime = "tensorrt"
    statistic = "median_ms"

    def __init__(self, precision: str = "fp16", batch: int = 8, opset: int = 17, workspace_gb: float = 4.0, **kw):
        from hwnas.convert.tensorrt import import_tensorrt
        import_tensorrt()  # raises TensorRTUnavailable with the install command
        super().__init__(precision=precision, batch=batch, **kw)
        self.opset = opset
        self.workspace_gb = workspace_gb

    def device(self) -> str:
        import torch
        return torch.cuda.get_device_name()

    def runtime_version(self) -> str:
        from hwnas.convert.tensorrt import import_tensorrt
        return import_tensorrt().__version__

    def form_settings(self) -> dict:
        return {**super().form_settings(), "opset": self.opset}

    def method(self) -> str:
        return (f"{self.form.describe()}, TensorRT engine with the "
                f"{self.precision} flag, execute_async_v3 timed with CUDA events after {self.warmup} warm-up "
                f"runs, up to {self.repeats} runs (>= {self.min_runs}, <= {self.max_seconds}s)")

    def measure(self, model, input_shape: tuple[int, ...]) -> dict:
        import torch
        from hwnas.convert.onnx import export_onnx
        from hwnas.convert.tensorrt import build_engine, import_tensorrt
        trt = import_tensorrt()
        model = self.deploy(model.cpu())
        fp = fingerprint_deployed(model, self.form.example_input(input_shape), self.form)
        with owned_temp_dir("trt") as d:
            onnx_path = export_onnx(model, input_shape, Path(d) / "m.onnx", opset=self.opset)
            engine_path = build_engine(onnx_path, Path(d) / "m.engine", self.precision, self.workspace_gb)
            runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        context = engine.create_execution_context()
        buffers = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(engine.get_tensor_shape(name))
            dtype = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}[engine.get_tensor_dtype(name)]
            t = torch.randn(shape, device="cuda").to(dtype)
            buffers.append(t)
            context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.Stream()

        def run():
            context.execute_async_v3(stream.cuda_stream)

        with torch.cuda.stream(stream):  # the events record on it, around each execution
            stats = self._cuda_time_loop(run)
        return {**stats, "fingerprint": fp}


def cuda_device_name() -> str | None:
    """This machine's GPU (torch's name for device 0), or None without a CUDA GPU."""
    try:
        import torch
        return torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except (ImportError, RuntimeError):
        return None


def this_device(target_name: str) -> str | None:
    """This machine's device for `target_name` (its `Target.device`): its CPU for a target that runs
    on the CPU, its GPU for a GPU target when it has one; else None (a phone's target, a search on a
    laptop of a GPU table, a target no longer registered: nothing to compare)."""
    target = find_target(target_name)
    if target is None or target.device is None:
        return None
    return cpu_name() if target.device == "cpu" else cuda_device_name()


def measured_transfer(table, device: str, space: str) -> dict | None:
    """How `table` predicted networks measured on `device` (fidelity metrics of the table as it is),
    where known: its provenance's `transfers[device][space]`, else a table adapted from it to that
    device beside it (`adapted.scopes[space].transfer`, measured by `hwnas.latency.adapt`)."""
    import json
    for d, v in (table.provenance.get("transfers") or {}).items():
        if slug(d) == slug(device) and (v or {}).get(space):
            return v[space]
    if table.path is None:
        return None
    for js in sorted(Path(table.path).parent.glob("*.adapted.json")):
        try:
            prov = json.loads(js.read_text())
        except (OSError, ValueError):
            continue
        frm = (prov.get("adapted") or {}).get("from") or {}
        t = (((prov.get("adapted") or {}).get("scopes") or {}).get(space) or {}).get("transfer")
        if t and slug(prov.get("device", "")) == slug(device) and frm.get("device") == table.device \
                and frm.get("date") == table.provenance.get("date"):
            return {**t, "result_file": str(js.name)}
    return None


def device_note(table, space: str, path=None) -> str | None:
    """For a target whose device this machine has (its CPU, its GPU), with a table measured on
    another device: one line naming both devices, how that table was measured to transfer to this
    device where known (`provenance.transfers`), and the adapt command (minutes) and the full
    profile command (how long the table's own profile took). None when the devices agree or this
    machine does not have the target's kind of device."""
    from .table import USER_TABLES_DIR, adapt_command, describe_scope, profile_command
    here = this_device(table.target)
    there = table.provenance.get("device")
    if here is None or not there or there == here:
        return None
    prof = (table.provenance.get("profiling") or {}).get(space) or {}
    secs = (prof.get("block_seconds") or 0) + (prof.get("network_seconds_this_run") or 0)
    took = (f" (the {describe_scope(space)} part of that table took {secs / 60:.0f} min to profile on {there}"
            f"{', ' + str(table.provenance.get('threads')) + ' thread' if table.provenance.get('threads') else ''})"
            if secs else "")
    t = measured_transfer(table, here, space)
    if t:
        known = (f"measured on {here}: {100 * t['within_10pct']:.0f}% of {t['n']} subnets within ±10%"
                 + (f", predicted/measured {t['predicted_over_measured'][0]:.2f}-{t['predicted_over_measured'][1]:.2f}"
                    if t.get("predicted_over_measured") else "")
                 + f", Kendall tau {t['kendall_tau']:.2f}" + (f" ({t['result_file']})" if t.get("result_file") else ""))
    elif note := getattr(find_target(table.target), "transfer_note", None):
        known = note
    else:
        known = f"its transfer to {here} has not been measured"
    return (f"the {table.target} latency table {path or table.path} was measured on {there}, but this machine's "
            f"device is {here}: its latencies need not hold here ({known}). Adapt it to this device in minutes "
            f"(a few whole networks measured here refit its correction) with "
            f"`{adapt_command(table.target, space)}`, or make a full table with "
            f"`{profile_command(table.target, space)}`{took}; either writes under {USER_TABLES_DIR}/, so search "
            f"with `target.tables_dir={USER_TABLES_DIR}` then.")


def get_backend(target_name: str, **target_cfg: Any) -> Backend:
    """The backend of target `target_name` (`hwnas.latency.target`), configured by the target's keys
    (`hwnas.latency.config`: its schema; keys of the app such as `name`, `table` or `mes` are accepted
    and not passed on, keys the target does not take are a `ConfigError` naming the allowed ones).
    Unknown names raise an error listing the targets. Keys not given take the backend's defaults."""
    from .config import APP_KEYS, target_config
    target = get_target(target_name)
    target_config(target_name, target_cfg)  # the keys and their ranges
    return target.backend(**{k: v for k, v in target_cfg.items() if k not in APP_KEYS})
