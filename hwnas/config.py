"""Typed schemas shared by every Hydra app (`space` and `data` groups); each app registers its own too.

A YAML file in a group starts with `defaults: [base_<group>, _self_]`, so a misspelt key fails
at start-up against the dataclass instead of being silently ignored.
"""
from __future__ import annotations

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class SpaceConfig:
    name: str = "efficientformerv2"  # nextvit | efficientformerv2
    resolution: int = 224  # deployment input resolution (multiple of 32)


_REGISTERED = False


def register_common() -> None:
    """Register the shared schemas with Hydra's ConfigStore (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    cs = ConfigStore.instance()
    cs.store(group="space", name="base_space", node=SpaceConfig)
    from hwnas.data import DataConfig
    cs.store(group="data", name="base_data", node=DataConfig)
    _REGISTERED = True


def get_space_from_cfg(cfg):
    """The search space a `space` group config names."""
    import search_spaces
    return search_spaces.get_space(cfg.name, resolution=cfg.resolution)


