"""The `aoti` format: an AOTInductor package (`model.pt2`) of a module already in its deploy form,
compiled ahead of time for one device and one input shape, loadable without hwnas or the model code.

    compile_aoti(module, (1, 3, 224, 224), "model.pt2", device="cuda")   # module: BN folded, fp16, channels_last
    run = torch._inductor.aoti_load_package("model.pt2")                 # anywhere torch runs (no hwnas)
    y = run(x)          # x: float32, NCHW contiguous, on the package's device, exactly the compiled shape

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

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from hwnas.errors import HwnasError
from hwnas.files import atomic_path

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


class AOTIPackage:
    """A loaded package that checks each input against the shape, dtype and device it was compiled
    for (AOTInductor itself does not) before running it."""

    def __init__(self, runner: Any, path: Path):
        self.runner = runner
        self.path = path
        self.metadata = package_metadata(runner)
        self.input_shape = tuple(self.metadata.get("input_shape") or ())
        self.device = self.metadata.get("device")

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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.check(x)
        return self.runner(x)


def load_aoti(path: str | os.PathLike) -> AOTIPackage:
    """Load the package at `path` (`torch._inductor.aoti_load_package`), checking its inputs."""
    _, load_fn = aoti_api()
    path = Path(path)
    if not path.is_file():
        raise AOTIError(f"{path}: no such AOTInductor package (a model.pt2 written by "
                        "`python -m hwnas.extract ... format=aoti`)")
    try:
        runner = load_fn(str(path))
    except Exception as e:  # noqa: BLE001 -- a corrupt file or a package of another torch/device
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AOTIError(f"{path} cannot be loaded as an AOTInductor package by torch {torch.__version__} "
                        f"({first}); packages run only with the torch version and device kind they were "
                        "compiled for: export it again here (format=aoti)") from None
    return AOTIPackage(runner, path)


__all__ = ["AOTIError", "AOTIPackage", "PackagedModel", "aoti_api", "compile_aoti", "load_aoti",
           "package_metadata"]
