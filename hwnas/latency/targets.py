"""The five built-in targets, each one `Target` (`hwnas.latency.target`) naming its schema, deploy
form, timing backend, device and shipped format. Imported by `hwnas.latency`, so they are
registered whenever the latency package is.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from .backends import CoreML, OnnxRuntimeCPU, TensorRT, TorchCUDA, TorchInductor
from .config import CoreMLConfig, OnnxRuntimeCPUConfig, TensorRTConfig, TorchCUDAConfig, TorchInductorConfig
from .deploy import CoreMLProgram, ExportedGraph, TorchCUDAModule, TorchInductorPackage
from .target import Target, register_target


@register_target
class OnnxRuntimeCPUTarget(Target):
    name = "onnxruntime_cpu"
    schema = OnnxRuntimeCPUConfig
    backend = OnnxRuntimeCPU
    form = ExportedGraph
    form_keys = ("batch", "precision", "opset")
    device = "cpu"
    ships = "onnx"
    how = "model.onnx (format=onnx) in an ONNX Runtime CPU session"
    label = "ORT CPU"
    transfer_note = "a table made on an AMD EPYC predicted 0.57-0.73x of what ONNX Runtime measures on an Intel Xeon"
    # whole networks timed round-robin: on a shared 2-core Intel Xeon VM the adapted EfficientFormerV2 table then
    # met every goal, where timed one after another it had missed Kendall tau 0.95 in five of six rounds
    # (docs/latency.md, round 20)
    adapt_settings = ("target.rounds=50",)


@register_target
class TorchCUDATarget(Target):
    name = "torch_cuda"
    schema = TorchCUDAConfig
    backend = TorchCUDA
    form = TorchCUDAModule
    form_keys = ("batch", "precision", "channels_last", "attention")
    device = "cuda"
    build_device = "cuda"  # initialised on the GPU it is timed on: seconds saved per network
    ships = "pt"
    how = ("model = hwnas.latency.deploy_form('torch_cuda', **SETTINGS).module(hwnas.load(DIR)).cuda(); "
           "feed it form.example_input(...)-like inputs (dtype, memory format), in a CUDA graph as timed")
    label = "torch CUDA"


@register_target
class TorchInductorTarget(TorchCUDATarget):
    name = "torch_inductor"
    schema = TorchInductorConfig
    backend = TorchInductor
    form = TorchInductorPackage
    form_keys = ("batch", "precision", "channels_last", "attention", "depthwise", "autotune")
    ships = "aoti"
    how = "model.pt2 (format=aoti, extracted on the GPU machine: fp16, CUDA), run in a CUDA graph as timed"
    label = ""
    cxx_runtime = True  # its table's timing loads AOTInductor packages
    # the module it compiles is torch_cuda's: an eager block table of it, re-fitted on compiled whole networks,
    # costs a few dozen package compiles instead of one per block (~800 for both spaces, about an hour)
    adapts_from = ("torch_cuda",)


@register_target
class TensorRTTarget(Target):
    name = "tensorrt"
    schema = TensorRTConfig
    backend = TensorRT
    form = ExportedGraph
    form_keys = ("batch", "precision", "opset")
    device = "cuda"
    ships = "tensorrt"
    how = "an engine built from model.onnx (format=onnx/tensorrt) with the fp16 flag"
    label = "TensorRT"


@register_target
class CoreMLTarget(Target):
    name = "coreml"
    schema = CoreMLConfig
    backend = CoreML
    form = CoreMLProgram
    device = None  # a phone or a Mac: this machine never has it
    ships = "coreml"
    how = "model.mlpackage (format=coreml)"
    label = "Core ML"

    def profile_elsewhere(self, cfg, backend, space, archs, out, tables_dir, run_dir):
        """`coreml.import_csv=PATH`: merge a Mac's results into the table; off macOS: write the bundle
        of .mlpackage files a Mac times with `python run_bundle.py` (`hwnas.latency.coreml_bundle`)."""
        from . import coreml_bundle
        from .table import search_hint
        log = logging.getLogger("hwnas.profile")
        if cfg.coreml.import_csv:
            table = coreml_bundle.import_results(cfg.coreml.import_csv, space, backend, out, tables_dir)
            log.info("imported %s into %s: %s", cfg.coreml.import_csv, table.path, table.describe())
            log.info("%s", search_hint(self.name, table.path, out))
            return table.path
        if sys.platform == "darwin":
            return None
        bundle = Path(cfg.coreml.bundle_dir or Path(run_dir or ".") / "coreml_bundle")
        coreml_bundle.build_bundle(bundle, space, backend, archs=archs or None, n_fit=cfg.coreml.n_fit,
                                   fit_seed=cfg.fit_seed, progress=cfg.progress, limit=cfg.limit)
        log.info("Core ML cannot be timed on this OS. Bundle written to %s: copy it to a Mac, run "
                 "`python run_bundle.py` there (needs only coremltools), then "
                 "`python -m hwnas.profile +target=coreml space=%s coreml.import_csv=<bundle>/results.csv`.",
                 bundle, space.name)
        return bundle
