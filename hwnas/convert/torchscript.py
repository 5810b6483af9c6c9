"""The `torchscript` format: the BN-folded model traced at a fixed input shape (`model.ts`).

Traced, not scripted: the static models have no data-dependent control flow, and tracing records
exactly the ops that ran. PyTorch marks TorchScript deprecated in favour of `torch.export`; it
is still what C++ (libtorch) and older mobile runtimes load, so it stays one command away.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn


def export_torchscript(model: nn.Module, input_shape: tuple[int, ...], path: str | os.PathLike) -> Path:
    """Trace `model` (eval mode; fold BatchNorms first for deployment) and save it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    param = next(model.parameters(), None)
    x = torch.zeros(*input_shape, device=param.device if param is not None else "cpu")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the deprecation notice and shape-to-int tracer notes
        # check_trace would run the model twice more; verify.py compares outputs instead. strict=False:
        # a backbone returns a list of stage outputs (a traced module returns it as such)
        traced = torch.jit.trace(model, x, check_trace=False, strict=False)
        traced = torch.jit.freeze(traced)
        torch.jit.save(traced, str(path))
    return path


def load_torchscript(path: str | os.PathLike, map_location: str = "cpu") -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.load(str(path), map_location=map_location)
