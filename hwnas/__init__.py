"""hwnas: hardware-aware NAS over Next-ViT and EfficientFormerV2 -- the apps (profile, train,
search, extract), latency tables, MES, evaluation and export.

    model = hwnas.load("outputs/extract/...")   # the plain PyTorch model of a `format=pt` export
    except hwnas.HwnasError as e: ...            # every error hwnas reports to its user

Importing `hwnas` stays light (no torch, Hydra or Optuna); each piece imports what it needs.
"""
from hwnas.errors import HwnasError

__version__ = "0.1.0"


def load(path, map_location="cpu"):
    """The plain PyTorch model (eval mode, `model.arch` set) saved by `python -m hwnas.extract
    format=pt`: `path` is the export directory or its `model.pt`."""
    from hwnas.export.pt import load as _load
    return _load(path, map_location)


__all__ = ["HwnasError", "__version__", "load"]
