"""Row keys of an arch, fast: the block keys of `arch.blocks()` without building the `Layout`.

`arch.blocks()` validates the arch and builds a `BlockSpec` per block (~300 µs an arch); a search
scoring ten thousand archs a second needs the keys in a tenth of that. These functions walk the
stage dicts the way each space's `_layout` does and format each key through `BlockSpec` itself
(memoised), so the only thing restated here is the order of the blocks.
`tests/test_latency_table.py` checks them against `arch.blocks()` on thousands of random archs;
a space without a fast path falls back to `arch.blocks()`.
"""
from __future__ import annotations

import functools

from search_spaces import Arch, BlockSpec, make_divisible
from search_spaces.efficientformerv2 import STRIDE_ATTN
from search_spaces.nextvit import HEAD_DIM, SR_RATIOS, STEM_CHS, ntb_split


@functools.lru_cache(maxsize=None)
def _key(kind: str, *args) -> str:
    return BlockSpec.make(kind, **dict(args)).key


@functools.lru_cache(maxsize=4096)
def _ntb_dims(width: int, r: float, mlp_ratio: float) -> tuple[int, int]:
    return ntb_split(width, r)[0], make_divisible(width * mlp_ratio, HEAD_DIM)


def nextvit_keys(arch: Arch, num_classes: int = 1000) -> list[str]:
    res = arch.resolution
    keys = [_key("nextvit.stem", ("hw", res))]
    in_chs = STEM_CHS[-1]
    for s, st in enumerate(arch.stages):
        hw = res // 2 ** (s + 2)
        hw_first = hw if s == 0 else hw * 2
        stride = 1 if s == 0 else 2
        ncb_w = st["ncb_width"]
        hidden = make_divisible(ncb_w * st["ncb_mlp_ratio"], HEAD_DIM)
        for p in range(1 if s == 0 else st["l"]):
            for q in range(st["n"]):
                first = p == 0 and q == 0
                keys.append(_key("nextvit.ncb", ("in", in_chs), ("out", ncb_w),
                                 ("stride", stride if first else 1), ("hidden", hidden),
                                 ("hw", hw_first if first else hw)))
                in_chs = ncb_w
            if s == 0:
                continue
            w = st["ntb_width"]
            mhsa, ntb_hidden = _ntb_dims(w, st["r"], st["ntb_mlp_ratio"])
            keys.append(_key("nextvit.ntb", ("in", in_chs), ("out", w), ("mhsa", mhsa), ("stride", 1),
                             ("sr", SR_RATIOS[s]), ("hidden", ntb_hidden), ("proj", in_chs != mhsa),
                             ("hw", hw)))
            in_chs = w
    keys.append(_key("nextvit.head", ("in", in_chs), ("classes", num_classes), ("hw", res // 32)))
    return keys


def _efv2_res(resolution: int, s: int) -> int:
    return -(-resolution // 2 ** (s + 2))


def efficientformerv2_keys(arch: Arch, num_classes: int = 1000) -> list[str]:
    res = arch.resolution
    stages = arch.stages
    keys = [_key("efficientformerv2.stem", ("out", stages[0]["width"]), ("hw", res))]
    prev = None
    for s, st in enumerate(stages):
        r = _efv2_res(res, s)
        w = st["width"]
        if s > 0:
            keys.append(_key("efficientformerv2.downsample", ("in", prev), ("out", w), ("attn", s == 3),
                             ("hw", _efv2_res(res, s - 1))))
        kept = [e for e in st["expansion"] if e]
        first_attn = len(kept) - st.get("attn", 0)
        for i, e in enumerate(kept):
            if i >= first_attn:
                keys.append(_key("efficientformerv2.attn", ("dim", w), ("hidden", int(w * e)),
                                 ("stride", STRIDE_ATTN[s] or 1), ("hw", r)))
            else:
                keys.append(_key("efficientformerv2.ffn", ("dim", w), ("hidden", int(w * e)), ("hw", r)))
        prev = w
    keys.append(_key("efficientformerv2.head", ("in", prev), ("classes", num_classes),
                     ("hw", _efv2_res(res, 3))))
    return keys


FAST_KEYS = {"nextvit": nextvit_keys, "efficientformerv2": efficientformerv2_keys}


def block_keys(arch: Arch, num_classes: int = 1000) -> list[str]:
    """The row keys of `arch`'s blocks in execution order (== `[b.key for b in arch.blocks()]`).

    The fast path does not validate the arch; an invalid one gives keys no table holds.
    """
    fast = FAST_KEYS.get(arch.space)
    if fast is None:
        return [b.key for b in arch.blocks(num_classes)]
    return fast(arch, num_classes)
