"""Converters: a static torch module to ONNX, Core ML (ML Program), a TensorRT engine or TorchScript,
and the rewrites before them (BatchNorm folding, upsample swaps, the GPU recipe: `optimize`).

Each converter takes a plain `nn.Module` (BatchNorms already folded, or folded on request) and an
input shape and writes one file, atomically. The lowest layer of the apps: the latency backends
time what these write, and `hwnas.export` builds deployable bundles from them.

    from hwnas.convert.onnx import export_onnx
    from hwnas.convert.coreml import convert_coreml, coreml_ops, import_coremltools
    from hwnas.convert.tensorrt import build_engine, import_tensorrt, tensorrt_available, TensorRTUnavailable
    from hwnas.convert.torchscript import export_torchscript, load_torchscript
    from hwnas.convert.optimize import fold, optimize_for_gpu, replace_upsamples
"""
