"""The EfficientFormerV2 search space: elastic widths, depth, per-block FFN expansion, attention count.

Stage fields (0-based; `stages[2]` and `stages[3]` are the paper's stages 3 and 4):

- `width`: the stage's channels.
- `expansion`: one entry per *supernet block position* of the stage (EfficientFormerV2-L has
  5/5/15/10 blocks): the block's FFN expansion ratio, or 0 where the block is dropped. The
  stage's depth is the number of non-zero entries.
- `attn` (`stages[2]`, `stages[3]` only): how many of the stage's last kept blocks are attention
  blocks (Attention4D + FFN); the others are FFN-only blocks. Stage-3 attention runs at stride 2
  (stride attention); the downsampling into `stages[3]` is the dual-path attention downsampling.

Why positions, and the caps (the choice the issue leaves open, made so the references are exact
and the supernet trainable): the supernet *is* EfficientFormerV2-L, tensor for tensor, so
official L weights load one-to-one and the max arch is also the largest arch of the space. A block
at position p uses supernet block p's weights (first-k channels inside it), so its ratio is capped
by L's ratio at p, and it can be an attention block only where L has attention. Every reference
embeds this way -- S1's stage-3 FFN list ends in a ratio-4 block after six ratio-3 blocks, which
only fits at one of L's attention positions used as an FFN-only block. References are embedded by
one rule: FFN blocks at the earliest positions that fit, attention blocks at the latest.
"""
from __future__ import annotations

import random
from typing import Any, Iterator, Mapping

from .core import (Arch, ArchError, BlockSpec, Layout, Placed, SearchSpace, StageLayout,
                   check_choice, check_count, check_keys, hw_pair, hw_value, input_pair, iter_unique,
                   next_lower, register_space, with_change)

# Attention constants of the paper (fixed, independent of width).
NUM_HEADS = 8
KEY_DIM = 32
ATTN_RATIO = 4
KH = NUM_HEADS * KEY_DIM  # 256
DH = NUM_HEADS * KEY_DIM * ATTN_RATIO  # 1024
DS_KEY_DIM = 16
DS_KH = NUM_HEADS * DS_KEY_DIM  # 128
DS_DH = NUM_HEADS * DS_KEY_DIM * ATTN_RATIO  # 512

WIDTHS = (
    (32, 40),
    (48, 64, 80),
    (96, 120, 144, 168, 192),
    (176, 224, 288, 336, 384),
)
EXPANSIONS = (2, 3, 4)
STRIDE_ATTN = (None, None, 2, None)

# EfficientFormerV2 configurations (official `models/efficientformer_v2.py`).
OFFICIAL = {
    "efficientformerv2_s0": dict(widths=(32, 48, 96, 176), vit_num=2, ratios=(
        (4, 4), (4, 4), (4, 3, 3, 3, 4, 4), (4, 3, 3, 4))),
    "efficientformerv2_s1": dict(widths=(32, 48, 120, 224), vit_num=2, ratios=(
        (4, 4, 4), (4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4, 4), (4, 4, 3, 3, 4, 4))),
    "efficientformerv2_s2": dict(widths=(32, 64, 144, 288), vit_num=4, ratios=(
        (4, 4, 4, 4), (4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4), (4, 4, 3, 3, 3, 3, 4, 4))),
    "efficientformerv2_l": dict(widths=(40, 80, 192, 384), vit_num=6, ratios=(
        (4, 4, 4, 4, 4), (4, 4, 4, 4, 4), (4, 4, 4, 4, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4),
        (4, 4, 4, 3, 3, 3, 3, 4, 4, 4))),
}
_L = OFFICIAL["efficientformerv2_l"]
# Per stage: the ratio cap of each supernet position, and the positions that hold attention.
CAPS = tuple(tuple(r) for r in _L["ratios"])
ATTN_POSITIONS = tuple(
    tuple(range(len(r) - _L["vit_num"], len(r))) if s >= 2 else () for s, r in enumerate(CAPS))


# Per stage and position: the allowed entries of `expansion` (0 = dropped).
_ALLOWED_E = tuple(tuple((0,) + tuple(e for e in EXPANSIONS if e <= c) for c in caps) for caps in CAPS)


def _stage_res(input_size: tuple[int, int], s: int):
    """The spatial size of stage s (ceil(side / 2^(s+2)), as the official code) as a `BlockSpec` value."""
    return hw_value(*(-(-side // 2 ** (s + 2)) for side in input_size))


def embed_official(ratios: tuple, n_attn: int, stage: int) -> list[int]:
    """Place an official per-block ratio list on L's positions: FFN earliest, attention latest."""
    caps, attn_pos = CAPS[stage], ATTN_POSITIONS[stage]
    expansion = [0] * len(caps)
    ffn, attn = ratios[:len(ratios) - n_attn], ratios[len(ratios) - n_attn:]
    limit = len(caps)
    for e in reversed(attn):
        p = max(p for p in attn_pos if p < limit and caps[p] >= e)
        expansion[p] = e
        limit = p
    start = 0
    for e in ffn:
        p = min(p for p in range(start, limit) if caps[p] >= e)
        expansion[p] = e
        start = p + 1
    return expansion


class EfficientFormerV2Space(SearchSpace):
    name = "efficientformerv2"
    reference_names = tuple(OFFICIAL)
    widths = WIDTHS
    expansions = EXPANSIONS

    # ---- references ---------------------------------------------------------------------
    def _reference_stages(self, name: str) -> list[dict]:
        if name not in OFFICIAL:
            raise ArchError("arch", f"unknown reference {name!r}", list(self.reference_names))
        cfg = OFFICIAL[name]
        stages = []
        for s in range(4):
            n_attn = cfg["vit_num"] if s >= 2 else 0
            st = dict(width=cfg["widths"][s], expansion=embed_official(cfg["ratios"][s], n_attn, s))
            if s >= 2:
                st["attn"] = n_attn
            stages.append(st)
        return stages

    def max_arch(self) -> Arch:
        return self.reference("efficientformerv2_l")

    def min_arch(self) -> Arch:
        stages = []
        for s in range(4):
            st = dict(width=WIDTHS[s][0], expansion=[min(EXPANSIONS)] + [0] * (len(CAPS[s]) - 1))
            if s >= 2:
                st["attn"] = 0
            stages.append(st)
        return self.arch(stages)

    def sample(self, rng: random.Random) -> Arch:
        stages = []
        for s in range(4):
            caps, attn_pos = CAPS[s], ATTN_POSITIONS[s]
            while True:
                n_attn = rng.randint(0, len(attn_pos))
                a_pos = sorted(rng.sample(attn_pos, n_attn))
                before = list(range(a_pos[0] if a_pos else len(caps)))
                n_ffn = rng.randint(0 if n_attn else 1, len(before))
                if n_ffn <= len(before) and n_attn + n_ffn >= 1:
                    break
            f_pos = sorted(rng.sample(before, n_ffn))
            expansion = [0] * len(caps)
            for p in f_pos + a_pos:
                expansion[p] = rng.choice([e for e in EXPANSIONS if e <= caps[p]])
            st = dict(width=rng.choice(WIDTHS[s]), expansion=expansion)
            if s >= 2:
                st["attn"] = n_attn
            stages.append(st)
        return self.arch(stages)

    def sample_depth(self, rng: random.Random) -> Arch:
        """EfficientFormerV2-L's widths, with the kept block positions and attention count of a random
        arch (`sample`), each kept block at L's expansion there (its cap)."""
        widest = self.max_arch().stages
        return self.arch([dict(st, width=widest[s]["width"],
                               expansion=[CAPS[s][p] if e else 0 for p, e in enumerate(st["expansion"])])
                          for s, st in enumerate(self.sample(rng).stages)])

    # ---- validation ---------------------------------------------------------------------
    def validate(self, arch: Arch) -> None:
        self._check_space(arch)
        check_count(arch.stages, 4)
        for s, stage in enumerate(arch.stages):
            keys = ("width", "expansion", "attn") if s >= 2 else ("width", "expansion")
            st = check_keys(stage, s, keys)
            check_choice(st["width"], WIDTHS[s], f"stages[{s}].width")
            exp = st["expansion"]
            caps = CAPS[s]
            if not isinstance(exp, (list, tuple)) or len(exp) != len(caps):
                raise ArchError(f"stages[{s}].expansion",
                                f"needs one entry per supernet block position ({len(caps)}); got "
                                f"{len(exp) if isinstance(exp, (list, tuple)) else type(exp).__name__}",
                                f"a list of {len(caps)} ratios, 0 for a dropped block")
            for p, e in enumerate(exp):
                if e not in _ALLOWED_E[s][p] or type(e) is not int:
                    check_choice(e, _ALLOWED_E[s][p], f"stages[{s}].expansion[{p}]")
            kept = [p for p, e in enumerate(exp) if e]
            if not 1 <= len(kept) <= len(caps):
                raise ArchError(f"stages[{s}].expansion", f"depth {len(kept)} out of range",
                                f"1..{len(caps)} non-zero entries")
            if s >= 2:
                n_attn = st["attn"]
                max_attn = min(len(kept), len(ATTN_POSITIONS[s]))
                if isinstance(n_attn, bool) or not isinstance(n_attn, int) or not 0 <= n_attn <= max_attn:
                    raise ArchError(f"stages[{s}].attn", f"{n_attn!r} out of range for depth {len(kept)}",
                                    f"0..{max_attn}")
                bad = [p for p in kept[len(kept) - n_attn:] if p not in ATTN_POSITIONS[s]]
                if bad:
                    raise ArchError(f"stages[{s}].attn",
                                    f"attention block at position {bad[0]}, where the supernet has no attention",
                                    f"attention only at positions {list(ATTN_POSITIONS[s])}")

    # ---- structure ----------------------------------------------------------------------
    def layout(self, arch: Arch, num_classes: int = 1000) -> Layout:
        self.validate(arch)
        return self._layout(arch.stages, arch.input_size, num_classes)

    def supernet_layout(self, num_classes: int = 1000, resolution=None) -> Layout:
        """The blocks the supernet holds: EfficientFormerV2-L, exactly."""
        res = input_pair(self.resolution if resolution is None else resolution)
        return self._layout(self.max_arch().stages, res, num_classes)

    def _layout(self, stages: tuple, resolution: tuple[int, int], num_classes: int) -> Layout:
        stem = Placed(BlockSpec.make("efficientformerv2.stem", out=stages[0]["width"], hw=hw_value(*resolution)))
        out_stages = []
        prev = None
        for s, st in enumerate(stages):
            res = _stage_res(resolution, s)
            w = st["width"]
            down = None
            if s > 0:
                down = Placed(BlockSpec.make("efficientformerv2.downsample", **{"in": prev}, out=w,
                                             attn=s == 3, hw=_stage_res(resolution, s - 1)))
            kept = [p for p, e in enumerate(st["expansion"]) if e]
            n_attn = st.get("attn", 0)
            placed = []
            for i, p in enumerate(kept):
                hidden = int(w * st["expansion"][p])
                if i >= len(kept) - n_attn:
                    spec = BlockSpec.make("efficientformerv2.attn", dim=w, hidden=hidden,
                                          stride=STRIDE_ATTN[s] or 1, hw=res)
                else:
                    spec = BlockSpec.make("efficientformerv2.ffn", dim=w, hidden=hidden, hw=res)
                placed.append(Placed(spec, p))
            out_stages.append(StageLayout(down, tuple(placed)))
            prev = w
        head = Placed(BlockSpec.make("efficientformerv2.head", **{"in": prev}, classes=num_classes,
                                    hw=_stage_res(resolution, 3)))
        return Layout(stem, tuple(out_stages), head)

    def all_blocks(self, num_classes: int = 1000) -> list[BlockSpec]:
        res = self.input_size
        specs = [BlockSpec.make("efficientformerv2.stem", out=w, hw=hw_value(*res)) for w in WIDTHS[0]]
        for s in range(4):
            r = _stage_res(res, s)
            if s > 0:
                for i in WIDTHS[s - 1]:
                    for o in WIDTHS[s]:
                        specs.append(BlockSpec.make("efficientformerv2.downsample", **{"in": i}, out=o,
                                                    attn=s == 3, hw=_stage_res(res, s - 1)))
            ffn_e = sorted({e for p in range(len(CAPS[s])) for e in EXPANSIONS if e <= CAPS[s][p]})
            attn_e = sorted({e for p in ATTN_POSITIONS[s] for e in EXPANSIONS if e <= CAPS[s][p]})
            for w in WIDTHS[s]:
                for e in ffn_e:
                    specs.append(BlockSpec.make("efficientformerv2.ffn", dim=w, hidden=int(w * e), hw=r))
                for e in attn_e:
                    specs.append(BlockSpec.make("efficientformerv2.attn", dim=w, hidden=int(w * e),
                                                stride=STRIDE_ATTN[s] or 1, hw=r))
        if self.task == "classify":
            for w in WIDTHS[3]:
                specs.append(BlockSpec.make("efficientformerv2.head", **{"in": w}, classes=num_classes,
                                            hw=_stage_res(res, 3)))
        return list(iter_unique(specs))

    # ---- what the search needs ------------------------------------------------------------
    @property
    def choices(self) -> list[dict]:
        """Per stage: `width`, `expansion` (per supernet position, 0 = dropped) and, in stages 3-4,
        `attn` (how many of the last kept blocks are attention blocks)."""
        out = []
        for s in range(4):
            c = dict(width=WIDTHS[s], expansion=_ALLOWED_E[s])
            if ATTN_POSITIONS[s]:
                c["attn"] = tuple(range(len(ATTN_POSITIONS[s]) + 1))
            out.append(c)
        return out

    def parameters(self) -> dict[str, tuple]:
        out: dict[str, tuple] = {}
        for s in range(4):
            out[f"s{s}.width"] = tuple(WIDTHS[s])
            for p in range(len(CAPS[s])):
                out[f"s{s}.e{p}"] = _ALLOWED_E[s][p]  # 0 = the block at this supernet position is dropped
            if ATTN_POSITIONS[s]:
                out[f"s{s}.attn"] = tuple(range(len(ATTN_POSITIONS[s]) + 1))
        return out

    def decode(self, params: Mapping[str, Any]) -> Arch:
        """An attention count above what the kept attention positions allow is lowered to it."""
        stages = []
        for s in range(4):
            exp = [int(params[f"s{s}.e{p}"]) for p in range(len(CAPS[s]))]
            st: dict[str, Any] = dict(width=int(params[f"s{s}.width"]), expansion=exp)
            if ATTN_POSITIONS[s]:
                st["attn"] = min(int(params[f"s{s}.attn"]), _max_attn(exp, s))
            stages.append(st)
        arch = self.arch(stages)
        self.validate(arch)
        return arch

    def encode(self, arch: Arch) -> dict[str, Any]:
        self.validate(arch)
        out: dict[str, Any] = {}
        for s, st in enumerate(arch.stages):
            out[f"s{s}.width"] = st["width"]
            for p, e in enumerate(st["expansion"]):
                out[f"s{s}.e{p}"] = e
            if "attn" in st:
                out[f"s{s}.attn"] = st["attn"]
        return out

    def slimming_steps(self, arch: Arch) -> Iterator[tuple[str, list[dict]]]:
        """Narrow a stage, drop a block (an attention block takes one attention with it), lower one
        FFN's expansion, or turn the first attention block into an FFN block."""
        base = [dict(s) for s in arch.stages]
        for s, st in enumerate(base):
            exp = list(st["expansion"])
            kept = [p for p, e in enumerate(exp) if e]
            n_attn = st.get("attn", 0)
            attn_kept = kept[len(kept) - n_attn:] if n_attn else []
            for w in next_lower(st["width"], WIDTHS[s]):
                yield f"s{s}.width {st['width']}->{w}", with_change(base, s, width=w)
            for p in kept:
                if len(kept) > 1:  # drop the block (an attention block takes one attention with it)
                    e2 = exp.copy()
                    e2[p] = 0
                    extra = {"attn": n_attn - 1} if p in attn_kept else {}
                    yield f"s{s}.drop[{p}]", with_change(base, s, expansion=e2, **extra)
                for e in next_lower(exp[p], EXPANSIONS):
                    e2 = exp.copy()
                    e2[p] = e
                    yield f"s{s}.expansion[{p}] {exp[p]}->{e}", with_change(base, s, expansion=e2)
            if n_attn:  # the first attention block becomes an FFN-only block
                yield f"s{s}.attn {n_attn}->{n_attn - 1}", with_change(base, s, attn=n_attn - 1)

    # ---- analytic cost ------------------------------------------------------------------
    def block_params(self, spec: BlockSpec) -> int:
        return _PARAMS[spec.kind](spec)

    def block_macs(self, spec: BlockSpec) -> int:
        return _MACS[spec.kind](spec)


def _max_attn(expansion: list[int], s: int) -> int:
    """How many of the stage's last kept blocks sit at attention positions (the attn ceiling)."""
    n = 0
    for p in reversed([p for p, e in enumerate(expansion) if e]):
        if p not in ATTN_POSITIONS[s]:
            break
        n += 1
    return n


# ---- parameter and MAC counts (must equal the torch modules in supernet.efficientformerv2) ---
def _conv_bn(cin: int, cout: int, k: int = 1, groups: int = 1, bias: bool = True) -> int:
    return cout * (cin // groups) * k * k + (cout if bias else 0) + 2 * cout


def _area(hw, stride: int = 1) -> int:
    """Pixels of a `BlockSpec` size after a stride (ceil division per side)."""
    h, w = hw_pair(hw)
    return -(-h // stride) * -(-w // stride)


def _stem_params(spec: BlockSpec) -> int:
    c = spec["out"]
    return _conv_bn(3, c // 2, 3) + _conv_bn(c // 2, c, 3)


def _mlp_params(dim: int, hidden: int) -> int:
    return _conv_bn(dim, hidden) + _conv_bn(hidden, hidden, 3, groups=hidden) + _conv_bn(hidden, dim)


def _ffn_params(spec: BlockSpec) -> int:
    return _mlp_params(spec["dim"], spec["hidden"]) + spec["dim"]  # + layer scale


def _attn_params(spec: BlockSpec) -> int:
    dim = spec["dim"]
    n = _area(spec["hw"], spec["stride"])  # the attention-bias table: one entry per offset
    p = _conv_bn(dim, dim, 3, groups=dim) if spec["stride"] > 1 else 0
    p += 2 * _conv_bn(dim, KH) + _conv_bn(dim, DH) + _conv_bn(DH, DH, 3, groups=DH)
    p += 2 * (NUM_HEADS * NUM_HEADS + NUM_HEADS) + _conv_bn(DH, dim) + NUM_HEADS * n
    return p + dim + _ffn_params(spec)  # + layer scale 1, FFN with its layer scale


def _downsample_params(spec: BlockSpec) -> int:
    cin, cout = spec["in"], spec["out"]
    p = _conv_bn(cin, cout, 3)
    if spec["attn"]:
        p += cin * 9 + cin + _conv_bn(cin, DS_KH)  # local-global query: dw conv (bias) + proj
        p += _conv_bn(cin, DS_KH) + _conv_bn(cin, DS_DH) + _conv_bn(DS_DH, DS_DH, 3, groups=DS_DH)
        p += _conv_bn(DS_DH, cout) + NUM_HEADS * _area(spec["hw"])
    return p


def _head_params(spec: BlockSpec) -> int:
    c, k = spec["in"], spec["classes"]
    return 2 * c + 2 * (c * k + k)  # norm, head, distillation head


def _stem_macs(spec: BlockSpec) -> int:
    c = spec["out"]
    return _area(spec["hw"], 2) * (c // 2) * 27 + _area(spec["hw"], 4) * c * (c // 2) * 9


def _mlp_macs(dim: int, hidden: int, n: int) -> int:
    return n * (2 * dim * hidden + 9 * hidden)


def _ffn_macs(spec: BlockSpec) -> int:
    return _mlp_macs(spec["dim"], spec["hidden"], _area(spec["hw"]))


def _attn_macs(spec: BlockSpec) -> int:
    dim = spec["dim"]
    n = _area(spec["hw"], spec["stride"])
    m = n * dim * 9 if spec["stride"] > 1 else 0
    m += n * dim * (2 * KH + DH) + n * DH * 9  # q, k, v, v_local
    m += 2 * n * n * NUM_HEADS * NUM_HEADS  # talking heads (1x1 convs over the N x N map)
    m += n * n * (KH + DH)  # q @ k, attn @ v
    m += _area(spec["hw"]) * DH * dim  # projection (after the upsample)
    return m + _ffn_macs(spec)


def _downsample_macs(spec: BlockSpec) -> int:
    cin, cout = spec["in"], spec["out"]
    n, n2 = _area(spec["hw"]), _area(spec["hw"], 2)
    m = n2 * cin * cout * 9
    if spec["attn"]:
        m += n2 * cin * 9 + n2 * cin * DS_KH  # query: local dw conv, proj
        m += n * cin * (DS_KH + DS_DH) + n2 * DS_DH * 9  # k, v, v_local (stride 2)
        m += n2 * n * (DS_KH + DS_DH) + n2 * DS_DH * cout  # q @ k, attn @ v, proj
    return m


def _head_macs(spec: BlockSpec) -> int:
    return 2 * spec["in"] * spec["classes"]


_PARAMS = {"efficientformerv2.stem": _stem_params, "efficientformerv2.ffn": _ffn_params,
           "efficientformerv2.attn": _attn_params, "efficientformerv2.downsample": _downsample_params,
           "efficientformerv2.head": _head_params}
_MACS = {"efficientformerv2.stem": _stem_macs, "efficientformerv2.ffn": _ffn_macs,
         "efficientformerv2.attn": _attn_macs, "efficientformerv2.downsample": _downsample_macs,
         "efficientformerv2.head": _head_macs}

register_space("efficientformerv2", EfficientFormerV2Space)
