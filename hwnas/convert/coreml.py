"""Convert a static torch module to a Core ML ML Program (`.mlpackage`) and list the ops it holds.

Conversion runs anywhere coremltools installs (Linux included); loading and timing a model needs
macOS, which is why the latency backend ships a bundle to a Mac instead of timing here.
"""
from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from hwnas._files import atomic_path

PRECISIONS = ("fp16", "fp32")


def import_coremltools():
    """`coremltools`, imported quietly."""
    # coremltools logs a wall of "Failed to load ..." lines on Linux (no CoreML framework there)
    # and warns about untested torch versions; none of it concerns conversion.
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct
    return ct


def convert_coreml(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike,
                   precision: str = "fp16", fold_bn: bool = False,
                   minimum_deployment_target: str = "iOS16") -> Path:
    """Trace `model` at `input_shape` and write an ML Program `.mlpackage` at `path` (atomically)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not supported; use one of {list(PRECISIONS)}")
    ct = import_coremltools()
    path = Path(path)
    if path.suffix != ".mlpackage":
        raise ValueError(f"{path}: an ML Program is saved as a directory ending in .mlpackage")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fold_bn:
        import supernet
        supernet.fuse_for_deploy(model)
    model = model.eval().float().cpu()
    x = torch.randn(*input_shape)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch.export, not torch.jit.trace: coremltools 9's TorchScript frontend fails on the
        # `int` casts that `B, N, C = x.shape` leaves in a traced graph (numpy 2 scalars).
        program = torch.export.export(model, (x,)).run_decompositions({})
        mlmodel = ct.convert(
            program, convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=getattr(ct.target, minimum_deployment_target),
            skip_model_load=True)  # loading needs macOS; the Mac runner loads it
    try:
        with atomic_path(path) as tmp:  # a directory: the old one is replaced only by a complete new one
            mlmodel.save(str(tmp))
    finally:
        # ct.convert leaves the program in a temporary .mlpackage in the system temp folder, removed only
        # by an atexit hook, which a pool worker ending in os._exit never runs: one 33 MB folder per model
        if getattr(mlmodel, "is_temp_package", False):
            shutil.rmtree(mlmodel.package_path, ignore_errors=True)
    return path


def coreml_ops(path: str | os.PathLike) -> list[str]:
    """The op types of an ML Program's `main` function, in program order (nested blocks included)."""
    ct = import_coremltools()
    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        raise ValueError(f"{path} is not an ML Program (model type {spec.WhichOneof('Type')!r})")
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    out: list[str] = []

    def walk(b):
        for op in b.operations:
            out.append(op.type)
            for inner in op.blocks:
                walk(inner)

    walk(block)
    return out
