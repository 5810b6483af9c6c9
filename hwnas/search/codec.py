"""Arch <-> Optuna parameters: one categorical parameter per choice of the space.

The mapping from parameters to an arch is total where it can be: a choice that is only invalid
in combination (Next-ViT's `r` at a width whose branches do not fit the supernet, an
EfficientFormerV2 attention count larger than the kept attention positions) is *repaired* to the
nearest valid value, so samplers see a smooth landscape. What no repair can fix (a stage with every
block dropped) raises `search_spaces.ArchError`, and the trial is recorded as infeasible.
`decode(encode(arch)) == arch` for every valid arch.
"""
from __future__ import annotations

from typing import Any, Mapping

import optuna
from optuna.distributions import CategoricalDistribution

import search_spaces
from search_spaces import Arch, ArchError
from search_spaces import efficientformerv2 as efv2
from search_spaces import nextvit as nv


def distributions(space: search_spaces.SearchSpace) -> dict[str, CategoricalDistribution]:
    """Every searched parameter of `space` with its choices (fixed single-value choices omitted)."""
    out: dict[str, CategoricalDistribution] = {}
    if space.name == "efficientformerv2":
        for s in range(4):
            out[f"s{s}.width"] = CategoricalDistribution(list(efv2.WIDTHS[s]))
            for p, cap in enumerate(efv2.CAPS[s]):
                # 0 = the block at this supernet position is dropped
                out[f"s{s}.e{p}"] = CategoricalDistribution([0] + [e for e in efv2.EXPANSIONS if e <= cap])
            if efv2.ATTN_POSITIONS[s]:
                out[f"s{s}.attn"] = CategoricalDistribution(list(range(len(efv2.ATTN_POSITIONS[s]) + 1)))
    elif space.name == "nextvit":
        for s, choices in enumerate(nv.CHOICES):
            for k in (nv.STAGE0_KEYS if s == 0 else nv.STAGE_KEYS):
                if len(choices[k]) > 1:
                    out[f"s{s}.{k}"] = CategoricalDistribution(list(choices[k]))
    else:
        raise ArchError("space", f"no Optuna parameterisation for space {space.name!r}",
                        ["efficientformerv2", "nextvit"])
    return out


def suggest(trial: optuna.Trial, space: search_spaces.SearchSpace) -> dict[str, Any]:
    """Ask the trial for every parameter of the space; returns the raw parameter dict."""
    return {name: trial.suggest_categorical(name, d.choices) for name, d in distributions(space).items()}


def decode(params: Mapping[str, Any], space: search_spaces.SearchSpace) -> Arch:
    """The (repaired, validated) arch the parameters describe; ArchError when none is possible."""
    if space.name == "efficientformerv2":
        stages = []
        for s in range(4):
            exp = [int(params[f"s{s}.e{p}"]) for p in range(len(efv2.CAPS[s]))]
            st: dict[str, Any] = dict(width=int(params[f"s{s}.width"]), expansion=exp)
            if efv2.ATTN_POSITIONS[s]:
                st["attn"] = min(int(params[f"s{s}.attn"]), _max_attn(exp, s))
            stages.append(st)
    else:
        stages = []
        for s, choices in enumerate(nv.CHOICES):
            keys = nv.STAGE0_KEYS if s == 0 else nv.STAGE_KEYS
            st = {k: params.get(f"s{s}.{k}", choices[k][0]) for k in keys}
            if s > 0:
                ok = nv.allowed_r(s, st["ntb_width"])
                if ok and st["r"] not in ok:  # nearest ratio whose branches fit the supernet
                    st["r"] = min(ok, key=lambda r: (abs(r - st["r"]), -r))
            stages.append(st)
    arch = Arch(space.name, stages, space.resolution)
    space.validate(arch)
    return arch


def encode(arch: Arch, space: search_spaces.SearchSpace) -> dict[str, Any]:
    """The parameters that decode to `arch` (the inverse of `decode` on valid archs)."""
    space.validate(arch)
    out: dict[str, Any] = {}
    for s, st in enumerate(arch.stages):
        if space.name == "efficientformerv2":
            out[f"s{s}.width"] = st["width"]
            for p, e in enumerate(st["expansion"]):
                out[f"s{s}.e{p}"] = e
            if "attn" in st:
                out[f"s{s}.attn"] = st["attn"]
        else:
            for k, v in st.items():
                if len(nv.CHOICES[s][k]) > 1:
                    out[f"s{s}.{k}"] = v
    return out


def _max_attn(expansion: list[int], s: int) -> int:
    """How many of the stage's last kept blocks sit at attention positions (the attn ceiling)."""
    n = 0
    for p in reversed([p for p, e in enumerate(expansion) if e]):
        if p not in efv2.ATTN_POSITIONS[s]:
            break
        n += 1
    return n
