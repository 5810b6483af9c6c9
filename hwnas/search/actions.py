"""The slimming actions of EfficientFormerV2's search: every one-step-smaller neighbour of an arch.

An action removes capacity in exactly one place; which places a family has is the space's to say
(`SearchSpace.slimming_steps`: drop a block, narrow a stage, lower one FFN's expansion, turn an
attention block into an FFN block, lower Next-ViT's N, L or r, ...). Every neighbour passes
`space.validate`, so the greedy search can never step outside the space.
"""
from __future__ import annotations

from dataclasses import dataclass

import search_spaces
from search_spaces import Arch


@dataclass(frozen=True)
class Action:
    name: str  # e.g. "s2.drop[7]", "s3.width 384->336", "s1.r 0.75->0.5"
    arch: Arch  # the arch after the action


def slimming_actions(space: search_spaces.SearchSpace, arch: Arch) -> list[Action]:
    """Every valid arch one slimming step below `arch`, named by what the step changes."""
    return [Action(name, cand) for name, cand in space.slimming_actions(arch)]
