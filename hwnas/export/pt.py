"""The `pt` format: a plain state dict (`model.pt`) and the arch as data (`arch.yaml`).

`hwnas.load(path)` rebuilds the plain model (`supernet.build_model(arch)`, no search machinery)
and loads the weights, so a user fine-tunes or deploys it with nothing but hwnas installed. A
backbone's `arch.yaml` says `task: backbone` (and, when it returns only some stages, holds the arch
under `arch:` beside `out_indices:`): `hwnas.load` gives back the features-only model.
The weights are the un-folded model's (BatchNorms kept), which is what training continues from;
the deploy formats (ONNX, Core ML, TorchScript, TensorRT) carry the folded one.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn
import yaml

from hwnas.checkpoint import atomic_save
from hwnas.errors import HwnasError
from hwnas._files import atomic_write

WEIGHTS = "model.pt"
ARCH = "arch.yaml"


class LoadError(HwnasError, ValueError):
    """`hwnas.load` was given something that is not a `pt` export."""


def save_pt(model: nn.Module, arch, out_dir: str | os.PathLike) -> list[Path]:
    """Write `out_dir/model.pt` (state dict) and `out_dir/arch.yaml`; returns the two paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    atomic_save(state, out_dir / WEIGHTS)  # a full disk: an OSError naming the file
    out_indices = getattr(model, "out_indices", None) if getattr(model, "features_only", False) else None
    if out_indices is not None and list(out_indices) == list(range(len(arch.layout().stages))):
        out_indices = None  # every stage: the default
    atomic_write(out_dir / ARCH, arch_yaml(arch, out_indices))
    return [out_dir / WEIGHTS, out_dir / ARCH]


def arch_yaml(arch, out_indices=None) -> str:
    """The arch as YAML that `Arch.from_dict` reads back (and `python -m hwnas.extract arch=` takes);
    a backbone returning only some stages puts the arch under `arch:` beside `out_indices:`."""
    data = arch.to_dict() if out_indices is None else {"arch": arch.to_dict(), "out_indices": list(out_indices)}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def read_arch(path: str | os.PathLike):
    """An `Arch` from a YAML/JSON file holding an arch mapping (or a mapping with an `arch` key)."""
    from search_spaces import Arch, ArchError, get_space

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())  # JSON is YAML
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ArchError("arch", f"{path} is not a YAML/JSON arch file ({first}); an arch file is what "
                        "`python -m hwnas.extract format=pt` writes as arch.yaml") from None
    if isinstance(data, dict) and "arch" in data and "stages" not in data:
        data = data["arch"]
    arch = Arch.from_dict(data)
    try:
        get_space(arch.space, resolution=arch.resolution).validate(arch)
    except ArchError:
        other = _space_that_fits(arch)
        if other:
            raise ArchError("space", f"{path} says space {arch.space!r}, but its stages are an arch of space "
                            f"{other!r}; correct `space:` in the file") from None
        raise
    return arch


def _space_that_fits(arch):
    """Another registered space whose validation the arch's stages pass, or None."""
    from search_spaces import Arch, ArchError, get_space, list_spaces
    for name in list_spaces():
        if name == arch.space:
            continue
        try:
            get_space(name, resolution=arch.resolution).validate(Arch(name, arch.to_dict()["stages"], arch.resolution))
            return name
        except (ArchError, ValueError, TypeError, KeyError):
            continue
    return None


def read_out_indices(path: str | os.PathLike):
    """The `out_indices` an arch file records for a backbone (None: every stage)."""
    data = yaml.safe_load(Path(path).read_text())
    out = data.get("out_indices") if isinstance(data, dict) and "stages" not in data else None
    return None if out is None else [int(i) for i in out]


def load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """The plain model saved by a `pt` export: `path` is the export directory or its `model.pt`.

    The model is returned in eval mode; `model.arch` is its `Arch`.
    """
    import supernet

    path = Path(path)
    weights = path / WEIGHTS if path.is_dir() else path
    arch_file = weights.parent / ARCH
    if not weights.exists():
        raise LoadError(f"no {WEIGHTS} at {path}: give the directory of a `format=pt` export or its {WEIGHTS}")
    if not arch_file.exists():
        raise LoadError(f"{weights} has no {ARCH} beside it: the pt format is the state dict plus the arch file "
                        "that `python -m hwnas.extract format=pt` writes next to it")
    arch = read_arch(arch_file)
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated file, not a torch file
        raise LoadError(f"cannot read {weights} as a state dict: {e}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoadError(f"{weights} does not hold a state dict (a mapping of names to tensors)")
    head = [k for k in state if k.startswith("head.fc.") and k.endswith("weight")]
    # no classifier weights beside a head's norm: a classifier reset to 0 classes (timm's headless model)
    num_classes = int(state[head[0]].shape[0]) if head else 0 if "head.norm.weight" in state else 1000
    with torch.device("meta"):  # no allocation or init: every tensor comes from the file
        model = supernet.DeployModel(arch, num_classes=num_classes, init=False,
                                     out_indices=read_out_indices(arch_file))
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:
        raise LoadError(f"{weights} does not match the model of {arch_file}: {e}") from None
    return model.to(map_location).eval()
