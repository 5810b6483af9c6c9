"""Build a TensorRT engine from an ONNX file (TensorRT 10 Python API).

TensorRT is not installed on the project's machines (its wheels come from NVIDIA's registry), so
this module is written against the documented TensorRT 10 API but untested here. Without
TensorRT every entry point raises `TensorRTUnavailable` with the install command.
"""
from __future__ import annotations

import os
from pathlib import Path

from hwnas.errors import HwnasError
from hwnas._files import atomic_write

INSTALL_HINT = ("TensorRT is not installed. On a machine with an NVIDIA GPU and CUDA 12, install "
                "TensorRT 10: `pip install tensorrt-cu12` (from NVIDIA's index, "
                "https://pypi.nvidia.com), then check `python -c 'import tensorrt'`. The "
                "`tensorrt` target is untested on the project's machines.")


class TensorRTUnavailable(HwnasError, ImportError):
    """TensorRT (the `tensorrt` Python package, version 10) cannot be imported."""

    def __init__(self, detail: str = ""):
        super().__init__(INSTALL_HINT + (f" ({detail})" if detail else ""))


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
        return True
    except TensorRTUnavailable:
        return False


def import_tensorrt():
    """`tensorrt` (version 10 or newer), or `TensorRTUnavailable` saying how to install it."""
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(str(e)) from None
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise TensorRTUnavailable(f"found TensorRT {trt.__version__}; the API used here is TensorRT 10")
    return trt


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike,
                 precision: str = "fp16", workspace_gb: float = 4.0, input_shape: tuple | None = None) -> Path:
    """Parse `onnx_path`, build a serialized engine and write it to `engine_path`. A graph with
    dynamic axes (a backbone's batch, height, width) is built for the one shape `input_shape`."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    inp = network.get_input(0)
    if any(d < 0 for d in inp.shape):
        if input_shape is None:
            raise ValueError(f"{onnx_path} has dynamic input axes {tuple(inp.shape)}: give input_shape")
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, tuple(input_shape), tuple(input_shape), tuple(input_shape))
        config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision != "fp32":
        raise ValueError(f"precision {precision!r} is not supported; use fp16 or fp32")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    engine_path = Path(engine_path)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(engine_path, bytes(serialized))
