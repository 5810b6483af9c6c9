"""Small pieces both families share: DropPath, the x2 bilinear upsample and the BatchNorm-folding arithmetic."""
from __future__ import annotations

import torch
import torch.nn as nn


class DropPath(nn.Module):
    """Stochastic depth on a residual branch; `drop_prob` is set by the model (or the supernet) per position."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def _up2_axis(x: torch.Tensor, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    prev = torch.cat([x.narrow(dim, 0, 1), x.narrow(dim, 0, n - 1)], dim)  # x[i-1], edge replicated
    nxt = torch.cat([x.narrow(dim, 1, n - 1), x.narrow(dim, n - 1, 1)], dim)  # x[i+1], edge replicated
    x3 = 0.75 * x
    even = x3 + 0.25 * prev
    odd = x3 + 0.25 * nxt
    return torch.stack([even, odd], dim + 1).flatten(dim, dim + 1)


def upsample2x_bilinear(x: torch.Tensor) -> torch.Tensor:
    """`F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)` on NCHW, as a few
    elementwise ops: output 2i is 3/4*x[i] + 1/4*x[i-1], output 2i+1 is 3/4*x[i] + 1/4*x[i+1], edges
    replicated -- exactly bilinear interpolation at scale 2, separably per axis (equal to within float
    rounding). PyTorch's CUDA bilinear kernel takes about 16 ms per call on an EfficientFormerV2
    stride-attention output at batch 64 in bf16 (half of a whole S0 training step, H200); these ops
    take microseconds, forward and backward."""
    return _up2_axis(_up2_axis(x, 2), 3)


class Upsample2xBilinear(nn.Module):
    """`nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)` as `upsample2x_bilinear`,
    always (also when traced or exported): the `torch_cuda` deploy form puts it in every x2 upsample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample2x_bilinear(x)


def exporting() -> bool:
    """Whether the model is being traced or exported (ONNX, TorchScript, torch.export), where a
    graph should keep PyTorch's own ops (one `Resize` node rather than a dozen elementwise ones)."""
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


class Upsample2x(nn.Upsample):
    """EfficientFormerV2's x2 bilinear upsample (align_corners=False), the same on every device.

    Eager (training, search, any device): `upsample2x_bilinear`, a few elementwise ops -- PyTorch's
    CUDA bilinear kernel is pathologically slow, and one formulation everywhere means a block
    computes the same wherever it runs. Traced or exported: PyTorch's own op (one `Resize` node),
    the same function. Each target's deploy form replaces it by the one it runs
    (`hwnas.latency.deploy`): `nn.Upsample` for the exported graphs, `Upsample2xBilinear` on GPUs.
    """

    def __init__(self):
        super().__init__(scale_factor=2.0, mode="bilinear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) if exporting() else upsample2x_bilinear(x)


def _bn_affine(bn) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with bn(x) = scale * x + shift in eval mode."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    return scale, bn.bias - bn.running_mean * scale


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A conv (with bias) computing bn(conv(x)) in eval mode."""
    scale, shift = _bn_affine(bn)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(bias * scale + shift)
    return fused


@torch.no_grad()
def fold_pre_bn(module: nn.Module, bn1, bn2=None) -> None:
    """Fold BN(s) that *precede* a linear map (nn.Linear or 1x1 nn.Conv2d) into it, in place.

    bn2, when given, is applied after bn1 (possibly with a linear op such as average pooling in
    between, which commutes with a per-channel affine map).
    """
    scale, shift = _bn_affine(bn1)
    if bn2 is not None:
        s2, t2 = _bn_affine(bn2)
        scale, shift = scale * s2, shift * s2 + t2
    w = module.weight
    w2d = w.reshape(w.shape[0], w.shape[1])
    extra_bias = w2d @ shift
    w2d = w2d * scale.reshape(1, -1)
    module.weight.copy_(w2d.reshape(w.shape))
    if module.bias is None:
        module.bias = nn.Parameter(extra_bias.clone())
    else:
        module.bias.add_(extra_bias)


@torch.no_grad()
def scale_output(module: nn.Module, gamma: torch.Tensor) -> None:
    """Multiply a conv's output channels by gamma (folds a LayerScale into the conv before it)."""
    module.weight.mul_(gamma.reshape(-1, *([1] * (module.weight.ndim - 1))))
    if module.bias is not None:
        module.bias.mul_(gamma)


def new_linear(in_features: int, out_features: int, like: torch.Tensor | None = None) -> nn.Module:
    """A fresh classifier layer (trunc-normal std .02, zero bias, as the papers and timm initialise
    it) on the device and dtype of `like`; `out_features` 0 gives `nn.Identity` (timm's headless model)."""
    if out_features <= 0:
        return nn.Identity()
    kw = {} if like is None else {"device": like.device, "dtype": like.dtype}
    fc = nn.Linear(in_features, out_features, **kw)
    nn.init.trunc_normal_(fc.weight, std=0.02)
    nn.init.zeros_(fc.bias)
    return fc


def trunc_normal_init(module: nn.Module, std: float = 0.02) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
