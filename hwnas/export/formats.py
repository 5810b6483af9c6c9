"""The seven built-in export formats, each one `Format` (`hwnas.export.format`) with its files, its
check (`hwnas.export.verify`) and its tolerance. Imported by `hwnas.export`, so they are registered
whenever the export package is.

fp32 formats differ from the reference only by BatchNorm folding and the runtime's own op fusion;
fp16 formats by half-precision rounding (docs/export.md quotes the bounds). The deploy formats
carry the BN-folded exported graph (`ExportContext.deploy`); `pt` and `timm` the model as given;
`aoti` the `torch_inductor` deploy form compiled.
"""
from __future__ import annotations

import copy
import os
import time

import torch

from . import verify
from .format import ExportContext, ExportError, Format, Tolerance, register_format


@register_format
class PtFormat(Format):
    name = "pt"
    files = ("model.pt", "arch.yaml")
    tolerances = {"pt": Tolerance(1e-6, "same weights, same PyTorch code: equal up to float nondeterminism")}

    def export(self, ctx: ExportContext) -> dict:
        from .pt import save_pt
        save_pt(ctx.model, ctx.arch, ctx.bundle.tmp)
        return verify.check_pt(ctx.bundle.tmp, ctx.x, ctx.ref)


@register_format
class OnnxFormat(Format):
    name = "onnx"
    files = ("model.onnx",)
    tolerances = {"onnx": Tolerance(1e-4, "fp32, BatchNorms folded, ONNX Runtime CPU with full graph optimisation")}

    def export(self, ctx: ExportContext) -> dict:
        return verify.check_onnx(ctx.onnx(), ctx.x, ctx.ref, ctx.io["dynamic"], ctx.more)

    def manifest_entry(self, ctx: ExportContext) -> dict:
        """The graph's output names and dynamic axes (a backbone's `stage<i>` outputs)."""
        return {"outputs": ctx.io["outputs"],
                "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in (ctx.io["axes"] or {}).items()}}


@register_format
class CoreMLFormat(Format):
    name = "coreml"
    files = ("model.mlpackage",)
    tolerances = {"coreml": Tolerance(5e-2, "fp16 ML Program (numeric check on macOS only; spec inspection elsewhere)")}

    def export(self, ctx: ExportContext) -> dict:
        from hwnas.convert.coreml import convert_coreml
        convert_coreml(ctx.deploy, ctx.shape, ctx.path("model.mlpackage"), precision=ctx.coreml_precision)
        return verify.check_coreml(ctx.path("model.mlpackage"), ctx.x, ctx.ref, ctx.arch.space, ctx.arch.task)


@register_format
class TensorRTFormat(Format):
    name = "tensorrt"
    files = ("model.engine",)
    tolerances = {"tensorrt": Tolerance(5e-2, "fp16 engine")}

    def preflight(self, arch=None) -> None:
        from hwnas.convert.tensorrt import TensorRTUnavailable, tensorrt_available
        if not tensorrt_available():
            raise TensorRTUnavailable(
                "needed by format=tensorrt; or export format=onnx here and build the engine where "
                "TensorRT runs: `trtexec --onnx=model.onnx --fp16 --saveEngine=model.engine`")

    def export(self, ctx: ExportContext) -> dict:
        from hwnas.convert.tensorrt import build_engine
        build_engine(ctx.onnx(), ctx.path("model.engine"), precision="fp16", input_shape=ctx.shape)
        return verify.check_tensorrt(ctx.path("model.engine"), ctx.x, ctx.ref)


@register_format
class TorchScriptFormat(Format):
    name = "torchscript"
    files = ("model.ts",)
    tolerances = {"torchscript": Tolerance(1e-4, "fp32, BatchNorms folded, traced")}

    def export(self, ctx: ExportContext) -> dict:
        from hwnas.convert.torchscript import export_torchscript
        export_torchscript(ctx.deploy, ctx.shape, ctx.path("model.ts"))
        return verify.check_torchscript(ctx.path("model.ts"), ctx.x, ctx.ref)


@register_format
class AotiFormat(Format):
    """The `torch_inductor` deploy form compiled by AOTInductor into model.pt2: fp16 for CUDA where a
    GPU is visible (what the torch_inductor table times), else fp32 for this CPU; then its check."""

    name = "aoti"
    files = ("model.pt2",)
    cxx_runtime = True
    tolerances = {
        "aoti": Tolerance(1e-4, "fp32 AOTInductor package for the CPU: BatchNorms folded, Inductor's fused kernels"),
        "aoti_fp16": Tolerance(5e-2, "fp16 AOTInductor package for CUDA: half-precision rounding, Inductor's fused kernels"),
    }

    def preflight(self, arch=None) -> None:
        if arch is not None and arch.task == "backbone":
            raise ExportError("format=aoti packages a classifier (one tensor out), not a backbone's stage outputs: "
                              "export the backbone as format=[pt,onnx] (or timm), or drop features_only=true")
        from hwnas.convert.aoti import cxx_compiler
        if cxx_compiler() is None:
            raise ExportError(f"format=aoti compiles C++ (AOTInductor) and finds no C++ compiler here "
                              f"({os.environ.get('CXX') or 'g++'} is not on PATH): install one (e.g. apt-get install "
                              "g++) or set CXX=, or export format=[pt,onnx] here and format=aoti where a compiler is")

    def export(self, ctx: ExportContext) -> dict:
        from hwnas.latency.deploy import TorchInductorPackage
        device = "cuda" if torch.cuda.is_available() else "cpu"
        precision = "fp16" if device == "cuda" else "fp32"
        form = TorchInductorPackage(batch=ctx.shape[0], precision=precision, **ctx.aoti_form)
        t0 = time.perf_counter()
        form.compile(form.module(copy.deepcopy(ctx.model)), ctx.shape, ctx.path("model.pt2"), device=device,
                     metadata={"arch_id": ctx.arch.id, "space": ctx.arch.space})
        check = verify.check_aoti(ctx.path("model.pt2"), ctx.x, ctx.ref, precision)
        return {**check, "compile_seconds": round(time.perf_counter() - t0 - check["seconds"], 3),
                "deploy_form": form.describe(), "form": form.settings(),
                "input": {"shape": list(ctx.shape), "dtype": "float32", "layout": "NCHW contiguous", "device": device},
                "needs": {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device == "cuda" else
                          "cpu", "cuda": torch.version.cuda if device == "cuda" else None},
                "how": aoti_how(ctx.shape, device)}


def aoti_how(shape, device: str) -> str:
    """How a user without hwnas runs the package: on CUDA at the speed the torch_inductor table
    measured (single-threaded runtime, one CUDA graph), with the libstdc++ work-around."""
    from hwnas.convert.aoti import RUN_WITHOUT_HWNAS
    checks = ("the input must be exactly this shape, dtype and device: set AOTI_RUNTIME_CHECK_INPUTS=1 to have "
              "the runtime check it, or load it with hwnas.convert.aoti.load_aoti, which does")
    if device != "cuda":
        return f"torch._inductor.aoti_load_package('model.pt2', run_single_threaded=True)(x) (no hwnas needed; {checks})"
    return (f"no hwnas needed; at the measured speed (a CUDA graph, as load_aoti replays it; {checks}):\n"
            + RUN_WITHOUT_HWNAS.replace("SHAPE", str(tuple(shape)))
            + "If loading dies with SIGSEGV inside the package's wrapper.so (std::regex), the process resolves another "
              "libstdc++ than the one g++ built the package with: start Python with "
              "LD_PRELOAD=$(readlink -f $(g++ -print-file-name=libstdc++.so.6)) (hwnas's apps do this themselves)")


@register_format
class TimmFormat(Format):
    name = "timm"
    files = ("model_timm.pth",)
    tolerances = {"timm": Tolerance(1e-5, "the same weights in timm's layout: read back into our model here; timm's "
                                          "own model (where timm is installed) computes the same function with its own code")}

    def preflight(self, arch=None) -> None:
        if arch is not None:  # only timm's own models can be written for timm: a PretrainedError saying where it differs
            from supernet.pretrained import timm_model_name
            timm_model_name(arch)

    def export(self, ctx: ExportContext) -> dict:
        from .timm import save_timm
        info = save_timm(ctx.model, ctx.path("model_timm.pth"))
        return verify.check_timm(ctx.path("model_timm.pth"), ctx.model, ctx.x, ctx.ref, info)
