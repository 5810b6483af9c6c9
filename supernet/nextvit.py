"""Next-ViT's deployable blocks (NCB, NTB with E-MHSA and MHCA), built from a `BlockSpec`.

Structure and names follow the official code and timm (`timm/models/nextvit.py`): BatchNorm + ReLU
everywhere, E-MHSA reduces K/V with a 1-D average pool over raster-ordered tokens (not a 2-D pool),
an NCB after an NTB projects with a 1x1 conv + BN. `reparameterize()` folds BatchNorms the way the
official deployment does (pre-BN into the following 1x1 conv / linear) and, beyond it, every
conv -> BN pair, so an exported block runs no BatchNorm at all.
"""
from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

from search_spaces import BlockSpec
from search_spaces.core import hw_pair
from search_spaces.nextvit import HEAD_DIM, STEM_CHS

from .family import CheckpointLayout, Family, KeyPair, PretrainedError, register_family
from .layers import DropPath, fold_conv_bn, fold_pre_bn, new_linear

NORM_EPS = 1e-5


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=NORM_EPS)


class ConvNormAct(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.norm = _bn(out_chs)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))

    @torch.no_grad()
    def reparameterize(self):
        if isinstance(self.norm, nn.BatchNorm2d):
            self.conv = fold_conv_bn(self.conv, self.norm)
            self.norm = nn.Identity()


class Stem(nn.Sequential):
    """Four 3x3 ConvBNReLU layers, output stride 4."""

    def __init__(self):
        a, b, c = STEM_CHS
        super().__init__(ConvNormAct(3, a, stride=2), ConvNormAct(a, b), ConvNormAct(b, c),
                         ConvNormAct(c, c, stride=2))

    def reparameterize(self):
        for m in self:
            m.reparameterize()

    def set_drop_path(self, rate: float):
        pass


def _zero(*layers: nn.Module) -> None:
    for layer in layers:
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)


class PatchEmbed(nn.Module):
    """Stride 2: avg-pool 2x2 + 1x1 conv + BN; stride 1 and a width change (or `force`): 1x1 conv + BN;
    otherwise identity."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, force: bool = False):
        super().__init__()
        if stride == 2:
            self.pool = nn.AvgPool2d(2, stride=2, ceil_mode=True, count_include_pad=False)
        else:
            self.pool = nn.Identity()
        if stride == 2 or in_chs != out_chs or force:
            self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
            self.norm = _bn(out_chs)
        else:
            self.conv = nn.Identity()
            self.norm = nn.Identity()

    def forward(self, x):
        return self.norm(self.conv(self.pool(x)))

    @torch.no_grad()
    def reparameterize(self):
        if isinstance(self.norm, nn.BatchNorm2d):
            self.conv = fold_conv_bn(self.conv, self.norm)
            self.norm = nn.Identity()


class ConvAttention(nn.Module):
    """MHCA: grouped 3x3 conv (one group per 32-channel head) + BN + ReLU + 1x1 projection."""

    def __init__(self, chs: int):
        super().__init__()
        self.group_conv3x3 = nn.Conv2d(chs, chs, 3, padding=1, groups=chs // HEAD_DIM, bias=False)
        self.norm = _bn(chs)
        self.act = nn.ReLU(inplace=True)
        self.projection = nn.Conv2d(chs, chs, 1, bias=False)

    def forward(self, x):
        return self.projection(self.act(self.norm(self.group_conv3x3(x))))

    @torch.no_grad()
    def reparameterize(self):
        if isinstance(self.norm, nn.BatchNorm2d):
            self.group_conv3x3 = fold_conv_bn(self.group_conv3x3, self.norm)
            self.norm = nn.Identity()


class ConvMlp(nn.Module):
    def __init__(self, chs: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(chs, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, chs, 1, bias=True)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class NextConvBlock(nn.Module):
    """NCB: PatchEmbed, then x + MHCA(x), then x + MLP(BN(x))."""

    # The dimension of each tensor that indexes the block's input channels (`supernet.sharing`).
    channel_dims = {"in": {"patch_embed.conv.weight": 1}}

    def __init__(self, in_chs: int, out_chs: int, stride: int, hidden: int):
        super().__init__()
        assert out_chs % HEAD_DIM == 0, out_chs
        self.patch_embed = PatchEmbed(in_chs, out_chs, stride)
        self.mhca = ConvAttention(out_chs)
        self.attn_drop_path = DropPath()
        self.norm = _bn(out_chs)
        self.mlp = ConvMlp(out_chs, hidden)
        self.mlp_drop_path = DropPath()

    @classmethod
    def from_spec(cls, spec: BlockSpec) -> "NextConvBlock":
        return cls(spec["in"], spec["out"], spec["stride"], spec["hidden"])

    def set_drop_path(self, rate: float):
        self.attn_drop_path.drop_prob = self.mlp_drop_path.drop_prob = rate

    def forward(self, x):
        x = self.patch_embed(x)
        x = x + self.attn_drop_path(self.mhca(x))
        x = x + self.mlp_drop_path(self.mlp(self.norm(x)))
        return x

    @torch.no_grad()
    def zero_init_residual(self):
        """Start as the identity after the patch embedding: zero the last layer of each residual branch."""
        _zero(self.mhca.projection, self.mlp.fc2)

    @torch.no_grad()
    def reparameterize(self):
        self.patch_embed.reparameterize()
        self.mhca.reparameterize()
        if isinstance(self.norm, nn.BatchNorm2d):
            fold_pre_bn(self.mlp.fc1, self.norm)
            self.norm = nn.Identity()


class EfficientAttention(nn.Module):
    """E-MHSA: q from every token; k, v from tokens average-pooled sr² at a time (1-D, raster order) + BN1d.

    `sdpa` (False; a deploy rewrite sets it: `hwnas.convert.optimize.use_sdpa`): the attention as one
    `F.scaled_dot_product_attention` call (a fused flash/cuDNN kernel on a GPU) instead of matmul,
    softmax, matmul. Same arithmetic, to float rounding."""

    sdpa = False

    def __init__(self, dim: int, sr_ratio: int):
        super().__init__()
        self.num_heads = dim // HEAD_DIM
        self.scale = HEAD_DIM ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.AvgPool1d(sr_ratio ** 2, stride=sr_ratio ** 2)
            self.norm = nn.BatchNorm1d(dim, eps=NORM_EPS)
        else:
            self.sr = None
            self.norm = None

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x).reshape(B, N, h, C // h).transpose(1, 2)
        if self.sr is not None:
            x = self.sr(x.transpose(1, 2))
            x = self.norm(x).transpose(1, 2)
        k = self.k(x).reshape(B, -1, h, C // h).transpose(1, 2)
        v = self.v(x).reshape(B, -1, h, C // h).transpose(1, 2)
        if self.sdpa:
            x = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-1, -2)
            x = attn.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class NextTransformerBlock(nn.Module):
    """NTB: E-MHSA on `mhsa` channels, MHCA on the rest (none when r = 1), concat, then x + MLP(BN(x)).

    Its output channels are the concatenation [E-MHSA, MHCA] (`out_branches`); `channel_dims` names
    the dimension of each tensor that indexes them (or the input channels), which the supernet holds
    as one range per branch (`supernet.sharing`).
    """

    channel_dims = {
        "in": {"patch_embed.conv.weight": 1},
        "out": {"norm2.weight": 0, "norm2.bias": 0, "norm2.running_mean": 0, "norm2.running_var": 0,
                "mlp.fc1.weight": 1, "mlp.fc2.weight": 0, "mlp.fc2.bias": 0},
    }

    def __init__(self, in_chs: int, out_chs: int, mhsa_chs: int, stride: int, sr_ratio: int,
                 hidden: int, proj: bool = False):
        super().__init__()
        self.mhsa_chs = mhsa_chs
        self.mhca_chs = out_chs - mhsa_chs
        self.r = mhsa_chs / out_chs
        self.patch_embed = PatchEmbed(in_chs, mhsa_chs, stride, force=proj)
        self.norm1 = _bn(mhsa_chs)
        self.e_mhsa = EfficientAttention(mhsa_chs, sr_ratio)
        self.mhsa_drop_path = DropPath()
        if self.mhca_chs:
            self.projection = PatchEmbed(mhsa_chs, self.mhca_chs, 1)
            self.mhca = ConvAttention(self.mhca_chs)
            self.mhca_drop_path = DropPath()
        else:
            self.projection = self.mhca = self.mhca_drop_path = None
        self.norm2 = _bn(out_chs)
        self.mlp = ConvMlp(out_chs, hidden)
        self.mlp_drop_path = DropPath()

    @property
    def out_branches(self) -> tuple[int, int]:
        """The widths of the branches whose concatenation this block outputs: (E-MHSA, MHCA)."""
        return self.mhsa_chs, self.mhca_chs

    @classmethod
    def from_spec(cls, spec: BlockSpec) -> "NextTransformerBlock":
        return cls(spec["in"], spec["out"], spec["mhsa"], spec["stride"], spec["sr"], spec["hidden"],
                   spec["proj"])

    def set_drop_path(self, rate: float):
        # As the official code: the E-MHSA branch drops at rate·r, MHCA at rate·(1 - r).
        self.mhsa_drop_path.drop_prob = rate * self.r
        if self.mhca_drop_path is not None:
            self.mhca_drop_path.drop_prob = rate * (1 - self.r)
        self.mlp_drop_path.drop_prob = rate

    @torch.no_grad()
    def zero_init_residual(self):
        """Zero the last layer of each residual branch (E-MHSA, MHCA, MLP): the block then starts as the
        identity on the E-MHSA channels and the projection on the MHCA ones."""
        _zero(self.e_mhsa.proj, self.mlp.fc2, *([self.mhca.projection] if self.mhca is not None else []))

    def forward(self, x):
        x = self.patch_embed(x)
        B, C, H, W = x.shape
        out = self.norm1(x).reshape(B, C, H * W).transpose(1, 2)
        out = self.mhsa_drop_path(self.e_mhsa(out))
        x = x + out.transpose(1, 2).reshape(B, C, H, W)
        if self.mhca is not None:
            out = self.projection(x)
            out = out + self.mhca_drop_path(self.mhca(out))
            x = torch.cat([x, out], dim=1)
        x = x + self.mlp_drop_path(self.mlp(self.norm2(x)))
        return x

    @torch.no_grad()
    def reparameterize(self):
        self.patch_embed.reparameterize()
        if isinstance(self.norm1, nn.BatchNorm2d):
            a = self.e_mhsa
            fold_pre_bn(a.q, self.norm1)
            # Average pooling is linear and commutes with a per-channel affine map, so norm1 then
            # the E-MHSA BatchNorm1d fold into k and v too (as the official merge_bn does).
            fold_pre_bn(a.k, self.norm1, a.norm)
            fold_pre_bn(a.v, self.norm1, a.norm)
            a.norm = nn.Identity() if a.norm is not None else None
            self.norm1 = nn.Identity()
        if self.mhca is not None:
            self.projection.reparameterize()
            self.mhca.reparameterize()
        if isinstance(self.norm2, nn.BatchNorm2d):
            fold_pre_bn(self.mlp.fc1, self.norm2)
            self.norm2 = nn.Identity()


class ClassifierHead(nn.Module):
    """BN, global average pool, linear. timm splits it the same way: `norm` ends its
    `forward_features`, `forward_head` is the pool and the linear (`head.fc`)."""

    channel_dims = {"in": {"norm.weight": 0, "norm.bias": 0, "norm.running_mean": 0, "norm.running_var": 0,
                           "fc.weight": 1}}

    def __init__(self, in_chs: int, num_classes: int):
        super().__init__()
        self.norm = _bn(in_chs)
        self.fc = nn.Linear(in_chs, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x):
        return self.fc(self.norm(x).mean((2, 3)))

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        self.fc = new_linear(self.norm.num_features, num_classes, self.norm.weight)

    def set_drop_path(self, rate: float):
        pass

    @torch.no_grad()
    def reparameterize(self):
        # BN commutes with the average pool (a headless model, fc = Identity, keeps its BN)
        if isinstance(self.norm, nn.BatchNorm2d) and isinstance(self.fc, nn.Linear):
            fold_pre_bn(self.fc, self.norm)
            self.norm = nn.Identity()


BUILDERS = {
    "nextvit.stem": lambda spec: Stem(),
    "nextvit.ncb": NextConvBlock.from_spec,
    "nextvit.ntb": NextTransformerBlock.from_spec,
    "nextvit.head": lambda spec: ClassifierHead(spec["in"], spec["classes"]),
}


def input_shape(spec: BlockSpec, batch: int = 1) -> tuple[int, ...]:
    chs = 3 if spec.kind == "nextvit.stem" else spec["in"]
    return (batch, chs, *hw_pair(spec["hw"]))


# ---- registration: the torch side of the `nextvit` space ------------------------------------------
def _official_depths(keys) -> tuple[int, ...]:
    """Next-ViT's official checkpoints number their blocks flat (`features.N`): depths 3, 4, 5*L, 3."""
    idx = [int(m.group(1)) for k in keys if (m := re.match(r"features\.(\d+)\.", k))]
    n = 1 + max(idx) if idx else 0
    if n <= 10 or (n - 10) % 5:
        raise PretrainedError(f"an official Next-ViT checkpoint with {n} blocks: expected 10 + 5*L "
                              "(Next-ViT-S/B/L have 20/30/40)")
    return (3, 4, n - 10, 3)


def _official_pairs(depths: tuple[int, ...]):
    """The official code (`nextvit.py` of the Next-ViT repository): flat `features.N`, `mlp.conv1/2`,
    `proj_head.0`; the stem and everything inside a block are named as ours."""
    yield KeyPair("head.norm.", "norm.")
    yield KeyPair("head.fc.", "proj_head.0.")
    i = 0
    for s, d in enumerate(depths):
        for j in range(d):
            ours, theirs = f"stages.{s}.blocks.{j}.", f"features.{i}."
            yield KeyPair(ours, theirs)
            yield KeyPair(ours + "mlp.fc1.", theirs + "mlp.conv1.")
            yield KeyPair(ours + "mlp.fc2.", theirs + "mlp.conv2.")
            i += 1


def _timm_pairs(depths: tuple[int, ...]):
    """timm (`timm/models/nextvit.py`): our names, but the head's norm is `norm`."""
    yield KeyPair("head.norm.", "norm.")


class NextViTFamily(Family):
    space = "nextvit"
    builders = BUILDERS
    checkpoint_layouts = (
        CheckpointLayout("official", lambda keys: any(k.startswith("features.") for k in keys)
                         or "proj_head.0.weight" in keys, _official_pairs, depths=_official_depths),
        CheckpointLayout("timm", lambda keys: "head.fc.weight" in keys and any(k.startswith("stages.") for k in keys),
                         _timm_pairs),
    )
    coreml_ops = frozenset({"conv", "matmul", "softmax", "linear"})
    coreml_backbone_ops = coreml_ops  # (E-MHSA's q, k, v, proj are linear layers)
    onnx_dynamic_hw = True  # every reshape follows the input's shape
    stage_reductions = (4, 8, 16, 32)
    attention_key_stride = 32  # E-MHSA pools K/V by sr = 8/4/2/1 in stages 1-4: (input/32)^2 keys in every NTB
    timm_models = {"nextvit_s": "nextvit_small", "nextvit_b": "nextvit_base", "nextvit_l": "nextvit_large"}

    def input_shape(self, spec: BlockSpec, batch: int = 1) -> tuple[int, ...]:
        return input_shape(spec, batch)


register_family(NextViTFamily())
