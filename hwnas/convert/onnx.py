"""Export a static torch module to ONNX (the TorchScript exporter: seconds, not minutes, per model)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from hwnas._files import atomic_path


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike,
                opset: int = 17, fold_bn: bool = False, input_name: str = "input",
                output_name: str | list[str] = "output", dynamic_axes: dict | None = None) -> Path:
    """Write `model` (eval mode, traced at `input_shape`) to `path` as ONNX and return the path.

    `fold_bn=True` folds BatchNorms first with `supernet.fuse_for_deploy` (in place); otherwise the
    caller is expected to have folded them. `output_name` is one name or, for a model returning
    several tensors (a backbone's stage outputs), one per output; `dynamic_axes` (torch.onnx's:
    {name: {axis: symbol}}) makes axes of the inputs and outputs symbolic -- the shape the model is
    traced at is fixed otherwise. The file appears atomically (temporary file, rename).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fold_bn:
        import supernet
        supernet.fuse_for_deploy(model)
    model.eval()
    param = next(model.parameters(), None)
    x = torch.randn(*input_shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None else torch.float32)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # dynamo=False: the TorchScript exporter takes ~0.5 s per block where the dynamo one
        # takes ~10 s per model, which matters for hundreds of blocks.
        torch.onnx.export(model, (x,), str(tmp), opset_version=opset, input_names=[input_name],
                          output_names=[output_name] if isinstance(output_name, str) else list(output_name),
                          dynamic_axes=dynamic_axes, dynamo=False, do_constant_folding=True)
    return path
