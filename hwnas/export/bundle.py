"""An export directory that is never half-written: build every file in a temporary directory next
to the target, then move them in with `manifest.json` last.

The manifest is the commit mark. A failure while building (a conversion error, a failed check,
Ctrl-C) leaves the target exactly as it was -- the previous complete export, or none -- and removes
the temporary directory. Committing first removes the old manifest, then renames the new files
in (each `os.replace` is atomic on one filesystem) and writes the manifest last, so a directory
holding a `manifest.json` always holds the complete export the manifest lists.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

from hwnas._files import owner_tag, register_temp, remove_stale_temps

from .format import ExportContext, ExportError, check_formats, get_format, list_formats, preflight  # noqa: F401 (re-exported)

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
        register_temp(self.tmp)  # killed, it is removed by the next run of any app, not only one here
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
def write_export(model: nn.Module, arch, out_dir: str | os.PathLike, formats, *, num_classes: int,
                 weights: dict, batch: int = 1, opset: int = 17, coreml_precision: str = "fp16",
                 latency: dict | None = None, log=None, extra_files: dict | None = None,
                 aoti_form: dict | None = None) -> dict:
    """Export `model` (the plain PyTorch model of `arch`) in `formats` into `out_dir`, check each
    export on its runtime against `model`, and write `manifest.json`; returns the manifest.

    All files appear together or not at all (see `ExportBundle`), `extra_files` (relative name ->
    text, such as `.hydra/config.yaml`) with them. The deploy formats carry the BN-folded model;
    `pt` and `timm` the model as given. A backbone (a features-only model) is
    exported with one output per stage it returns and, in ONNX, a dynamic batch axis (and dynamic
    height and width where its family's graph follows the input size: `Family.onnx_dynamic_hw`),
    checked at a second batch size (and image size) too. `aoti_form`: the `torch_inductor` form settings
    format=aoti compiles with (default: the form's defaults).
    """
    from . import verify
    from .manifest import build_manifest

    formats = check_formats(formats)
    preflight(formats, arch)
    say = log or (lambda msg: None)
    model = model.cpu().eval()
    shape = (batch, 3, *arch.input_size)
    x = verify.reference_input(shape)
    with torch.no_grad():
        ref = model(x)
    io = onnx_io(model, arch)
    more = []  # what a dynamic ONNX graph claims to take beyond the traced shape, with PyTorch's answers
    if io["dynamic"]:
        h, w = arch.input_size
        others = [(batch + 1, 3, h, w)] + ([(batch, 3, h + 64, w + 32)] if 2 in io["dynamic"] else [])
        with torch.no_grad():
            more = [(xi, model(xi)) for xi in (verify.reference_input(s, seed=1) for s in others)]
    results: dict[str, dict] = {}
    with ExportBundle(out_dir) as b:
        ctx = ExportContext(model=model, arch=arch, shape=shape, x=x, ref=ref, io=io, bundle=b, opset=opset,
                            coreml_precision=coreml_precision, more=more, aoti_form=dict(aoti_form or {}))
        for fmt in formats:
            t0 = time.perf_counter()
            say(f"exporting {fmt} ...")
            check = get_format(fmt).export(ctx)
            files = list(get_format(fmt).files)
            results[fmt] = {"files": files, "bytes": sum(_size(b.path(f)) for f in files),
                            "export_seconds": round(time.perf_counter() - t0, 3), "check": check}
            say(f"  {fmt}: {'ok' if check.get('passed') else 'FAILED'}"
                + (f" (rel. error {check['rel_err']:.2e} <= {check['tolerance_rel']:g})" if "rel_err" in check
                   and check.get("passed") else "") + (f" -- {check['error']}" if check.get("error") else ""))
            if check.get("needs"):  # a compiled package runs only where it was compiled
                n = check["needs"]
                say(f"  {fmt}: needs torch {n['torch']} on {n['device']}" + (f" (CUDA {n['cuda']})" if n.get("cuda")
                    else "") + f"; how to run it without hwnas: manifest.json formats.{fmt}.check.how")
        # every format that states an entry has its key, null where this export leaves it out
        entries = {name: entry if name in formats else None for name in list_formats()
                   if (entry := get_format(name).manifest_entry(ctx)) is not None}
        manifest = build_manifest(arch, model, num_classes, shape, weights, results, latency,
                                  outputs=_outputs(model, ref), entries=entries)
        artifacts = [f for fmt in formats for f in get_format(fmt).files]
        for name, text in (extra_files or {}).items():
            path = b.path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            top = Path(name).parts[0]
            if top not in artifacts:
                artifacts.append(top)
        b.commit(manifest, artifacts)
    return manifest


def onnx_io(model: nn.Module, arch) -> dict:
    """The ONNX graph's output names and dynamic axes: a classifier's one static `output`; a
    backbone's `stage<i>` outputs, with a dynamic batch axis and, where the family's graph follows the
    input size (`Family.onnx_dynamic_hw`), dynamic height and width."""
    if not getattr(model, "features_only", False):
        return {"outputs": ["output"], "dynamic": (), "axes": None}
    import supernet
    dynamic = (0, 2, 3) if supernet.get_family(arch.space).onnx_dynamic_hw else (0,)
    names = [f"stage{i}" for i in model.out_indices]
    sym = {0: "batch", 2: "height", 3: "width"}
    axes = {"input": {i: sym[i] for i in dynamic}}
    axes.update({n: {i: (sym[i] if i == 0 else f"{sym[i]}_{n}") for i in dynamic} for n in names})
    return {"outputs": names, "dynamic": dynamic, "axes": axes}


def _outputs(model: nn.Module, ref) -> list[dict]:
    """What the export returns: one entry per output (a backbone: per stage, with timm's feature_info)."""
    if not isinstance(ref, (list, tuple)):
        return [{"name": "output", "shape": list(ref.shape)}]
    info = model.feature_info
    return [{"name": f"stage{i}", "shape": list(r.shape), "num_chs": info[i]["num_chs"],
             "reduction": info[i]["reduction"], "module": info[i]["module"]}
            for i, r in zip(model.out_indices, ref)]


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
