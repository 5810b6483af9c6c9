"""The `timm` format: a reference model's state dict in timm's layout (`model_timm.pth`), which
`timm.create_model(name, checkpoint_path=...)` loads (a backbone: `features_only=True,
pretrained=True, pretrained_cfg_overlay=dict(file=...)`). Only timm's own models can be written
(Next-ViT-S/B/L, EfficientFormerV2-S0/S1/S2/L); another arch gets an error saying where it differs.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from hwnas._files import atomic_path

WEIGHTS = "model_timm.pth"


def save_timm(model: nn.Module, path: str | os.PathLike) -> dict:
    """Write `model`'s weights in timm's layout to `path`; returns what the manifest records (the
    timm model name, the `create_model` arguments and the line that loads it)."""
    from supernet.pretrained import timm_checkpoint

    ckpt = timm_checkpoint(model)  # another arch than timm's: PretrainedError, saying where it differs
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt.state_dict, tmp)
    return {"timm_model": ckpt.model_name, "create_kwargs": {k: list(v) if isinstance(v, tuple) else v
                                                             for k, v in ckpt.create_kwargs.items()},
            "features_only": ckpt.features_only, "load_with": ckpt.how(path.name)}
