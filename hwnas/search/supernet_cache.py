"""The supernet a search evaluates with: `checkpoint=`, or a short one trained once and cached.

With no checkpoint, the train app's own config (`python -m hwnas.train`) is composed with the
search's space and data choices plus `pretrain.overrides`, hashed, and the supernet trained from
it is kept in `pretrain.cache_dir/<space>-<hash>/supernet.pt`: the next run with the same
settings finds it there instead of training again.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import search_spaces

from hwnas.checkpoint import CheckpointError, check_file
from hwnas.config import compose

TRAIN_CONFIG = "train"  # the train app's primary config (hwnas/conf/train.yaml)


def _choices() -> dict:
    try:
        from hydra.core.hydra_config import HydraConfig
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:  # not inside a Hydra app
        return {}


def train_config(cfg: DictConfig, space: search_spaces.SearchSpace) -> DictConfig:
    """The train app's config for the built-in supernet (inside the search app or outside it)."""
    choices = _choices()
    overrides = [f"space={choices.get('space', space.name)}"]
    if choices.get("data"):
        overrides.append(f"data={choices['data']}")
    overrides += list(cfg.pretrain.overrides)
    return compose(TRAIN_CONFIG, overrides)


def ensure_checkpoint(cfg: DictConfig, space: search_spaces.SearchSpace) -> Path:
    if cfg.checkpoint:
        path = Path(cfg.checkpoint).expanduser()
        if not path.is_file():
            try:
                check_file(path)
            except CheckpointError as e:
                raise CheckpointError(f"checkpoint={cfg.checkpoint}: {str(e).split(': ', 1)[1]} (or leave "
                                      "checkpoint= unset for the built-in supernet)") from None
        return path
    tcfg = train_config(cfg, space)
    text = OmegaConf.to_yaml(tcfg, resolve=True)
    key = hashlib.sha1(text.encode()).hexdigest()[:12]
    cache = Path(cfg.pretrain.cache_dir).expanduser() / f"{space.name}-{key}"
    ckpt = cache / "supernet.pt"
    if ckpt.is_file():
        print(f"using the cached built-in supernet {ckpt} (no checkpoint= given)", file=sys.stderr)
        return ckpt
    print(f"no checkpoint= given: training a short {space.name} supernet "
          f"({' '.join(cfg.pretrain.overrides)}); cached at {ckpt} for the next run", file=sys.stderr)
    from hwnas.train import train_supernet
    cache.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{space.name}-{key}-", dir=cache.parent))
    try:
        out = Path(train_supernet(tcfg, work))
        (work / "train_config.yaml").write_text(text)
        if out != work / "supernet.pt":
            os.replace(out, work / "supernet.pt")
        try:
            os.replace(work, cache)  # atomic: a concurrent run that finished first wins
        except OSError:
            if not ckpt.is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return ckpt
