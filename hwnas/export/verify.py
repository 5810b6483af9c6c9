"""Proof that an export computes what the PyTorch model computes, one check per format.

Each check runs the exported file on its own runtime and compares its output with the reference
output of the PyTorch model (un-folded, eval mode, fp32) on the same fixed input. The error is
`max |export - reference| / max |reference|` -- relative to the output's scale, so the bound means
the same for a freshly initialised model (tiny logits) as for a trained one. A backbone has one
output per stage it returns: each is compared on its own scale, and the largest error counts. Core ML cannot run on
Linux; there the check inspects the ML Program instead (program type, ops, input and output
shapes, fp16 weights) and, on macOS, also runs it.

The bounds are the formats' own (`Format.tolerances`, `hwnas.export.formats`). Every check returns
a plain dict (it goes into `manifest.json` as is) and never raises for a mismatch: `passed` says
whether the export is within its tolerance, `error` says why not.
"""
from __future__ import annotations

import os
import platform
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from .format import Tolerance, tolerance  # noqa: F401 (Tolerance re-exported)


def reference_input(input_shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """The fixed input every check uses: standard normal, seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*input_shape, generator=g)


def compare(out, ref, fmt: str) -> dict:
    """The error of `out` against `ref` and whether it is within `fmt`'s tolerance; `ref` may be a
    list of tensors (a backbone's stage outputs), `out` then the runtime's outputs in that order."""
    if isinstance(ref, (list, tuple)):
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        if len(outs) != len(ref):
            return dict(passed=False, error=f"{len(outs)} outputs, the reference has {len(ref)}")
        parts = [compare(o, r, fmt) for o, r in zip(outs, ref)]
        bad = [f"output {i}: {p['error']}" for i, p in enumerate(parts) if not p["passed"]]
        if any("rel_err" not in p for p in parts):
            return dict(passed=False, error="; ".join(bad))
        worst = max(parts, key=lambda p: p["rel_err"])
        res = dict(max_abs_err=max(p["max_abs_err"] for p in parts), ref_max_abs=worst["ref_max_abs"],
                   rel_err=worst["rel_err"], rel_errs=[p["rel_err"] for p in parts], passed=not bad)
        if bad:
            res["error"] = "; ".join(bad)
        return res
    out_t = torch.as_tensor(np.asarray(out, dtype=np.float32)) if not isinstance(out, torch.Tensor) \
        else out.detach().float().cpu()
    ref = ref.detach().float().cpu()
    tol = tolerance(fmt)
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


def run_check(fmt: str, runtime: str, check: str, fn, bound: str | None = None) -> dict:
    """Run one check (`fn` returns its record, e.g. `compare`'s), timing it; an exception becomes a
    failed check with its message. `bound`: the tolerance's key when not the format's own (a format
    with one bound per precision, `Format.tolerances`)."""
    record = dict(format=fmt, runtime=runtime, check=check, tolerance_rel=tolerance(bound or fmt).rel)
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
    return run_check("pt", f"torch {torch.__version__}", "hwnas.load + PyTorch forward", fn)


def check_torchscript(path: str | os.PathLike, x: torch.Tensor, ref: torch.Tensor) -> dict:
    def fn():
        from hwnas.convert.torchscript import load_torchscript
        module = load_torchscript(path)
        with torch.no_grad():
            return compare(module(x), ref, "torchscript")
    return run_check("torchscript", f"torch {torch.__version__}", "torch.jit.load + forward", fn)


def check_onnx(path: str | os.PathLike, x: torch.Tensor, ref, dynamic: tuple[int, ...] = (),
               more: list = ()) -> dict:
    """ONNX Runtime against PyTorch on `x`; the input's axes `dynamic` must be symbolic (the
    others fixed at `x`'s shape), and each (input, reference) of `more` -- other batch sizes or
    image sizes a dynamic graph claims to take -- must match too."""
    import onnxruntime as ort

    def fn():
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        expected = [f"<{i}>" if i in dynamic else d for i, d in enumerate(x.shape)]
        got = [f"<{i}>" if isinstance(d, str) or d is None else d for i, d in enumerate(inp.shape)]
        if got != expected:
            what = f"axes {list(dynamic)} symbolic, the others {list(x.shape)}" if dynamic else f"the static {list(x.shape)}"
            return dict(passed=False, error=f"ONNX input shape {inp.shape} is not {what}")
        out = sess.run(None, {inp.name: x.numpy()})
        res = compare(out if isinstance(ref, (list, tuple)) else out[0], ref, "onnx")
        if dynamic:
            res["dynamic_axes"] = {str(i): inp.shape[i] for i in dynamic}
        for xi, ri in more:  # the dynamic axes at work: another batch, another image size
            o = sess.run(None, {inp.name: xi.numpy()})
            r = compare(o if isinstance(ri, (list, tuple)) else o[0], ri, "onnx")
            res.setdefault("other_inputs", []).append({"input_shape": list(xi.shape), "rel_err": r.get("rel_err"),
                                                       "passed": r["passed"], **({"error": r["error"]} if "error" in r else {})})
            if not r["passed"]:
                res["passed"] = False
                res["error"] = f"input {list(xi.shape)}: {r.get('error')}"
        return res
    return run_check("onnx", f"onnxruntime {ort.__version__} CPUExecutionProvider",
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
    return run_check("aoti", f"torch {torch.__version__} AOTInductor (torch._inductor.aoti_load_package)",
                "AOTInductor package vs PyTorch", fn, bound=tol)


def core_ml_required_ops(space: str, task: str = "classify") -> frozenset:
    """Ops every ML Program of this family must hold (the convolutions and the classifier): the
    family's `coreml_ops` (`supernet.Family`), or for a backbone its `coreml_backbone_ops`."""
    import supernet
    family = supernet.get_family(space)
    return family.coreml_ops if task == "classify" else family.coreml_backbone_ops


def _coreml_spec_check(path: Path, x: torch.Tensor, ref, space: str, task: str = "classify") -> dict:
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
    want = [list(r.shape) for r in ref] if isinstance(ref, (list, tuple)) else [list(ref.shape)]
    if out_shapes != want:
        problems.append(f"outputs {out_shapes} != {want}")
    ops = coreml_ops(path) if kind == "mlProgram" else []
    missing = sorted(core_ml_required_ops(space, task) - set(ops))
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


def check_coreml(path: str | os.PathLike, x: torch.Tensor, ref, space: str, task: str = "classify") -> dict:
    """Spec inspection everywhere; on macOS also a prediction compared within the fp16 tolerance."""
    path = Path(path)
    on_mac = platform.system() == "Darwin"

    def fn():
        out = _coreml_spec_check(path, x, ref, space, task)
        if on_mac and out["passed"]:
            from hwnas.convert.coreml import import_coremltools
            ct = import_coremltools()
            mlmodel = ct.models.MLModel(str(path))
            spec = mlmodel.get_spec().description
            pred = mlmodel.predict({spec.input[0].name: x.numpy()})
            outs = [pred[o.name] for o in spec.output]
            out.update(compare(outs if isinstance(ref, (list, tuple)) else outs[0], ref, "coreml"))
        else:
            out["note"] = "numeric check needs macOS (Core ML runtime); spec inspected instead"
        return out
    return run_check("coreml", "coremltools " + _coremltools_version(),
                "ML Program prediction vs PyTorch" if on_mac else "spec inspection: program type, ops, shapes, fp16",
                fn)


def check_tensorrt(path: str | os.PathLike, x: torch.Tensor, ref) -> dict:
    """Run the engine with the TensorRT 10 Python API on CUDA tensors (untested here: no TensorRT)."""
    def fn():
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
        ctx = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inp = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT][0]
        outs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        dt = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        xi = x.cuda().to(dt[engine.get_tensor_dtype(inp)]).contiguous()
        ctx.set_input_shape(inp, tuple(xi.shape))  # a dynamic-batch graph: the shape of this run
        ys = [torch.empty(tuple(ctx.get_tensor_shape(n)), device="cuda", dtype=dt[engine.get_tensor_dtype(n)])
              for n in outs]
        ctx.set_tensor_address(inp, xi.data_ptr())
        for n, y in zip(outs, ys):
            ctx.set_tensor_address(n, y.data_ptr())
        stream = torch.cuda.Stream()
        ctx.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        ys = [y.float().cpu() for y in ys]
        return compare(ys if isinstance(ref, (list, tuple)) else ys[0], ref, "tensorrt")
    return run_check("tensorrt", "TensorRT", "TensorRT engine (fp16) vs PyTorch", fn)


def check_timm(path: str | os.PathLike, model, x: torch.Tensor, ref, info: dict) -> dict:
    """The file read back with `weights_only=True` and mapped to our names must fill a fresh model of
    the arch exactly (every tensor, nothing else) and give the same outputs; where timm is installed,
    timm's model loaded as the manifest says must give them too."""
    def fn():
        import copy
        import supernet
        sd = torch.load(path, map_location="cpu", weights_only=True)
        # (a backbone's names are the same in both layouts: only the heads differ)
        ours = supernet.get_family(model.arch.space).checkpoint_layout("timm").to_ours(sd)
        twin = copy.deepcopy(model)
        missing, unexpected = twin.load_state_dict(ours, strict=False)
        if missing or unexpected:
            return dict(passed=False, error=f"read back through the timm layout: missing {list(missing)[:3]}, "
                                            f"unexpected {list(unexpected)[:3]}")
        with torch.no_grad():
            out = compare(twin.eval()(x), ref, "timm")
        out.update(timm_model=info["timm_model"], load_with=info["load_with"], tensors=len(sd))
        try:
            import timm
        except ImportError:
            out["note"] = ("timm is not installed here: the file was read back through the timm layout table; "
                           "experiments/timm_features_check.py loads it into timm's own models")
            return out
        kwargs = dict(info["create_kwargs"])
        if "img_size" in kwargs:
            kwargs["img_size"] = tuple(kwargs["img_size"])
        if info["features_only"]:
            tm = timm.create_model(info["timm_model"], features_only=True, pretrained=True,
                                   pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        else:
            tm = timm.create_model(info["timm_model"], checkpoint_path=str(path), **kwargs)
        with torch.no_grad():
            theirs = compare(tm.eval()(x), ref, "timm")
        out.update(timm_version=timm.__version__, timm_rel_err=theirs.get("rel_err"))
        if not theirs["passed"]:
            out.update(passed=False, error=f"timm's model: {theirs.get('error')}")
        return out
    return run_check("timm", f"torch {torch.__version__}", "read back into our model (and into timm's, where installed)", fn)


def _coremltools_version() -> str:
    try:
        from importlib.metadata import version
        return version("coremltools")
    except Exception:
        return "unknown"
