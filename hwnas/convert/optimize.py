"""The rewrites a static model goes through before it is converted or timed: BatchNorms folded,
x2 bilinear upsamples swapped for the form a runtime runs fastest, and the whole GPU recipe.

    model = optimize_for_gpu(hwnas.load(DIR), precision="fp16").cuda()    # what the torch_cuda table timed
    x = x.half().contiguous(memory_format=torch.channels_last)

The GPU recipe (`optimize_for_gpu`, the `torch_cuda` deploy form of `hwnas.latency.deploy`):

- BatchNorms folded;
- EfficientFormerV2's x2 bilinear upsample after stride attention (`align_corners=False`) as
  `Upsample2xBilinear` (from `supernet.layers`): shifted weighted sums, also when traced. PyTorch's
  bilinear-upsample kernel takes most of an EfficientFormerV2's GPU time
  (shared/reference/GPU_NOTES.md); a handful of elementwise kernels does the same work in
  microseconds;
- channels_last memory format, which spares cuDNN its NCHW<->NHWC conversions;
- the precision (fp16 in the `torch_cuda` table).

Outputs stay equal to the model's (the rewrite to within float rounding, tested at 1e-6). The
exported-graph forms (ONNX Runtime, TensorRT, Core ML) fold the same way and keep one
`nn.Upsample` (a single `Resize` node) instead.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from supernet.layers import Upsample2xBilinear

#: the precisions a deployed module can be cast to
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

__all__ = ["DTYPES", "ShiftedDepthwiseConv2d", "Upsample2xBilinear", "fold", "optimize_for_gpu", "reference_upsample",
           "replace_bilinear_upsample", "replace_depthwise_convs", "replace_upsamples", "torch_upsample", "use_sdpa"]


def fold(model: nn.Module) -> nn.Module:
    """BatchNorms (and EfficientFormerV2's LayerScale and attention-bias tables) folded, eval mode,
    in place. A lone block (what a table row measures) folds like a whole network."""
    import supernet
    if hasattr(model, "fuse_bn"):  # reference models outside the spaces (MobileNetV2)
        return model.fuse_bn()
    return supernet.fuse_for_deploy(model)


def _is_bilinear_x2(m: nn.Module) -> bool:
    if not isinstance(m, nn.Upsample) or m.mode != "bilinear" or m.align_corners:
        return False
    sf = m.scale_factor
    sf = tuple(sf) if isinstance(sf, (tuple, list)) else (sf, sf)
    return m.size is None and all(float(s) == 2.0 for s in sf)


def replace_upsamples(model: nn.Module, make: Callable[[], nn.Module]) -> int:
    """Swap every x2 bilinear upsample (align_corners=False; `nn.Upsample`, `supernet.layers.Upsample2x`
    or `Upsample2xBilinear`) for `make()`, in place; returns how many were replaced."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _is_bilinear_x2(child) or isinstance(child, Upsample2xBilinear):
                setattr(parent, name, make())
                n += 1
    return n


def torch_upsample() -> nn.Module:
    """PyTorch's own x2 bilinear upsample (one `Resize` node in an exported graph)."""
    return nn.Upsample(scale_factor=2.0, mode="bilinear")


def replace_bilinear_upsample(model: nn.Module) -> int:
    """Swap every x2 bilinear upsample (align_corners=False) for `Upsample2xBilinear`, in place;
    returns how many were replaced."""
    return replace_upsamples(model, Upsample2xBilinear)


@torch.no_grad()
def optimize_for_gpu(model: nn.Module, channels_last: bool = True, precision: str = "fp32") -> nn.Module:
    """The GPU recipe, in place: BatchNorms folded, the bilinear rewrite, `precision` (fp32 by
    default here; the `torch_cuda` table times fp16) and channels_last (optional); eval mode."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, not {precision!r}")
    model = fold(model)
    # PyTorch's CUDA bilinear kernel took 65 % of an EfficientFormerV2's GPU time; the same
    # arithmetic as elementwise ops takes microseconds (shared/reference/GPU_NOTES.md).
    replace_bilinear_upsample(model)
    # channels_last spares cuDNN its NCHW<->NHWC conversions (Next-ViT-S 1.56 vs ~2.3 ms, batch 8)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return model.to(dtype=DTYPES[precision], memory_format=memory_format).eval()


def reference_upsample(x: torch.Tensor) -> torch.Tensor:
    """PyTorch's own x2 bilinear upsample (what `Upsample2xBilinear` must equal)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class ShiftedDepthwiseConv2d(nn.Module):
    """A depthwise convolution (`groups` = in = out channels, zero padding, no dilation) as its k x k
    shifted multiply-adds: the arithmetic of `nn.Conv2d`, written as elementwise ops that a compiler
    (Inductor) fuses into one kernel together with what surrounds it (the folded bias, the
    activation, a residual add), where the convolution would be a cuDNN grouped kernel of its own.
    Eager PyTorch runs it as k² kernels: it is a form for compiled targets only."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        if not is_depthwise(conv):
            raise ValueError(f"not a depthwise convolution with zero padding and no dilation: {conv}")
        self.stride = tuple(conv.stride)
        self.padding = tuple(conv.padding)
        self.kernel_size = tuple(conv.kernel_size)
        c = conv.out_channels
        # one (1, C, 1, 1) weight per tap, taps in raster order
        self.weight = nn.Parameter(conv.weight.detach().reshape(c, -1).t().reshape(-1, 1, c, 1, 1).clone(),
                                   requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().reshape(1, c, 1, 1).clone(),
                                                                requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        h, w = x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw
        ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
        if ph or pw:
            x = F.pad(x, (pw, pw, ph, ph))
        out = self.bias
        for t in range(kh * kw):
            i, j = divmod(t, kw)
            tap = x[:, :, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw] * self.weight[t]
            out = tap if out is None else out + tap
        return out

    def extra_repr(self) -> str:
        return f"{self.weight.shape[2]}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


#: the largest depthwise kernel written as shifted sums (k² taps in one fused kernel)
MAX_SHIFTED_TAPS = 25


def is_depthwise(m: nn.Module) -> bool:
    """A depthwise `nn.Conv2d` (one filter per channel) with zero padding given as numbers and no dilation."""
    return (type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels and m.groups > 1
            and m.padding_mode == "zeros" and not isinstance(m.padding, str) and tuple(m.dilation) == (1, 1))


def use_sdpa(model: nn.Module) -> int:
    """Every attention that can (a module with an `sdpa` switch: Next-ViT's E-MHSA, EfficientFormerV2's
    downsampling attention) computed by one `F.scaled_dot_product_attention` call, in place; returns how
    many. The math is the same (outputs equal to float rounding); a GPU runs it as one fused kernel."""
    n = 0
    for m in model.modules():
        if isinstance(getattr(type(m), "sdpa", None), bool):
            m.sdpa = True
            n += 1
    return n


def replace_depthwise_convs(model: nn.Module) -> int:
    """Swap every depthwise `nn.Conv2d` of at most `MAX_SHIFTED_TAPS` taps for `ShiftedDepthwiseConv2d`
    (same dtype and device), in place; returns how many were replaced."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if is_depthwise(child) and child.kernel_size[0] * child.kernel_size[1] <= MAX_SHIFTED_TAPS:
                setattr(parent, name, ShiftedDepthwiseConv2d(child))  # (its weights are clones: same dtype, device)
                n += 1
    return n
