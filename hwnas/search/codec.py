"""Arch <-> Optuna parameters: one categorical parameter per searched choice of the space.

The space says what its parameters are (`SearchSpace.parameters`, `encode`, `decode`: pure
Python); this module only hands them to Optuna. The mapping from parameters to an arch is total
where it can be: a choice that is only invalid in combination (Next-ViT's `r` at a width whose
branches do not fit the supernet, an EfficientFormerV2 attention count larger than the kept
attention positions) is *repaired* to the nearest valid value, so samplers see a smooth
landscape. What no repair can fix (a stage with every block dropped) raises
`search_spaces.ArchError`, and the trial is recorded as infeasible. `decode(encode(arch)) == arch`
for every valid arch.
"""
from __future__ import annotations

from typing import Any, Mapping

import optuna
from optuna.distributions import CategoricalDistribution

import search_spaces
from search_spaces import Arch


def distributions(space: search_spaces.SearchSpace) -> dict[str, CategoricalDistribution]:
    """Every searched parameter of `space` with its choices (fixed single-value choices omitted)."""
    return {name: CategoricalDistribution(list(choices)) for name, choices in space.parameters().items()}


def suggest(trial: optuna.Trial, space: search_spaces.SearchSpace) -> dict[str, Any]:
    """Ask the trial for every parameter of the space; returns the raw parameter dict."""
    return {name: trial.suggest_categorical(name, d.choices) for name, d in distributions(space).items()}


def decode(params: Mapping[str, Any], space: search_spaces.SearchSpace) -> Arch:
    """The (repaired, validated) arch the parameters describe; ArchError when none is possible."""
    return space.decode(params)


def encode(arch: Arch, space: search_spaces.SearchSpace) -> dict[str, Any]:
    """The parameters that decode to `arch` (the inverse of `decode` on valid archs)."""
    return space.encode(arch)
