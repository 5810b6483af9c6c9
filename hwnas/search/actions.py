"""The slimming actions of EfficientFormerV2's search: every one-step-smaller neighbour of an arch.

An action removes capacity in exactly one place: drop a block, narrow a stage, lower one FFN's
expansion, turn an attention block into an FFN block, lower Next-ViT's N or L, lower its r. The
choices come from the space's own tables and every neighbour passes `space.validate`, so the
greedy search can never step outside the space.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator

import search_spaces
from search_spaces import Arch
from search_spaces import efficientformerv2 as efv2
from search_spaces import nextvit as nv


@dataclass(frozen=True)
class Action:
    name: str  # e.g. "s2.drop[7]", "s3.width 384->336", "s1.r 0.75->0.5"
    arch: Arch  # the arch after the action


def _lower(value, choices) -> list:
    """The next smaller choice (a one-element list), or [] at the minimum."""
    smaller = sorted(c for c in choices if c < value)
    return smaller[-1:]


def slimming_actions(space: search_spaces.SearchSpace, arch: Arch) -> list[Action]:
    """Every valid arch one slimming step below `arch`, named by what the step changes."""
    space.validate(arch)
    gen = _efficientformerv2 if space.name == "efficientformerv2" else _nextvit
    out, seen = [], set()
    for name, stages in gen(arch):
        cand = Arch(arch.space, stages, arch.resolution)
        if cand != arch and cand not in seen and space.is_valid(cand):
            seen.add(cand)
            out.append(Action(name, cand))
    return out


def _efficientformerv2(arch: Arch) -> Iterator[tuple[str, list]]:
    base = [dict(s) for s in arch.stages]
    for s, st in enumerate(base):
        exp = list(st["expansion"])
        kept = [p for p, e in enumerate(exp) if e]
        n_attn = st.get("attn", 0)
        attn_kept = kept[len(kept) - n_attn:] if n_attn else []
        for w in _lower(st["width"], efv2.WIDTHS[s]):
            yield f"s{s}.width {st['width']}->{w}", _with(base, s, width=w)
        for p in kept:
            if len(kept) > 1:  # drop the block (an attention block takes one attention with it)
                e2 = exp.copy()
                e2[p] = 0
                extra = {"attn": n_attn - 1} if p in attn_kept else {}
                yield f"s{s}.drop[{p}]", _with(base, s, expansion=e2, **extra)
            for e in _lower(exp[p], efv2.EXPANSIONS):
                e2 = exp.copy()
                e2[p] = e
                yield f"s{s}.expansion[{p}] {exp[p]}->{e}", _with(base, s, expansion=e2)
        if n_attn:  # the first attention block becomes an FFN-only block
            yield f"s{s}.attn {n_attn}->{n_attn - 1}", _with(base, s, attn=n_attn - 1)


def _nextvit(arch: Arch) -> Iterator[tuple[str, list]]:
    base = [dict(s) for s in arch.stages]
    for s, st in enumerate(base):
        choices = nv.CHOICES[s]
        for key in st:
            if key == "r":
                continue
            for v in _lower(st[key], choices[key]):
                change = {key: v}
                if key == "ntb_width":  # keep r where it fits, else the largest r that does
                    ok = nv.allowed_r(s, v)
                    if ok and st["r"] not in ok:
                        change["r"] = max(r for r in ok if r <= st["r"]) if min(ok) <= st["r"] else min(ok)
                yield f"s{s}.{key} {st[key]}->{v}", _with(base, s, **change)
        if "r" in st:
            for r in _lower(st["r"], nv.allowed_r(s, st["ntb_width"])):
                yield f"s{s}.r {st['r']}->{r}", _with(base, s, r=r)


def _with(stages: list[dict], s: int, **change) -> list[dict]:
    out = copy.deepcopy(stages)
    out[s].update(change)
    return out
