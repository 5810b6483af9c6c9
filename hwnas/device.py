"""Which torch device a run uses: `resolve_device("auto" | "cpu" | "cuda", local_rank)`.

A leaf module (torch only), so evaluation, training and the apps agree on one rule without
importing each other.
"""
from __future__ import annotations

import re

import torch

from hwnas.errors import HwnasError


class DeviceError(HwnasError, RuntimeError):
    """The device asked for is not available here."""


#: what a `device` setting may say (besides `cuda:N`)
DEVICES = ("auto", "cpu", "cuda")


def check_device(key: str, pref: str) -> None:
    """A `device` setting (`key`, e.g. `train.device`) is one of `DEVICES` or `cuda:N`."""
    if str(pref) not in DEVICES and not re.fullmatch(r"cuda:\d+", str(pref)):
        raise DeviceError(f"{key}={pref!r}: allowed: auto, cpu, cuda, cuda:N")


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto`: the GPU of this process (`local_rank`) when CUDA is available, else the CPU."""
    check_device("device", pref)
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("device=cuda but no CUDA device is visible; use device=cpu or auto")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(pref)


__all__ = ["DEVICES", "DeviceError", "check_device", "resolve_device"]
