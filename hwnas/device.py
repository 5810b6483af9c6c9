"""Which torch device a run uses: `resolve_device("auto" | "cpu" | "cuda", local_rank)`.

A leaf module (torch only), so evaluation, training and the apps agree on one rule without
importing each other.
"""
from __future__ import annotations

import torch

from hwnas.errors import HwnasError


class DeviceError(HwnasError, RuntimeError):
    """The device asked for is not available here."""


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: the GPU of this process (`local_rank`) when CUDA is available, else the CPU."""
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device=cuda but no CUDA device is visible; use device=cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(pref)


__all__ = ["DeviceError", "resolve_device"]
