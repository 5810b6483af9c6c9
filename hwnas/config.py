"""Where the apps' configs live and how they compose: `CONF_DIR`, `compose()`, and the typed
schemas every app shares (`space` and `data` groups; each app registers its own too).

    cfg = compose("train", ["space=nextvit", "train.epochs=1"])   # what `python -m hwnas.train ...` gets

A YAML file in a group starts with `defaults: [/schema_<group>..., _self_]`, so a misspelt key
fails at start-up against the dataclass instead of being silently ignored. The schemas are stored
at the top of Hydra's ConfigStore, outside the groups, so a group's options (`+target=`, `data=`,
`--help`) list only real choices. A schema's `__post_init__` checks the ranges of its values;
`hwnas.cli` instantiates every schema of an app's config before the app starts. Hydra is imported only when
a function here needs it: `hwnas.latency` (which runs where Hydra is not installed) reads `CONF_DIR`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hwnas.errors import ConfigError, check_choice

#: the apps' Hydra configs (installed with the package)
CONF_DIR = Path(__file__).resolve().parent / "conf"


@dataclass
class SpaceConfig:
    name: str = "efficientformerv2"  # nextvit | efficientformerv2 (any registered space)
    resolution: int = 224  # deployment input resolution (multiple of 32)

    def __post_init__(self):
        import search_spaces
        check_choice("space", "name", self.name, search_spaces.list_spaces())
        if not isinstance(self.resolution, int) or self.resolution < 32 or self.resolution % 32:
            raise ConfigError(f"space.resolution={self.resolution!r}: must be a multiple of 32 (>= 32), the "
                              "deployment input size")


_REGISTERED = False


def register_common() -> None:
    """Register the shared schemas with Hydra's ConfigStore (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore
    cs = ConfigStore.instance()
    cs.store(name="schema_space", node=SpaceConfig)
    from hwnas.data import store_schemas
    store_schemas()  # every registered dataset's schema_data_<name> (and those registered later)
    _REGISTERED = True


def compose(config_name: str, overrides: Sequence[str] = ()):
    """The config `conf/<config_name>.yaml` composed with command-line `overrides`, as an app would
    get it -- for tests, experiments and one app composing another's config. Inside a running
    app it composes with that app's Hydra instance; elsewhere with a temporary one. The shared
    schemas are registered here; an app's own (e.g. `hwnas.search.config.register()`) must be
    registered by the caller first."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_common()
    if GlobalHydra.instance().is_initialized():  # inside an app (its search path is CONF_DIR)
        return hydra_compose(config_name=config_name, overrides=list(overrides))
    with initialize_config_dir(str(CONF_DIR), version_base=None):
        return hydra_compose(config_name=config_name, overrides=list(overrides))


def get_space_from_cfg(cfg, task: str | None = None, input_size=None):
    """The search space a `space` group config names, deploying its archs as `task` (`classify`,
    the default, or `backbone`) at `input_size` ([H, W] or one int; default the space's
    `resolution`) -- the apps' top-level `task=` and `input=`."""
    import search_spaces
    from hwnas.errors import ConfigError
    res = cfg.resolution
    if input_size is not None:
        from omegaconf import ListConfig, OmegaConf
        res = OmegaConf.to_container(input_size) if isinstance(input_size, ListConfig) else input_size
        if not (isinstance(res, int) or (isinstance(res, (list, tuple)) and len(res) == 2)):
            raise ConfigError(f"input={res!r}: give the input size as [H, W] (e.g. input=[640,640]) or one int")
    try:
        return search_spaces.get_space(cfg.name, resolution=res, task=task)
    except search_spaces.ArchError as e:
        if e.field not in ("resolution", "task"):
            raise
        raise ConfigError(f"{e} (set with input=[H,W] and task=classify|backbone)") from None
