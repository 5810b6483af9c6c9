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


def warm_on_side_stream(fn, x, n: int = 3) -> None:
    """`n` runs of `fn(x)` on a side stream before a CUDA-graph capture (PyTorch's recipe: lazy
    initialisation and allocations happen outside the graph)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        for _ in range(n):
            fn(x)
    torch.cuda.current_stream().wait_stream(s)


def capture_graph(fn):
    """`fn()` (work on the current stream, already warmed up) captured in one CUDA graph: (its
    replay, what the captured call returned -- static buffers the replays overwrite). An
    AOTInductor runtime loaded without `run_single_threaded` queries the CUDA event of its previous
    run when it starts one, which the default ("global") capture mode may refuse; the "relaxed"
    mode allows it and is tried second. Synchronising first makes that previous run finished, so
    the runtime only queries, never waits, inside the capture."""
    torch.cuda.synchronize()
    for mode in ("global", "relaxed"):
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode=mode):
                out = fn()
            return graph.replay, out
        except RuntimeError:
            if mode == "relaxed":
                raise
            torch.cuda.synchronize()


__all__ = ["DEVICES", "DeviceError", "capture_graph", "check_device", "resolve_device", "warm_on_side_stream"]
