"""Proof that an export computes what the PyTorch model computes, one check per format.

Each check runs the exported file on its own runtime and compares its output with the reference
output of the PyTorch model (un-folded, eval mode, fp32) on the same fixed input. The error is
`max |export - reference| / max |reference|` -- relative to the output's scale, so the bound means
the same for a freshly initialised model (tiny logits) as for a trained one. Core ML cannot run on
Linux; there the check inspects the ML Program instead (program type, ops, input and output
shapes, fp16 weights) and, on macOS, also runs it.

Every check returns a plain dict (it goes into `manifest.json` as is) and never raises for a
mismatch: `passed` says whether the export is within its tolerance, `error` says why not.
"""
from __future__ import annotations

import os
import platform
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class Tolerance:
    rel: float  # bound on max|export - reference| / max|reference|
    why: str


# The bounds, stated once (docs/export.md quotes them). fp32 formats differ from the reference
# only by BatchNorm folding and the runtime's own op fusion; fp16 formats by half-precision rounding.
TOLERANCES: dict[str, Tolerance] = {
    "pt": Tolerance(1e-6, "same weights, same PyTorch code: equal up to float nondeterminism"),
    "torchscript": Tolerance(1e-4, "fp32, BatchNorms folded, traced"),
    "onnx": Tolerance(1e-4, "fp32, BatchNorms folded, ONNX Runtime CPU with full graph optimisation"),
    "coreml": Tolerance(5e-2, "fp16 ML Program (numeric check on macOS only; spec inspection elsewhere)"),
    "tensorrt": Tolerance(5e-2, "fp16 engine"),
    "aoti": Tolerance(1e-4, "fp32 AOTInductor package for the CPU: BatchNorms folded, Inductor's fused kernels"),
    "aoti_fp16": Tolerance(5e-2, "fp16 AOTInductor package for CUDA: half-precision rounding, Inductor's fused kernels"),
}


def reference_input(input_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The fixed input every check uses: standard normal, seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*input_shape, generator=g)


def compare(out: np.ndarray | torch.Tensor, ref: torch.Tensor, fmt: str) -> dict:
    """The error of `out` against `ref` and whether it is within `fmt`'s tolerance."""
    out_t = torch.as_tensor(np.asarray(out, dtype=np.float32)) if not isinstance(out, torch.Tensor) \
        else out.detach().float().cpu()
    ref = ref.detach().float().cpu()
    tol = TOLERANCES[fmt]
    if tuple(out_t.shape) != tuple(ref.shape):
        return dict(passed=False, error=f"output shape {tuple(out_t.shape)} != reference {tuple(ref.shape)}")
    if not torch.isfinite(out_t).all():
        return dict(passed=False, error="output holds NaN or Inf")
    abs_err = float((out_t - ref).abs().max())
    scale = float(ref.abs().max())
    rel = abs_err / scale if scale > 0 else abs_err
    out = dict(max_abs_err=abs_err, ref_max_abs=scale, rel_err=rel, passed=rel <= tol.rel)
    if not out["passed"]:
        out["error"] = f"relative error {rel:.3g} exceeds the {fmt} tolerance {tol.rel:g}"
    return out


def _run(fmt: str, runtime: str, check: str, fn, tolerance: str | None = None) -> dict:
    """Run one check, timing it; an exception becomes a failed check with its message. `tolerance`:
    the key of `TOLERANCES` when not the format's own (a format with one bound per precision)."""
    record = dict(format=fmt, runtime=runtime, check=check, tolerance_rel=TOLERANCES[tolerance or fmt].rel)
    t0 = time.perf_counter()
    try:
        record.update(fn())
    except Exception as e:  # the check's failure is data for the manifest, not a crash here
        record.update(passed=False, error=f"{type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=3))
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def check_pt(export_dir: str | os.PathLike, x: torch.Tensor, ref: torch.Tensor) -> dict:
    """Reload the `pt` export with `hwnas.load` and run it in PyTorch."""
    def fn():
        from .pt import load
        model = load(export_dir)
        with torch.no_grad():
            return compare(model(x), ref, "pt")
    return _run("pt", f"torch {torch.__version__}", "hwnas.load + PyTorch forward", fn)


def check_torchscript(path: str | os.PathLike, x: torch.Tensor, ref: torch.Tensor) -> dict:
    def fn():
        from hwnas.convert.torchscript import load_torchscript
        module = load_torchscript(path)
        with torch.no_grad():
            return compare(module(x), ref, "torchscript")
    return _run("torchscript", f"torch {torch.__version__}", "torch.jit.load + forward", fn)


def check_onnx(path: str | os.PathLike, x: torch.Tensor, ref: torch.Tensor) -> dict:
    import onnxruntime as ort

    def fn():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        expected = list(x.shape)
        if list(inp.shape) != expected:
            return dict(passed=False, error=f"ONNX input shape {inp.shape} is not the static {expected}")
        (out,) = sess.run(None, {inp.name: x.numpy()})
        return compare(out, ref, "onnx")
    return _run("onnx", f"onnxruntime {ort.__version__} CPUExecutionProvider",
                "ONNX Runtime session (ORT_ENABLE_ALL) vs PyTorch", fn)


def check_aoti(path: str | os.PathLike, x: torch.Tensor, ref: torch.Tensor, precision: str) -> dict:
    """Load the AOTInductor package (`hwnas.convert.aoti.load_aoti`, which checks the input against
    the package's metadata) on its device and compare its output within the bound of its precision."""
    tol = "aoti" if precision == "fp32" else "aoti_fp16"

    def fn():
        from hwnas.convert.aoti import load_aoti
        run = load_aoti(path)
        with torch.no_grad():
            out = run(x.to(run.device).contiguous())
        return {"device": run.device, "precision": precision, "tolerance": tol, **compare(out, ref, tol)}
    return _run("aoti", f"torch {torch.__version__} AOTInductor (torch._inductor.aoti_load_package)",
                "AOTInductor package vs PyTorch", fn, tolerance=tol)


def core_ml_required_ops(space: str) -> frozenset:
    """Ops every ML Program of this family must hold (the convolutions and the classifier): the
    family's `coreml_ops` (`supernet.Family`)."""
    import supernet
    return supernet.get_family(space).coreml_ops


def _coreml_spec_check(path: Path, x: torch.Tensor, ref: torch.Tensor, space: str) -> dict:
    from hwnas.convert.coreml import coreml_ops, import_coremltools

    ct = import_coremltools()
    spec = ct.utils.load_spec(str(path))
    problems = []
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        problems.append(f"model type is {kind!r}, not an ML Program")
    desc = spec.description
    in_shapes = [list(i.type.multiArrayType.shape) for i in desc.input]
    out_shapes = [list(o.type.multiArrayType.shape) for o in desc.output]
    if in_shapes != [list(x.shape)]:
        problems.append(f"inputs {in_shapes} != [{list(x.shape)}]")
    if out_shapes != [list(ref.shape)]:
        problems.append(f"outputs {out_shapes} != [{list(ref.shape)}]")
    ops = coreml_ops(path) if kind == "mlProgram" else []
    missing = sorted(core_ml_required_ops(space) - set(ops))
    if missing:
        problems.append(f"ops missing from the program: {missing}")
    # fp16: every floating-point weight tensor (rank >= 1 const) is stored in half precision.
    dtype = ct.proto.MIL_pb2.DataType
    fp16 = other = 0
    if kind == "mlProgram":
        fn = spec.mlProgram.functions["main"]
        for op in fn.block_specializations[fn.opset].operations:
            if op.type != "const":
                continue
            tt = op.attributes["val"].type.tensorType
            if tt.rank >= 1 and tt.dataType in (dtype.FLOAT16, dtype.FLOAT32, dtype.FLOAT64):
                fp16 += tt.dataType == dtype.FLOAT16
                other += tt.dataType != dtype.FLOAT16
        if other or not fp16:
            problems.append(f"weights not all fp16: {fp16} fp16 tensors, {other} in another float type")
    counts = dict(sorted(Counter(ops).items(), key=lambda kv: -kv[1]))
    out = dict(passed=not problems, program=kind, input_shapes=in_shapes, output_shapes=out_shapes,
               fp16_weight_tensors=fp16, op_counts=counts)
    if problems:
        out["error"] = "; ".join(problems)
    return out


def check_coreml(path: str | os.PathLike, x: torch.Tensor, ref: torch.Tensor, space: str) -> dict:
    """Spec inspection everywhere; on macOS also a prediction compared within the fp16 tolerance."""
    path = Path(path)
    on_mac = platform.system() == "Darwin"

    def fn():
        out = _coreml_spec_check(path, x, ref, space)
        if on_mac and out["passed"]:
            from hwnas.convert.coreml import import_coremltools
            ct = import_coremltools()
            mlmodel = ct.models.MLModel(str(path))
            name = mlmodel.get_spec().description.input[0].name
            pred = mlmodel.predict({name: x.numpy()})
            out.update(compare(next(iter(pred.values())), ref, "coreml"))
        else:
            out["note"] = "numeric check needs macOS (Core ML runtime); spec inspected instead"
        return out
    return _run("coreml", "coremltools " + _coremltools_version(),
                "ML Program prediction vs PyTorch" if on_mac else "spec inspection: program type, ops, shapes, fp16",
                fn)


def check_tensorrt(path: str | os.PathLike, x: torch.Tensor, ref: torch.Tensor) -> dict:
    """Run the engine with the TensorRT 10 Python API on CUDA tensors (untested here: no TensorRT)."""
    def fn():
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        ctx = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inp = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT][0]
        outn = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT][0]
        dt = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        xi = x.cuda().to(dt[engine.get_tensor_dtype(inp)]).contiguous()
        yo = torch.empty(tuple(engine.get_tensor_shape(outn)), device="cuda",
                         dtype=dt[engine.get_tensor_dtype(outn)])
        ctx.set_tensor_address(inp, xi.data_ptr())
        ctx.set_tensor_address(outn, yo.data_ptr())
        stream = torch.cuda.Stream()
        ctx.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return compare(yo.float().cpu(), ref, "tensorrt")
    return _run("tensorrt", "TensorRT", "TensorRT engine (fp16) vs PyTorch", fn)


def _coremltools_version() -> str:
    try:
        from importlib.metadata import version
        return version("coremltools")
    except Exception:
        return "unknown"
