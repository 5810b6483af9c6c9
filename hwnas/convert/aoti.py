"""The `aoti` format: an AOTInductor package (`model.pt2`) of a module already in its deploy form,
compiled ahead of time for one device and one input shape, loadable without hwnas or the model code.

    compile_aoti(module, (1, 3, 224, 224), "model.pt2", device="cuda")   # module: BN folded, fp16, channels_last
    run = load_aoti("model.pt2")   # checked inputs; on CUDA replayed from one CUDA graph, as the table times it
    y = run(x)          # x: float32, NCHW contiguous, on the package's device, exactly the compiled shape

Without hwnas, `RUN_WITHOUT_HWNAS` is the recipe (the manifest carries it): the package loaded with
`aoti_load_package(path, run_single_threaded=True)` -- no thread-synchronisation logic in its
runtime, which is what lets a CUDA graph capture it -- warmed up on a side stream, captured once
with a static input buffer, then replayed. That is how the `torch_inductor` target times it, and
loaded plainly it runs 2-5x slower on a GPU (launch-bound).

Loading is guarded (`hwnas.convert.cxx_runtime`): the first load of a process is tried in a child
process first (a few seconds, once), so a package whose `wrapper.so` would crash this process
(the libstdc++ mismatch of the GPU machine) is an `AOTIError` naming the cause and the work-around.

What the package takes is fixed whatever the deploy form computes in: a float32 NCHW-contiguous
input, cast to the form's precision and memory format inside the package (one fused kernel), and
float32 logits out. AOTInductor does not check its inputs unless `AOTI_RUNTIME_CHECK_INPUTS=1` is
set (a wrong shape runs on and returns garbage), so a package fed what users have (a float32 NCHW
tensor) must not depend on the caller matching an internal dtype or layout. The shape, dtype and
device it was compiled for are stored in the package's metadata (`run.get_metadata()`);
`load_aoti` checks every input against them and names the shape to re-export with.

The shape is static: a dynamic batch compiles generic kernels (no per-shape tuning) and CUDA graphs,
which the `torch_inductor` target times, need a fixed shape anyway.
"""
from __future__ import annotations

import inspect
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hwnas.errors import HwnasError
from hwnas._files import atomic_path

#: what a package takes and returns (the deploy form's precision and layout live inside it)
INPUT_DTYPE = torch.float32
METADATA_KEY = "hwnas"


class AOTIError(HwnasError, ValueError):
    """A package that cannot be made or loaded, or an input it was not compiled for; the message
    says what it was compiled for and how to get a package for the input at hand."""


def cxx_compiler() -> str | None:
    """The C++ compiler AOTInductor would use here (torch's `cpp.cxx` search: $CXX, else g++), or None."""
    import shutil
    from torch._inductor import config
    cands = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
    for c in cands:
        if c and shutil.which(c):
            return c
    return None


def aoti_api():
    """(aoti_compile_and_package, aoti_load_package) of the installed torch (2.6+)."""
    import torch._inductor as inductor
    compile_fn = getattr(inductor, "aoti_compile_and_package", None)
    load_fn = getattr(inductor, "aoti_load_package", None)
    if compile_fn is None or load_fn is None:
        raise AOTIError(f"torch {torch.__version__} has no torch._inductor.aoti_compile_and_package / "
                        "aoti_load_package; the aoti format needs torch >= 2.6")
    return compile_fn, load_fn


class PackagedModel(nn.Module):
    """`module` behind the package's fixed interface: float32 NCHW in, the form's dtype and memory
    format inside, float32 out."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, channels_last: bool):
        super().__init__()
        self.module = module
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(dtype=self.dtype, memory_format=self.memory_format)).float()


def compile_aoti(module: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike, *,
                 device: str = "cpu", channels_last: bool = True, native_input: bool = False,
                 metadata: dict | None = None, inductor_configs: dict | None = None) -> Path:
    """Export `module` (in its deploy form: eval, BN folded, its dtype) with `torch.export` at
    `input_shape` and compile it with AOTInductor for `device` into the package `path` (written
    atomically). The package takes float32 NCHW and returns float32 (`PackagedModel`); with
    `native_input` it takes the module's own dtype and memory format and returns what the module
    returns (a latency table's lone block, timed as it runs inside a network). `metadata` (plain
    data) is stored with the input's shape, dtype, layout and device."""
    compile_fn, _ = aoti_api()
    device = str(torch.device(device).type)
    if device == "cuda" and not torch.cuda.is_available():
        raise AOTIError(f"device=cuda: torch {torch.__version__} sees no CUDA GPU here; compile on the GPU "
                        "machine, or for the CPU (device=cpu)")
    param = next(module.parameters(), None)
    dtype = param.dtype if param is not None else INPUT_DTYPE
    module = module.to(device).eval()
    x = torch.randn(*input_shape, device=device, dtype=INPUT_DTYPE)
    if native_input:
        x = x.to(dtype)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
    else:
        module = PackagedModel(module, dtype, channels_last).eval()
    meta = {"input_shape": list(input_shape), "input_dtype": str(x.dtype).replace("torch.", ""),
            "input_layout": "channels_last" if native_input and channels_last and x.dim() == 4 else "contiguous",
            "device": device, "compute_dtype": str(dtype).replace("torch.", ""), "channels_last": channels_last,
            "torch": torch.__version__, **(metadata or {})}
    configs = {"aot_inductor.metadata": {METADATA_KEY: json.dumps(meta, sort_keys=True)}, **(inductor_configs or {})}
    path = Path(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.export / inductor deprecation notes
        program = torch.export.export(module, (x,))
        with atomic_path(path) as tmp:
            compile_fn(program, package_path=str(tmp), inductor_configs=configs)
    return path


def package_metadata(runner: Any) -> dict:
    """What `compile_aoti` stored in a loaded package (empty for a package hwnas did not make)."""
    try:
        raw = (runner.get_metadata() or {}).get(METADATA_KEY)
    except Exception:  # noqa: BLE001 -- another torch's runner without metadata: nothing recorded
        return {}
    return json.loads(raw) if raw else {}


#: how a user without hwnas runs a CUDA package at the speed the `torch_inductor` table measured it
RUN_WITHOUT_HWNAS = """\
import torch
run = torch._inductor.aoti_load_package("model.pt2", run_single_threaded=True)  # capturable runtime
x = torch.empty(SHAPE, device="cuda")              # static input: copy each batch into it (float32, NCHW)
s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
with torch.cuda.stream(s):                         # warm-up outside the graph (lazy loads, allocations)
    for _ in range(3): run(x)
torch.cuda.current_stream().wait_stream(s); torch.cuda.synchronize()
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g): y = run(x)               # y: static output, overwritten by each replay
# per batch: x.copy_(batch); g.replay(); logits = y.clone()
"""


def load_kwargs(load_fn) -> dict:
    """`run_single_threaded=True` where this torch's `aoti_load_package` takes it (2.7+): the runtime
    then skips the locking and CUDA-event bookkeeping between runs that a CUDA graph cannot capture."""
    try:
        params = inspect.signature(load_fn).parameters
    except (TypeError, ValueError):
        return {}
    return {"run_single_threaded": True} if "run_single_threaded" in params else {}


#: a package load in a child process: what `load_aoti` tries first where a crash is possible
PROBE = """
import inspect, sys, torch
load = torch._inductor.aoti_load_package
kw = {"run_single_threaded": True} if "run_single_threaded" in inspect.signature(load).parameters else {}
load(sys.argv[1], **kw)
"""
#: processes whose load probe passed: one probe a process is enough (the same runtime loads every package)
_PROBED: set[int] = set()


def should_probe(environ=None) -> bool:
    """Probe before loading (`HWNAS_AOTI_PROBE`=1 always, 0 never; unset: the first load of a process
    on Linux -- on the GPU machine CPU packages crashed as CUDA ones did, so the device says nothing)."""
    flag = (os.environ if environ is None else environ).get("HWNAS_AOTI_PROBE")
    if flag in ("0", "1"):
        return flag == "1"
    return os.getpid() not in _PROBED and sys.platform.startswith("linux")


class CUDAGraphRun:
    """One run of `fn` captured in a CUDA graph: `input` and `output` are its static buffers; `replay()`
    runs it again on whatever `input` holds now."""

    def __init__(self, fn, x: torch.Tensor, warmup: int = 3):
        from hwnas.device import capture_graph, warm_on_side_stream
        with torch.inference_mode(False):  # a normal tensor: copy_ into it works in and out of inference mode
            self.input = x.clone()  # the graph reads this buffer at every replay (memory format kept)
        with torch.no_grad():
            warm_on_side_stream(fn, self.input, warmup)
            self.replay, self.output = capture_graph(lambda: fn(self.input))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.input.copy_(x)
        self.replay()
        return self.output.clone()


class AOTIPackage:
    """A loaded package that checks each input against the shape, dtype and device it was compiled
    for (AOTInductor itself does not) before running it; on CUDA it runs from one CUDA graph,
    captured at the first call (`cuda_graph=False`: plain runs)."""

    def __init__(self, runner: Any, path: Path, single_threaded: bool = False, cuda_graph: bool = True):
        self.runner = runner
        self.path = path
        self.single_threaded = single_threaded
        self.metadata = package_metadata(runner)
        self.input_shape = tuple(self.metadata.get("input_shape") or ())
        self.device = self.metadata.get("device")
        self.use_cuda_graph = cuda_graph
        self._graph: CUDAGraphRun | None = None

    def check(self, x: torch.Tensor) -> None:
        if not self.input_shape:
            return  # not an hwnas package: nothing to check against
        kind = ("a float32 NCHW input" if self.metadata.get("input_layout", "contiguous") == "contiguous"
                and self.metadata.get("input_dtype", "float32") == "float32"
                else f"a {self.metadata.get('input_dtype')} {self.metadata.get('input_layout')} input")
        want = f"{self.path.name} was compiled for {kind} of shape {list(self.input_shape)} on {self.device}"
        fix = (f"; feed that shape, or export again for yours: python -m hwnas.extract ... format=aoti "
               f"batch={x.shape[0] if x.dim() else 1} resolution={x.shape[-1] if x.dim() else '?'}")
        if tuple(x.shape) != self.input_shape:
            raise AOTIError(f"{want}, got shape {list(x.shape)}{fix}")
        dtype = getattr(torch, self.metadata.get("input_dtype", "float32"))
        if x.dtype != dtype:
            raise AOTIError(f"{want}, got {x.dtype}: pass x.float() (the package casts inside)" if dtype == INPUT_DTYPE
                            else f"{want}, got {x.dtype}: pass x.to({dtype})")
        if x.device.type != self.device:
            raise AOTIError(f"{want}, got a tensor on {x.device.type}: move it with x.to({self.device!r})")
        if self.metadata.get("input_layout") == "channels_last":
            if not x.is_contiguous(memory_format=torch.channels_last):
                raise AOTIError(f"{want}, got another memory format: pass x.contiguous(memory_format=torch.channels_last)")
        elif not x.is_contiguous():
            raise AOTIError(f"{want}, got a non-contiguous tensor: pass x.contiguous() (the package converts "
                            "to its own memory format inside)")

    def cuda_graph(self, x: torch.Tensor) -> CUDAGraphRun:
        """The package's run captured in one CUDA graph (once; `x` fills the static input): what the
        `torch_inductor` table times and what `__call__` replays on CUDA."""
        if self._graph is None:
            self.check(x)
            try:
                self._graph = CUDAGraphRun(self.runner, x)
            except RuntimeError as e:
                raise AOTIError(f"{self.path} could not be captured in a CUDA graph with torch {torch.__version__} "
                                f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}; loaded "
                                f"single-threaded: {self.single_threaded}); run it without a graph: "
                                "load_aoti(path, cuda_graph=False)") from e
        return self._graph

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        if self.use_cuda_graph and x.is_cuda:
            return self.cuda_graph(x)(x)
        return self.runner(x)


def load_aoti(path: str | os.PathLike, *, cuda_graph: bool = True) -> AOTIPackage:
    """Load the package at `path` (`torch._inductor.aoti_load_package`, single-threaded where this
    torch can: one thread at a time, as it has no locking), checking its inputs; on CUDA its calls
    replay one CUDA graph (`cuda_graph`). Where a
    crash is possible (`should_probe`) the load is tried in a child process first: a crash is an
    `AOTIError` naming the cause and the work-around, not a segfault of this process."""
    from hwnas.convert.cxx_runtime import CrashError, run_isolated
    _, load_fn = aoti_api()
    path = Path(path)
    if not path.is_file():
        raise AOTIError(f"{path}: no such AOTInductor package (a model.pt2 written by "
                        "`python -m hwnas.extract ... format=aoti`)")
    if should_probe():
        try:
            probe = run_isolated(PROBE, [str(path)], what=str(path))
        except CrashError as e:
            raise AOTIError(str(e)) from None
        if probe is not None and probe.returncode == 0:
            _PROBED.add(os.getpid())
    kw = load_kwargs(load_fn)
    try:
        runner = load_fn(str(path), **kw)
    except Exception as e:  # noqa: BLE001 -- a corrupt file or a package of another torch/device
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AOTIError(f"{path} cannot be loaded as an AOTInductor package by torch {torch.__version__} "
                        f"({first}); packages run only with the torch version and device kind they were "
                        "compiled for: export it again here (format=aoti)") from None
    return AOTIPackage(runner, path, single_threaded=bool(kw), cuda_graph=cuda_graph)


__all__ = ["AOTIError", "AOTIPackage", "CUDAGraphRun", "PackagedModel", "RUN_WITHOUT_HWNAS", "aoti_api",
           "compile_aoti", "load_aoti", "load_kwargs", "package_metadata", "should_probe"]
