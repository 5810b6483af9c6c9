"""The `torch_cuda` deploy recipe, for users who run the PyTorch model on an NVIDIA GPU themselves.

The recipe itself is the `torch_cuda` deploy form (`hwnas.latency.deploy.TorchCUDAModule`), the
one function the latency table, verification and export all go through:

- BatchNorms folded;
- EfficientFormerV2's x2 bilinear upsample after stride attention (`align_corners=False`) as
  `Upsample2xBilinear` (from `supernet.layers`): shifted weighted sums, also when traced. PyTorch's
  bilinear-upsample kernel takes most of an EfficientFormerV2's GPU time
  (shared/reference/GPU_NOTES.md); a handful of elementwise kernels does the same work in
  microseconds;
- channels_last memory format, which spares cuDNN its NCHW<->NHWC conversions;
- the precision (fp16 in the `torch_cuda` table).

    model = deploy_form("torch_cuda").module(hwnas.load(DIR)).cuda()   # what the table timed
    x = x.half().contiguous(memory_format=torch.channels_last)

Outputs stay equal to the model's (the rewrite to within float rounding, tested at 1e-6).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from supernet.layers import Upsample2xBilinear

__all__ = ["Upsample2xBilinear", "optimize_for_gpu", "reference_upsample", "replace_bilinear_upsample"]


def replace_bilinear_upsample(model: nn.Module) -> int:
    """Swap every x2 bilinear upsample (align_corners=False) for `Upsample2xBilinear`, in place;
    returns how many were replaced."""
    from hwnas.latency.deploy import replace_upsamples
    return replace_upsamples(model, Upsample2xBilinear)


@torch.no_grad()
def optimize_for_gpu(model: nn.Module, channels_last: bool = True, precision: str = "fp32") -> nn.Module:
    """The `torch_cuda` deploy form, in place: BatchNorms folded, the bilinear rewrite, channels_last
    (optional) and `precision` (fp32 by default here; the table times fp16)."""
    from hwnas.latency.deploy import deploy_form
    return deploy_form("torch_cuda", precision=precision, channels_last=channels_last).module(model)


def reference_upsample(x: torch.Tensor) -> torch.Tensor:
    """PyTorch's own x2 bilinear upsample (what `Upsample2xBilinear` must equal)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
