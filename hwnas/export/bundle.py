"""An export directory that is never half-written: build every file in a temporary directory next
to the target, then move them in with `manifest.json` last.

The manifest is the commit mark. A failure while building (a conversion error, a failed check,
Ctrl-C) leaves the target exactly as it was -- the previous complete export, or none -- and removes
the temporary directory. Committing first removes the old manifest, then renames the new files
in (each `os.replace` is atomic on one filesystem) and writes the manifest last, so a directory
holding a `manifest.json` always holds the complete export the manifest lists.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from hwnas.errors import HwnasError
from hwnas.files import owner_tag, remove_stale_temps

MANIFEST = "manifest.json"


class ExportBundle:
    """Context manager: `with ExportBundle(out_dir) as b:` write into `b.path(name)`, then
    `b.commit(manifest)` moves the files into `out_dir`. Leaving the block without a commit (an
    exception) discards everything written."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.tmp: Path | None = None
        self.committed = False

    def __enter__(self) -> "ExportBundle":
        self.out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.out_dir)  # what a killed extract left here (its process is gone)
        # Inside the target directory: the same filesystem, so the final renames are atomic. The
        # name carries this process's id, so the next run can tell a killed run's folder from a live one.
        self.tmp = Path(tempfile.mkdtemp(prefix=f".export-{owner_tag()}-", suffix=".tmp", dir=self.out_dir))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.tmp is not None and self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        return None

    def path(self, name: str) -> Path:
        """Where to write the artifact `name` (inside the temporary directory)."""
        if self.tmp is None:
            raise RuntimeError("ExportBundle.path() outside its `with` block")
        return self.tmp / name

    def commit(self, manifest: dict, artifacts: list[str]) -> Path:
        """Move `artifacts` (names written with `path`) into the target, then write the manifest."""
        if self.tmp is None or self.committed:
            raise RuntimeError("ExportBundle.commit() called twice or outside its `with` block")
        missing = [a for a in artifacts if not (self.tmp / a).exists()]
        if missing:
            raise RuntimeError(f"export artifacts were never written: {missing}")
        (self.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        old_manifest = self.out_dir / MANIFEST
        stale = _listed_artifacts(old_manifest)
        if old_manifest.exists():
            old_manifest.unlink()  # from here on the directory holds no complete export until we finish
        trash = self.tmp / ".replaced"
        trash.mkdir()
        # Files of the previous export that this one does not write again would contradict the
        # new manifest: move them out too.
        for name in sorted(set(stale) | set(artifacts)):
            if (self.out_dir / name).exists() or (self.out_dir / name).is_symlink():
                os.replace(self.out_dir / name, trash / name)
        for name in artifacts:
            os.replace(self.tmp / name, self.out_dir / name)
        os.replace(self.tmp / MANIFEST, old_manifest)
        self.committed = True
        return old_manifest


def _listed_artifacts(manifest_path: Path) -> list[str]:
    """The artifact file names a previous manifest lists (none when absent or unreadable)."""
    try:
        data = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return []
    names = []
    for entry in (data.get("formats") or {}).values():
        for name in entry.get("files", []) if isinstance(entry, dict) else []:
            if isinstance(name, str) and "/" not in name and name not in ("", ".", ".."):
                names.append(name)
    return names


# ---- the whole export ----------------------------------------------------------------------------
FORMATS = ("pt", "onnx", "coreml", "tensorrt", "torchscript")
FILES = {"pt": ["model.pt", "arch.yaml"], "onnx": ["model.onnx"], "coreml": ["model.mlpackage"],
         "tensorrt": ["model.engine"], "torchscript": ["model.ts"]}


class ExportError(HwnasError, RuntimeError):
    """An export that cannot be made or did not pass its checks; the message says why and what to do."""


def check_formats(formats) -> list[str]:
    """The requested formats as a list, in a fixed order; an unknown one raises, listing the known."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.strip("[]").split(",") if f.strip()]
    formats = [str(f) for f in formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {unknown[0]!r}; known formats: {list(FORMATS)} "
                          f"(e.g. format=[pt,onnx])")
    if not formats:
        raise ExportError(f"no export format given; choose one or more of {list(FORMATS)}")
    return [f for f in FORMATS if f in formats]


def preflight(formats: list[str]) -> None:
    """Fail before any work when a requested format cannot be made on this machine."""
    if "tensorrt" in formats:
        from hwnas.convert.tensorrt import TensorRTUnavailable, tensorrt_available
        if not tensorrt_available():
            raise TensorRTUnavailable(
                "needed by format=tensorrt; or export format=onnx here and build the engine where "
                "TensorRT runs: `trtexec --onnx=model.onnx --fp16 --saveEngine=model.engine`")


def write_export(model: nn.Module, arch, out_dir: str | os.PathLike, formats, *, num_classes: int,
                 weights: dict, batch: int = 1, opset: int = 17, coreml_precision: str = "fp16",
                 latency: dict | None = None, log=None, extra_files: dict | None = None) -> dict:
    """Export `model` (the plain PyTorch model of `arch`) in `formats` into `out_dir`, check each
    export on its runtime against `model`, and write `manifest.json`; returns the manifest.

    All files appear together or not at all (see `ExportBundle`), `extra_files` (relative name ->
    text, such as `.hydra/config.yaml`) with them. The deploy formats carry the BN-folded model;
    `pt` the model as given.
    """
    from . import verify
    from .manifest import build_manifest

    formats = check_formats(formats)
    preflight(formats)
    say = log or (lambda msg: None)
    model = model.cpu().eval()
    shape = (batch, 3, arch.resolution, arch.resolution)
    x = verify.reference_input(shape)
    with torch.no_grad():
        ref = model(x)
    deploy = None
    if set(formats) - {"pt"}:
        # the exported-graph deploy form (hwnas.latency.deploy): what the ONNX Runtime, TensorRT and
        # Core ML tables timed -- BN folded, fp32, x2 upsample as PyTorch's op
        from hwnas.latency.deploy import deploy_form
        deploy = deploy_form("onnxruntime_cpu", batch=batch, opset=opset).module(copy.deepcopy(model))

    results: dict[str, dict] = {}
    with ExportBundle(out_dir) as b:
        for fmt in formats:
            t0 = time.perf_counter()
            say(f"exporting {fmt} ...")
            if fmt == "pt":
                from .pt import save_pt
                save_pt(model, arch, b.tmp)
                check = verify.check_pt(b.tmp, x, ref)
            elif fmt == "torchscript":
                from hwnas.convert.torchscript import export_torchscript
                export_torchscript(deploy, shape, b.path("model.ts"))
                check = verify.check_torchscript(b.path("model.ts"), x, ref)
            elif fmt == "onnx":
                _onnx(deploy, shape, b, opset)
                check = verify.check_onnx(b.path("model.onnx"), x, ref)
            elif fmt == "coreml":
                from hwnas.convert.coreml import convert_coreml
                convert_coreml(deploy, shape, b.path("model.mlpackage"), precision=coreml_precision)
                check = verify.check_coreml(b.path("model.mlpackage"), x, ref, arch.space)
            elif fmt == "tensorrt":
                from hwnas.convert.tensorrt import build_engine
                build_engine(_onnx(deploy, shape, b, opset), b.path("model.engine"), precision="fp16")
                check = verify.check_tensorrt(b.path("model.engine"), x, ref)
            files = FILES[fmt]
            results[fmt] = {"files": files, "bytes": sum(_size(b.path(f)) for f in files),
                            "export_seconds": round(time.perf_counter() - t0, 3), "check": check}
            say(f"  {fmt}: {'ok' if check.get('passed') else 'FAILED'}"
                + (f" (rel. error {check['rel_err']:.2e} <= {check['tolerance_rel']:g})" if "rel_err" in check
                   and check.get("passed") else "") + (f" -- {check['error']}" if check.get("error") else ""))
        manifest = build_manifest(arch, model, num_classes, shape, weights, results, latency)
        artifacts = [f for fmt in formats for f in FILES[fmt]]
        for name, text in (extra_files or {}).items():
            path = b.path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            top = Path(name).parts[0]
            if top not in artifacts:
                artifacts.append(top)
        b.commit(manifest, artifacts)
    return manifest


def _onnx(deploy: nn.Module, shape, b: ExportBundle, opset: int) -> Path:
    path = b.path("model.onnx")
    if not path.exists():
        from hwnas.convert.onnx import export_onnx
        export_onnx(deploy, shape, path, opset=opset)
    return path


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
