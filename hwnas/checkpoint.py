"""Supernet checkpoints: one self-describing file a search, an extraction or a resumed run loads.

    save_supernet(net, path, extra={"epoch": 3})     # atomic (temporary file, then rename)
    net, meta = load_supernet(path, space="nextvit")  # weights_only=True; CheckpointError naming the fix

Format (a plain dict, loadable with `torch.load(weights_only=True)`):
`{"format": "hwnas.supernet", "version": 1, "space", "resolution", "num_classes", "state_dict", "meta"}`
where `resolution` is the input size the supernet was trained at and `meta` is plain data
(numbers, strings, lists, dicts, tensors).
"""
from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import Any

import torch

from hwnas.errors import HwnasError
from hwnas._files import atomic_path

FORMAT = "hwnas.supernet"
VERSION = 1


class CheckpointError(HwnasError, RuntimeError):
    """A checkpoint that cannot be used; the message says what it is and what to do."""


class _Writes:
    """A file object that keeps the first OSError of its writes: torch.save reports a failed write
    (a full disk) only as "unexpected pos N vs M"; this is the real error."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, data) -> int:
        try:
            return self.f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """`torch.save` to a temporary file in the same folder, flushed to disk, then renamed over `path`.
    A write the disk refuses raises that OSError (ENOSPC, EFBIG, ...), naming `path`; the old file stays."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        out = _Writes(f)
        try:
            torch.save(obj, out)
            f.flush()
            os.fsync(f.fileno())
        except (RuntimeError, OSError) as e:
            if out.error is None and isinstance(e, RuntimeError):
                raise
            err = out.error or e
            raise OSError(err.errno, err.strerror, str(path)) from None
    return path


#: how the two formats torch.save writes begin: a zip archive, or (before torch 1.6) a pickle of a magic number
ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


def check_file(path: str | os.PathLike, what: str = "checkpoint") -> Path:
    """`path` as a Path when it is a file; a `CheckpointError` saying it is a folder or missing."""
    path = Path(path)
    if path.is_dir():
        inside = path / "supernet.pt"
        raise CheckpointError(f"{path}: a folder, not a {what} file" + (
            f"; the checkpoint in it is {inside}" if inside.is_file() and what == "checkpoint" else
            "; give the file itself (a training run writes DIR/supernet.pt)"))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file" + (
            "; train a supernet with `python -m hwnas.train space=S data=D` (it writes DIR/supernet.pt)"
            if what == "checkpoint" else ""))
    return path


def safe_load(path: str | os.PathLike, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """`torch.load(weights_only=True)` with the failure modes turned into a `CheckpointError`
    that says which one it is: no such file, a folder, not a torch file at all, a torch file
    holding more than plain weights, or a damaged one (with what to do for a training state)."""
    path = check_file(path, what)
    with open(path, "rb") as f:
        head = f.read(len(LEGACY_MAGIC))
    if not (head.startswith(ZIP_MAGIC) or head == LEGACY_MAGIC):
        begins = f"it begins with bytes {head[:8].hex()}" if head else "it is empty"
        raise CheckpointError(f"{path}: not a PyTorch {what} file ({begins}; a file written by torch.save begins "
                              "with a zip header); check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: holds objects that are not plain weights, refused by "
                              f"weights_only loading ({str(e).splitlines()[0][:200]}); re-save it as a "
                              "plain state dict") from None
    except Exception as e:  # RuntimeError, EOFError, BadZipFile, KeyError ... depending on the damage
        fix = ("delete it to start this run afresh (or set train.resume=false), or use another output folder "
               "(hydra.run.dir=DIR)" if what == "training state" else
               "copy it again, or re-run the training that wrote it (it resumes from its training state)")
        raise CheckpointError(f"{path}: truncated or corrupt {what} (a torch file that does not read back: "
                              f"{str(e).splitlines()[0][:200]}); {fix}") from None


def weights_digest(state_dict: dict) -> str:
    """16 hex digits identifying the tensors of a state dict (names, dtypes, shapes and values): equal
    for equal weights, whatever else a checkpoint holds (the training's timings and dates)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(state_dict[k].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()[:16]


def nonfinite_tensor(tensors: dict) -> str | None:
    """The name of the first floating-point tensor holding NaN or inf (None: all finite)."""
    for k, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return k
    return None


def supernet_record(net, extra: dict | None = None) -> dict:
    """The checkpoint dict of a supernet (tensors moved to the CPU)."""
    return {"format": FORMAT, "version": VERSION, "space": net.space.name,
            "resolution": int(net.resolution), "num_classes": int(net.num_classes),
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "meta": dict(extra or {})}


def save_supernet(net, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write `net` (a `supernet.Supernet`) to `path` atomically; `extra` becomes the meta dict."""
    return atomic_save(supernet_record(net, extra), path)


def check_record(ckpt: Any, path: str | os.PathLike, space: Any = None) -> dict:
    """Validate a loaded checkpoint dict; returns it."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        keys = sorted(map(str, ckpt))[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"{path}: not an hwnas supernet checkpoint (found {keys}). A supernet checkpoint is written "
            "by `python -m hwnas.train`; official Next-ViT / EfficientFormerV2 or timm weights are "
            "imported with supernet.pretrained.load_pretrained (or `train.pretrained=FILE`)")
    if int(ckpt.get("version", 0)) > VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {ckpt['version']} is newer than this "
                              f"hwnas reads ({VERSION}); update hwnas")
    missing = [k for k in ("space", "resolution", "num_classes", "state_dict") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: incomplete supernet checkpoint (no {missing[0]!r}); re-save it")
    if space is not None:
        name = space if isinstance(space, str) else space.name
        if name != ckpt["space"]:
            raise CheckpointError(f"{path}: a supernet of space {ckpt['space']!r}, but space {name!r} was asked "
                                  f"for; pass space={ckpt['space']} or a checkpoint trained with space={name}")
    bad = nonfinite_tensor(ckpt["state_dict"]) if isinstance(ckpt["state_dict"], dict) else None
    if bad is not None:  # a diverged training: every subnet would score at chance
        raise CheckpointError(f"{path}: tensor {bad!r} holds NaN or inf (a training that diverged); use a "
                              "checkpoint of an intact run, or train again with a lower train.lr")
    return ckpt


def load_supernet(path: str | os.PathLike, space: Any = None, map_location: Any = "cpu"):
    """(supernet, meta) from a checkpoint written by `save_supernet`.

    `space` (a name or a `SearchSpace`), when given, must be the checkpoint's. Loading uses
    `torch.load(weights_only=True)`: no code in the file runs.
    """
    import supernet
    ckpt = check_record(safe_load(path, map_location), path, space)
    with torch.device("meta"):  # no allocation or init: every tensor comes from the file
        net = supernet.build_supernet(ckpt["space"], num_classes=int(ckpt["num_classes"]),
                                      resolution=int(ckpt["resolution"]))
    try:
        net.load_state_dict(ckpt["state_dict"], strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: its weights do not fit the {ckpt['space']} supernet of this hwnas "
                              f"({str(e).splitlines()[1] if len(str(e).splitlines()) > 1 else e}); it was "
                              "written by an incompatible version, re-train or convert it") from None
    return net, dict(ckpt.get("meta") or {})


__all__ = ["CheckpointError", "atomic_save", "check_file", "check_record", "weights_digest", "load_supernet",
           "nonfinite_tensor", "safe_load", "save_supernet", "supernet_record"]
