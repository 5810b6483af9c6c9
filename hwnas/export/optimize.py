"""Deploy-time rewrites for PyTorch on NVIDIA GPUs (the `torch_cuda` target): same function, faster.

- `Upsample2xBilinear` (from `supernet.layers`): EfficientFormerV2's x2 bilinear upsample after
  stride attention (`align_corners=False`) written as shifted weighted sums. PyTorch's
  bilinear-upsample kernel takes most of an EfficientFormerV2's GPU time
  (shared/reference/GPU_NOTES.md); a handful of elementwise kernels does the same work in
  microseconds. (The blocks themselves already use it on CUDA and in training; the swap makes
  it permanent, also for tracing, where the blocks keep `nn.Upsample`.)
- `optimize_for_gpu`: fold BatchNorms, apply the rewrite, optionally channels_last.

Outputs stay equal to the model's (the rewrite to within float rounding, tested at 1e-6).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from supernet.layers import Upsample2xBilinear

__all__ = ["Upsample2xBilinear", "optimize_for_gpu", "reference_upsample", "replace_bilinear_upsample"]


def _is_bilinear_x2(m: nn.Module) -> bool:
    if not isinstance(m, nn.Upsample) or m.mode != "bilinear" or m.align_corners:
        return False
    sf = m.scale_factor
    sf = tuple(sf) if isinstance(sf, (tuple, list)) else (sf, sf)
    return m.size is None and all(float(s) == 2.0 for s in sf)


def replace_bilinear_upsample(model: nn.Module) -> int:
    """Swap every x2 bilinear `nn.Upsample` (align_corners=False) for `Upsample2xBilinear`, in place;
    returns how many were replaced."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_bilinear_x2(child):
                setattr(parent, name, Upsample2xBilinear())
                n += 1
    return n


@torch.no_grad()
def optimize_for_gpu(model: nn.Module, channels_last: bool = True, upsample: bool = True) -> nn.Module:
    """The `torch_cuda` deploy recipe, in place: BatchNorms folded, the bilinear rewrite, and
    (optionally) channels_last memory format, which spares cuDNN its NCHW<->NHWC conversions."""
    import supernet

    supernet.fuse_for_deploy(model)
    if upsample:
        replace_bilinear_upsample(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model.eval()


def reference_upsample(x: torch.Tensor) -> torch.Tensor:
    """PyTorch's own x2 bilinear upsample (what `Upsample2xBilinear` must equal)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
