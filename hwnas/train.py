"""`python -m hwnas.train space=S data=D`: train a weight-sharing supernet (sandwich rule).

The same command runs data-parallel under `torchrun --nproc_per_node=N -m hwnas.train ...`.
Writes `supernet.pt` (every epoch and at the end), `train_state.pt` (for resuming), `metrics.csv`
to the run directory (`hydra.run.dir=DIR`). `train_supernet(cfg, out_dir)` is the same run as a
function (the search app calls it to train its built-in supernet).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hwnas.config import SpaceConfig, get_space_from_cfg, register_common
from hwnas.data import DataConfig, data_config, get_dataset
from hwnas.errors import check_min
from hwnas.training import TrainConfig, train, train_config

log = logging.getLogger("hwnas.train")


@dataclass
class TrainAppConfig:
    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)  # the chosen dataset's schema (a DataConfig subclass)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = 0

    def __post_init__(self):
        check_min("", "seed", self.seed, 0)


def _validated(cfg: Any):
    """The app config merged onto its schema: a misspelt key, a wrong type or a value out of range
    fails here, by name."""
    from omegaconf import DictConfig, OmegaConf, open_dict
    from hwnas.cli import check_config
    if not type(cfg).__module__.startswith("omegaconf"):
        cfg = OmegaConf.create(cfg)
    data = cfg.get("data") if isinstance(cfg, DictConfig) else None
    if isinstance(data, DictConfig) and OmegaConf.get_type(data) is dict:  # plain keys: onto their dataset's schema
        schema = get_dataset(str(data.get("name", DataConfig.name))).config
        data_config(data)  # a key of another dataset fails here, naming the dataset and its keys
        with open_dict(cfg):
            cfg.data = OmegaConf.merge(OmegaConf.structured(schema), data)
    return check_config(cfg, TrainAppConfig)


def train_supernet(cfg: Any, out_dir: str | os.PathLike) -> Path:
    """Train the supernet `cfg` describes (the train app's config: space, data, train, seed)
    into `out_dir`; returns the path of `out_dir/supernet.pt`."""
    cfg = _validated(cfg)
    space = get_space_from_cfg(cfg.space)
    return train(space, data_config(cfg.data), train_config(cfg.train), out_dir, seed=int(cfg.seed),
                 log=log.info)


def _task(cfg: Any, run_dir: Path) -> None:
    path = train_supernet(cfg, run_dir)
    if int(os.environ.get("RANK", "0")) == 0:
        log.info("supernet written to %s", path)


def main() -> None:
    from hwnas.cli import run_app
    run_app("train", "train", _task, register=register_common, schema=TrainAppConfig,
            interrupted=_interrupted)


def _interrupted(cfg: Any, run_dir: Path) -> str:
    """What a Ctrl-C leaves, from the files on disk: supernet.pt may lag train_state.pt by an epoch
    (each epoch writes the state first), and the rerun brings it up to date."""
    from hwnas.training.trainer import saved_epoch
    state, ckpt = (saved_epoch(run_dir / name) for name in ("train_state.pt", "supernet.pt"))
    if state is None:
        return f"no epoch finished, {run_dir} holds nothing to resume from; rerun the same command to start again"
    kept = f"epoch {state}/{cfg.train.epochs} is kept in {run_dir}/train_state.pt"
    if ckpt != state:
        kept += (f"; supernet.pt {'is not written yet' if ckpt is None else f'holds epoch {ckpt}'} (the rerun "
                 "writes it from train_state.pt)")
    else:
        kept += " and supernet.pt"
    return f"{kept}; resume with the same command and hydra.run.dir={run_dir}"


if __name__ == "__main__":
    main()
