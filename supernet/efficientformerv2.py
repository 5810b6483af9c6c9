"""EfficientFormerV2's deployable blocks, built from a `BlockSpec`.

Structure and names follow timm (`timm/models/efficientformer_v2.py`), which matches the official
code tensor for tensor: the unified FFN (1x1 -> depthwise 3x3 -> 1x1, each with BN, GELU), MHSA
with local V and talking heads, stride attention (depthwise stride-2 conv before, bilinear x2
upsample after), the dual-path attention downsampling into the last stage, and LayerScale.

Attention biases are tables over |dy|, |dx| offsets at the block's build size, shape
(heads, H*W), indexed `|dy|*W + |dx|` -- the official and timm order both (timm's for H != W).
`reparameterize()` folds every conv -> BN pair, LayerScale into the conv before it and the
biases into one (heads, Nq, Nk) table.

Any input size (sides multiples of 32): a block run on a feature map of another size than it was
built for resamples its attention bias as the official detection and segmentation backbones do
(`detection/backbonev2.py`: the (heads, Nq, Nk) bias of the build size, bicubic-interpolated as an
image to the (Nq', Nk') of the feature map, `align_corners=False`), and takes its token counts and
output size from the input. At the build size nothing of this runs: the same ops as before, so
outputs there are bit-identical and the latency rows' fingerprints unchanged. (A model *built* at
another size -- `arch.resolution` -- has bias tables of that size; a checkpoint of another size is
resampled over the offset grid when it is imported, `resize_attention_biases`.)
"""
from __future__ import annotations

import functools
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces import BlockSpec
from search_spaces.core import hw_pair
from search_spaces.efficientformerv2 import (ATTN_RATIO, DS_KEY_DIM, KEY_DIM, NUM_HEADS)

from .family import CheckpointLayout, Family, KeyPair, register_family
from .layers import DropPath, Upsample2x, fold_conv_bn, fold_pre_bn, new_linear, scale_output

LAYER_SCALE_INIT = 1e-5


def _pair(size) -> tuple[int, int]:
    return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))


@functools.lru_cache(maxsize=None)
def _rel_pos_index(q_hw: tuple, k_hw: tuple, q_stride: int, device: torch.device | None = None) -> torch.Tensor:
    """(Nq, Nk) indices into a (heads, Hk*Wk) table: |dy|*Wk + |dx| between query and key cells.

    Kept per device: a copy from the host in every forward would make the host wait for the GPU at
    each attention block, and cannot be captured in a CUDA graph."""
    if device is not None and torch.device(device) != torch.device("cpu"):
        return _rel_pos_index(q_hw, k_hw, q_stride).to(device)
    k_pos = torch.stack(torch.meshgrid(torch.arange(k_hw[0]), torch.arange(k_hw[1]), indexing="ij")).flatten(1)
    q_pos = torch.stack(torch.meshgrid(torch.arange(q_hw[0]) * q_stride, torch.arange(q_hw[1]) * q_stride,
                                       indexing="ij")).flatten(1)
    rel = (q_pos[..., :, None] - k_pos[..., None, :]).abs()
    return rel[0] * k_hw[1] + rel[1]


def resize_attention_biases(table: torch.Tensor, size, src=None) -> torch.Tensor:
    """Resample a (heads, Hs*Ws) offset table to the (|dy|, |dx|) grid `size` (an int, or (H, W)),
    bicubic over the grid; `src` is the table's grid (default: square). What a checkpoint of
    another resolution, or the supernet's table for a subnet at another input size, goes through."""
    heads, n = table.shape
    sh, sw = _pair(src) if src is not None else (math.isqrt(n), math.isqrt(n))
    h, w = _pair(size)
    if (sh, sw) == (h, w):
        return table
    grid = table.reshape(1, heads, sh, sw)
    return F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False).reshape(heads, h * w)


def resample_bias(bias: torch.Tensor, nq: int, nk: int) -> torch.Tensor:
    """The official detection backbone's run-time resampling: a (heads, Nq, Nk) attention bias
    bicubic-interpolated as an image to (heads, nq, nk) (`align_corners=False`)."""
    return F.interpolate(bias.unsqueeze(0), size=(nq, nk), mode="bicubic", align_corners=False).squeeze(0)


class ConvNorm(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=True)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x):
        return self.bn(self.conv(x))

    @torch.no_grad()
    def reparameterize(self):
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = fold_conv_bn(self.conv, self.bn)
            self.bn = nn.Identity()


class ConvNormAct(ConvNorm):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1, groups: int = 1):
        super().__init__(in_chs, out_chs, kernel_size, stride, groups)
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Stem4(nn.Sequential):
    def __init__(self, out_chs: int):
        super().__init__()
        self.conv1 = ConvNormAct(3, out_chs // 2, 3, stride=2)
        self.conv2 = ConvNormAct(out_chs // 2, out_chs, 3, stride=2)

    def set_drop_path(self, rate: float):
        pass

    def reparameterize(self):
        self.conv1.reparameterize()
        self.conv2.reparameterize()


class LayerScale2d(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(LAYER_SCALE_INIT * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma.view(1, -1, 1, 1)


class ConvMlpWithNorm(nn.Module):
    """The unified FFN: 1x1 conv+BN+GELU, depthwise 3x3 conv+BN+GELU, 1x1 conv+BN."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = ConvNormAct(dim, hidden, 1)
        self.mid = ConvNormAct(hidden, hidden, 3, groups=hidden)
        self.fc2 = ConvNorm(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.mid(self.fc1(x)))

    def reparameterize(self):
        self.fc1.reparameterize()
        self.mid.reparameterize()
        self.fc2.reparameterize()


class _RelPosBiasAttention(nn.Module):
    """Shared by both attention kinds: the learned (heads, Hk*Wk) offset table looked up for every
    query/key pair, or -- after `reparameterize()` -- one precomputed (heads, Nq, Nk) table."""

    q_hw: tuple
    k_hw: tuple
    q_stride: int

    def attention_bias(self) -> torch.Tensor:
        if self.fused_bias is not None:
            return self.fused_bias
        idx = _rel_pos_index(self.q_hw, self.k_hw, self.q_stride, self.attention_biases.device)
        return self.attention_biases[:, idx]

    @torch.no_grad()
    def _fuse_bias(self) -> None:
        if self.fused_bias is None:
            self.fused_bias = nn.Parameter(self.attention_bias().clone(), requires_grad=False)
            del self.attention_biases
            self.register_parameter("attention_biases", None)


class Attention2d(_RelPosBiasAttention):
    """MHSA with local V (depthwise 3x3 on V) and talking heads; stride 2 runs it at half resolution.

    `resolution` is the build size of its input (an int, or (H, W)); another input size resamples
    the bias (see the module docstring)."""

    def __init__(self, dim: int, resolution, stride: int = 1):
        super().__init__()
        self.num_heads = NUM_HEADS
        self.scale = KEY_DIM ** -0.5
        self.dh = KEY_DIM * ATTN_RATIO * NUM_HEADS
        self.in_hw = _pair(resolution)
        if stride not in (1, 2):
            raise ValueError(f"EfficientFormerV2 attention stride must be 1 or 2, got {stride}")
        if stride > 1:
            self.stride_conv = ConvNorm(dim, dim, 3, stride=stride, groups=dim)
            self.upsample = Upsample2x()
        else:
            self.stride_conv = None
            self.upsample = None
        self.hw = tuple(-(-side // stride) for side in self.in_hw)  # where the attention runs
        self.N = self.hw[0] * self.hw[1]
        self.q_hw = self.k_hw = self.hw
        self.q_stride = 1
        kh = KEY_DIM * NUM_HEADS
        self.q = ConvNorm(dim, kh)
        self.k = ConvNorm(dim, kh)
        self.v = ConvNorm(dim, self.dh)
        self.v_local = ConvNorm(self.dh, self.dh, 3, groups=self.dh)
        self.talking_head1 = nn.Conv2d(NUM_HEADS, NUM_HEADS, 1)
        self.talking_head2 = nn.Conv2d(NUM_HEADS, NUM_HEADS, 1)
        self.act = nn.GELU()
        self.proj = ConvNorm(self.dh, dim, 1)
        self.attention_biases = nn.Parameter(torch.zeros(NUM_HEADS, self.N))
        self.fused_bias = None  # (heads, N, N) after reparameterize()

    def forward(self, x):
        B, C, H, W = x.shape
        built = (H, W) == self.in_hw
        if self.stride_conv is not None:
            x = self.stride_conv(x)
        rh, rw = self.hw if built else x.shape[-2:]
        h, n = self.num_heads, rh * rw
        q = self.q(x).reshape(B, h, -1, n).transpose(-1, -2)
        k = self.k(x).reshape(B, h, -1, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(B, h, -1, n).transpose(-1, -2)
        attn = (q @ k) * self.scale + (self.attention_bias() if built else resample_bias(self.attention_bias(), n, n))
        attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
        x = (attn @ v).transpose(-1, -2).reshape(B, self.dh, rh, rw) + v_local
        if self.upsample is not None:
            x = self.upsample(x)
        return self.proj(self.act(x))

    @torch.no_grad()
    def reparameterize(self):
        for m in (self.stride_conv, self.q, self.k, self.v, self.v_local, self.proj):
            if m is not None:
                m.reparameterize()
        self._fuse_bias()


class LocalGlobalQuery(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.pool = nn.AvgPool2d(1, 2, 0)
        self.local = nn.Conv2d(in_dim, in_dim, 3, stride=2, padding=1, groups=in_dim)
        self.proj = ConvNorm(in_dim, out_dim, 1)

    def forward(self, x):
        return self.proj(self.local(x) + self.pool(x))


class Attention2dDownsample(_RelPosBiasAttention):
    """The attention path of the dual-path downsampling: local-global query at half resolution.
    `resolution` is the build size of its input (an int, or (H, W)).

    `sdpa` (False; a deploy rewrite sets it: `hwnas.convert.optimize.use_sdpa`): the attention as one
    `F.scaled_dot_product_attention` call with the bias as its additive mask. (`Attention2d` has none:
    its talking heads mix the heads' logits before and after the softmax, which no fused kernel does.)"""

    sdpa = False

    def __init__(self, dim: int, out_dim: int, resolution):
        super().__init__()
        self.num_heads = NUM_HEADS
        self.scale = DS_KEY_DIM ** -0.5
        self.dh = DS_KEY_DIM * ATTN_RATIO * NUM_HEADS
        self.hw = _pair(resolution)
        self.hw2 = tuple(-(-side // 2) for side in self.hw)
        self.N = self.hw[0] * self.hw[1]
        self.N2 = self.hw2[0] * self.hw2[1]
        self.q_hw, self.k_hw, self.q_stride = self.hw2, self.hw, 2
        kh = DS_KEY_DIM * NUM_HEADS
        self.q = LocalGlobalQuery(dim, kh)
        self.k = ConvNorm(dim, kh, 1)
        self.v = ConvNorm(dim, self.dh, 1)
        self.v_local = ConvNorm(self.dh, self.dh, 3, stride=2, groups=self.dh)
        self.act = nn.GELU()
        self.proj = ConvNorm(self.dh, out_dim, 1)
        self.attention_biases = nn.Parameter(torch.zeros(NUM_HEADS, self.N))
        self.fused_bias = None

    def forward(self, x):
        B, C, H, W = x.shape
        built = (H, W) == self.hw
        (r2h, r2w), n = (self.hw2, self.N) if built else ((-(-H // 2), -(-W // 2)), H * W)
        n2 = r2h * r2w
        h = self.num_heads
        q = self.q(x).reshape(B, h, -1, n2).transpose(-1, -2)
        k = self.k(x).reshape(B, h, -1, n)
        v = self.v(x)
        v_local = self.v_local(v)
        v = v.reshape(B, h, -1, n).transpose(-1, -2)
        bias = self.attention_bias() if built else resample_bias(self.attention_bias(), n2, n)
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k.transpose(-1, -2), v, attn_mask=bias.to(q.dtype), scale=self.scale)
        else:
            x = ((q @ k) * self.scale + bias).softmax(dim=-1) @ v
        x = x.transpose(-1, -2).reshape(B, self.dh, r2h, r2w) + v_local
        return self.proj(self.act(x))

    @torch.no_grad()
    def reparameterize(self):
        for m in (self.q.proj, self.k, self.v, self.v_local, self.proj):
            m.reparameterize()
        self._fuse_bias()


class Downsample(nn.Module):
    """Conv 3x3 s2 + BN; into the last stage also the attention path, the two summed (dual path)."""

    def __init__(self, in_chs: int, out_chs: int, resolution: int, use_attn: bool):
        super().__init__()
        self.conv = ConvNorm(in_chs, out_chs, 3, stride=2)
        self.attn = Attention2dDownsample(in_chs, out_chs, resolution) if use_attn else None

    @classmethod
    def from_spec(cls, spec: BlockSpec) -> "Downsample":
        return cls(spec["in"], spec["out"], hw_pair(spec["hw"]), spec["attn"])

    def set_drop_path(self, rate: float):
        pass

    def forward(self, x):
        out = self.conv(x)
        return out + self.attn(x) if self.attn is not None else out

    def reparameterize(self):
        self.conv.reparameterize()
        if self.attn is not None:
            self.attn.reparameterize()


class EfficientFormerV2Block(nn.Module):
    """FFN-only block, or attention + FFN block; each residual branch scaled by LayerScale."""

    def __init__(self, dim: int, hidden: int, resolution: int, use_attn: bool, stride: int = 1):
        super().__init__()
        if use_attn:
            self.token_mixer = Attention2d(dim, resolution, stride)
            self.ls1 = LayerScale2d(dim)
            self.drop_path1 = DropPath()
        else:
            self.token_mixer = self.ls1 = self.drop_path1 = None
        self.mlp = ConvMlpWithNorm(dim, hidden)
        self.ls2 = LayerScale2d(dim)
        self.drop_path2 = DropPath()

    @classmethod
    def from_spec(cls, spec: BlockSpec) -> "EfficientFormerV2Block":
        use_attn = spec.kind == "efficientformerv2.attn"
        return cls(spec["dim"], spec["hidden"], hw_pair(spec["hw"]), use_attn, spec.get("stride", 1))

    def set_drop_path(self, rate: float):
        self.drop_path2.drop_prob = rate
        if self.drop_path1 is not None:
            self.drop_path1.drop_prob = rate

    def forward(self, x):
        if self.token_mixer is not None:
            x = x + self.drop_path1(self.ls1(self.token_mixer(x)))
        return x + self.drop_path2(self.ls2(self.mlp(x)))

    @torch.no_grad()
    def reparameterize(self):
        self.mlp.reparameterize()
        if isinstance(self.ls2, LayerScale2d):
            scale_output(self.mlp.fc2.conv, self.ls2.gamma)
            self.ls2 = nn.Identity()
        if self.token_mixer is not None:
            self.token_mixer.reparameterize()
            if isinstance(self.ls1, LayerScale2d):
                scale_output(self.token_mixer.proj.conv, self.ls1.gamma)
                self.ls1 = nn.Identity()


class DistilledHead(nn.Module):
    """BN, global average pool, then the class head and the distillation head, averaged. timm
    splits it the same way: `norm` ends its `forward_features`, `forward_head` is the rest."""

    def __init__(self, in_chs: int, num_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(in_chs)
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()
        self.fc_dist = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x):
        x = self.norm(x).mean((2, 3))
        return (self.fc(x) + self.fc_dist(x)) / 2

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else (self.fc(x) + self.fc_dist(x)) / 2

    def get_classifier(self) -> tuple[nn.Module, nn.Module]:
        return self.fc, self.fc_dist  # timm: (head, head_dist)

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = new_linear(self.norm.num_features, num_classes, self.norm.weight)
        self.fc_dist = new_linear(self.norm.num_features, num_classes, self.norm.weight)

    def set_drop_path(self, rate: float):
        pass

    @torch.no_grad()
    def reparameterize(self):
        if isinstance(self.norm, nn.BatchNorm2d) and isinstance(self.fc, nn.Linear):  # (headless: keep the BN)
            fold_pre_bn(self.fc, self.norm)
            fold_pre_bn(self.fc_dist, self.norm)
            self.norm = nn.Identity()


BUILDERS = {
    "efficientformerv2.stem": lambda spec: Stem4(spec["out"]),
    "efficientformerv2.ffn": EfficientFormerV2Block.from_spec,
    "efficientformerv2.attn": EfficientFormerV2Block.from_spec,
    "efficientformerv2.downsample": Downsample.from_spec,
    "efficientformerv2.head": lambda spec: DistilledHead(spec["in"], spec["classes"]),
}


def input_shape(spec: BlockSpec, batch: int = 1) -> tuple[int, ...]:
    if spec.kind == "efficientformerv2.stem":
        chs = 3
    elif spec.kind in ("efficientformerv2.ffn", "efficientformerv2.attn"):
        chs = spec["dim"]
    else:  # downsample, head
        chs = spec["in"]
    return (batch, chs, *hw_pair(spec["hw"]))


# ---- registration: the torch side of the `efficientformerv2` space ----------------------------------
_CONV_BN = ("q", "k", "v", "v_local", "stride_conv")
# Inside a block (official: `network.{2s}.{j}.`): `nn.Sequential` conv/BN pairs, the FFN's
# fc1/norm1/mid/mid_norm/fc2/norm2, LayerScales of shape (C, 1, 1).
_BLOCK_PAIRS = (
    *(KeyPair(f"token_mixer.{m}.conv.", f"token_mixer.{m}.0.") for m in _CONV_BN),
    *(KeyPair(f"token_mixer.{m}.bn.", f"token_mixer.{m}.1.") for m in _CONV_BN),
    KeyPair("token_mixer.proj.conv.", "token_mixer.proj.1."), KeyPair("token_mixer.proj.bn.", "token_mixer.proj.2."),
    KeyPair("mlp.fc1.conv.", "mlp.fc1."), KeyPair("mlp.fc1.bn.", "mlp.norm1."),
    KeyPair("mlp.mid.conv.", "mlp.mid."), KeyPair("mlp.mid.bn.", "mlp.mid_norm."),
    KeyPair("mlp.fc2.conv.", "mlp.fc2."), KeyPair("mlp.fc2.bn.", "mlp.norm2."),
    KeyPair("ls1.gamma", "layer_scale_1", (-1, 1, 1)), KeyPair("ls2.gamma", "layer_scale_2", (-1, 1, 1)),
)
# The downsampling embeddings (official: `network.{2s-1}.`): plain ones name their conv/BN proj/norm,
# the dual-path one into the last stage conv/bn, beside its attention path.
_DOWN_PAIRS = (KeyPair("conv.conv.", "proj."), KeyPair("conv.bn.", "norm."))
_ATTN_DOWN_PAIRS = (
    KeyPair("conv.conv.", "conv."), KeyPair("conv.bn.", "bn."),
    KeyPair("attn.q.local.", "attn.q.local.0."), KeyPair("attn.q.proj.conv.", "attn.q.proj.0."),
    KeyPair("attn.q.proj.bn.", "attn.q.proj.1."),
    *(KeyPair(f"attn.{m}.conv.", f"attn.{m}.0.") for m in ("k", "v", "v_local")),
    *(KeyPair(f"attn.{m}.bn.", f"attn.{m}.1.") for m in ("k", "v", "v_local")),
    KeyPair("attn.proj.conv.", "attn.proj.1."), KeyPair("attn.proj.bn.", "attn.proj.2."),
)
_ATTN_DOWN_STAGE = 3  # the stage whose downsampling has the attention path (search_spaces: attn=s == 3)


def _official_depths(keys) -> tuple[int, ...]:
    """Blocks per stage of an official checkpoint: `network.{2s}.{j}.`."""
    depths: dict[int, int] = {}
    for k in keys:
        m = re.match(r"network\.(\d+)\.(\d+)\.", k)
        if m and int(m.group(1)) % 2 == 0:
            s = int(m.group(1)) // 2
            depths[s] = max(depths.get(s, 0), int(m.group(2)) + 1)
    return tuple(depths.get(s, 0) for s in range(max(depths) + 1)) if depths else ()


def _official_pairs(depths: tuple[int, ...]):
    """The official code (`models/efficientformer_v2.py`): `patch_embed.N`, `network.N` with the
    downsampling embeddings between the stages, `dist_head`."""
    for ours, theirs in (("conv1.conv", 0), ("conv1.bn", 1), ("conv2.conv", 3), ("conv2.bn", 4)):
        yield KeyPair(f"stem.{ours}.", f"patch_embed.{theirs}.")
    for s, d in enumerate(depths):
        if s > 0:
            ours, theirs = f"stages.{s}.downsample.", f"network.{2 * s - 1}."
            yield KeyPair(ours, theirs)
            for p in (_ATTN_DOWN_PAIRS if s == _ATTN_DOWN_STAGE else _DOWN_PAIRS):
                yield KeyPair(ours + p.ours, theirs + p.theirs, p.theirs_shape)
        for j in range(d):
            ours, theirs = f"stages.{s}.blocks.{j}.", f"network.{2 * s}.{j}."
            yield KeyPair(ours, theirs)
            for p in _BLOCK_PAIRS:
                yield KeyPair(ours + p.ours, theirs + p.theirs, p.theirs_shape)
    yield from (KeyPair("head.norm.", "norm."), KeyPair("head.fc.", "head."), KeyPair("head.fc_dist.", "dist_head."))


def _timm_pairs(depths: tuple[int, ...]):
    """timm (`timm/models/efficientformer_v2.py`): our names, but the head is `norm`, `head`, `head_dist`."""
    yield from (KeyPair("head.norm.", "norm."), KeyPair("head.fc.", "head."), KeyPair("head.fc_dist.", "head_dist."))


def _resample_biases(table: torch.Tensor, shape: tuple, module: nn.Module | None = None) -> torch.Tensor:
    # the module that will hold the table knows its key grid (a non-square one is not the square root)
    grid = module.k_hw if module is not None and hasattr(module, "k_hw") else math.isqrt(shape[1])
    return resize_attention_biases(table, grid)


class EfficientFormerV2Family(Family):
    space = "efficientformerv2"
    builders = BUILDERS
    checkpoint_layouts = (
        CheckpointLayout("official", lambda keys: any(k.startswith("network.") for k in keys), _official_pairs,
                         depths=_official_depths, skip=("attention_bias_idxs",)),
        CheckpointLayout("timm", lambda keys: "head.weight" in keys and any(k.startswith("stages.") for k in keys),
                         _timm_pairs, skip=("attention_bias_idxs",)),
    )
    # attention-bias tables are per offset at the block's resolution: another resolution resamples them
    resample = {"attention_biases": _resample_biases}
    coreml_ops = frozenset({"conv", "gelu", "linear"})
    coreml_backbone_ops = frozenset({"conv", "gelu", "matmul", "softmax"})  # (the head holds the only linear layers)
    # the attention bias is resampled per feature-map size, and a traced graph fixes that size
    onnx_dynamic_hw = False
    stage_reductions = (4, 8, 16, 32)
    attention_key_stride = 32  # stage 4's attention, and stage 3's stride-2 attention, run at 1/32 of the input
    no_weight_decay = ("attention_biases",)  # as timm's EfficientFormerV2.no_weight_decay()
    timm_models = {n: n for n in ("efficientformerv2_s0", "efficientformerv2_s1", "efficientformerv2_s2",
                                  "efficientformerv2_l")}

    def input_shape(self, spec: BlockSpec, batch: int = 1) -> tuple[int, ...]:
        return input_shape(spec, batch)


register_family(EfficientFormerV2Family())
