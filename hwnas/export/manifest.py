"""`manifest.json`: what an export holds and the proof that it is right.

It records the arch (as data, with its id), its analytic parameter count and MACs (the numbers
the search used), the predicted latency on every shipped latency table (saying which are
estimated; `hwnas.latency.predict`), where the weights came from, and for each format its files
and the check that ran on its runtime, with the tolerance and the error.
"""
from __future__ import annotations

import datetime as _dt
import platform

import torch.nn as nn

from hwnas.latency.predict import predicted_latencies

from .format import get_format

MANIFEST_VERSION = 1


def build_manifest(arch, model: nn.Module, num_classes: int, input_shape: tuple[int, ...],
                   weights: dict, formats: dict, latency: dict | None = None, outputs: list | None = None,
                   entries: dict | None = None) -> dict:
    """The manifest of one export. `weights` says where the weights came from; `formats` maps each
    format to `{"files": [...], "check": {...}}`; `outputs` what the model returns (a backbone: one
    entry per stage, with channels and stride); `entries` what formats state beyond their files and
    check, by format name (`Format.manifest_entry`: the ONNX graph's outputs and dynamic axes)."""
    features = bool(getattr(model, "features_only", False))
    torch_params = sum(p.numel() for p in model.parameters())
    checks = [f["check"] for f in formats.values() if f.get("check")]
    return {
        "manifest_version": MANIFEST_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "arch": arch.to_dict(),
        "arch_id": arch.id,
        "space": arch.space,
        "resolution": list(arch.resolution) if isinstance(arch.resolution, tuple) else arch.resolution,
        "task": arch.task,
        "features_only": features,
        "out_indices": list(model.out_indices) if features else None,
        "num_classes": 0 if features else num_classes,
        "input_shape": list(input_shape),
        "outputs": outputs,
        **(entries or {}),
        "params": arch.params(num_classes),
        "macs": arch.macs(num_classes),
        "torch_params": torch_params,
        "weights": weights,
        "predicted_latency_ms": predicted_latencies(arch) if latency is None else latency,
        "formats": formats,
        "tolerances": {k: {"rel": t.rel, "why": t.why} for f in formats for k, t in get_format(f).tolerances.items()},
        "checks_passed": all(c.get("passed") for c in checks),
        "errors": {c["format"]: c["error"] for c in checks if c.get("error")},
        "versions": _versions(),
        "machine": platform.platform(),
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {}
    for pkg in ("hwnas", "torch", "onnx", "onnxruntime", "coremltools", "tensorrt"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
