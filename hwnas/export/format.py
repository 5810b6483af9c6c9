"""An export format is one registered converter: `Format`, registered with `@register_format`.

    @register_format
    class OpenVINOFormat(Format):
        name = "openvino"
        files = ("model.xml", "model.bin")
        tolerances = {"openvino": Tolerance(1e-4, "fp32 IR, BatchNorms folded")}

        def export(self, ctx):                       # write the files, then check them on their runtime
            write_ir(ctx.deploy, ctx.shape, ctx.path("model.xml"))
            return verify.run_check(self.name, "openvino", "IR vs PyTorch", lambda: verify.compare(run_ir(...), ctx.ref, self.name))

A format owns its files (what `manifest.json` lists and the bundle moves in), its check (the
record `export` returns, from `hwnas.export.verify`) and its tolerance (`tolerances`, the first
its own; a format with one bound per precision names more, as `aoti` does). `preflight` fails
before any work when the format cannot be made here (a missing compiler or runtime) or for an
arch (a backbone as `aoti`, another arch than timm's as `timm`). The built-in formats are registered by `hwnas.export.formats` when `hwnas.export` is
imported; `check_formats` orders what a user asks for by registration.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hwnas._registry import Registry
from hwnas.errors import HwnasError


class ExportError(HwnasError, RuntimeError):
    """An export that cannot be made or did not pass its checks; the message says why and what to do."""


@dataclass(frozen=True)
class Tolerance:
    rel: float  # bound on max|export - reference| / max|reference|
    why: str


@dataclass
class ExportContext:
    """What every format's `export` gets: the model and its arch, the fixed input `x` and the
    model's output on it (`ref`), the ONNX graph's outputs and dynamic axes (`io`) with the other
    inputs a dynamic graph claims to take (`more`: (input, reference) pairs), and where to write."""
    model: Any
    arch: Any
    shape: tuple[int, ...]
    x: Any
    ref: Any
    io: dict
    bundle: Any  # an `ExportBundle`, inside its `with` block
    opset: int = 17
    coreml_precision: str = "fp16"
    more: list = field(default_factory=list)
    #: `torch_inductor` form settings format=aoti compiles with (depthwise, autotune, ...; the form's defaults
    #: where empty): those of the torch_inductor table the export is predicted by, so the package is what it timed
    aoti_form: dict = field(default_factory=dict)

    def path(self, name: str) -> Path:
        """Where to write file `name` (inside the bundle's temporary folder)."""
        return self.bundle.path(name)

    @cached_property
    def deploy(self):
        """The exported-graph deploy form of the model (`hwnas.latency.deploy.ExportedGraph`): what the
        ONNX Runtime, TensorRT and Core ML tables timed -- BN folded, fp32, x2 upsample as PyTorch's op."""
        from hwnas.latency.deploy import ExportedGraph
        return ExportedGraph(batch=self.shape[0], opset=self.opset).module(copy.deepcopy(self.model))

    def onnx(self) -> Path:
        """The ONNX graph of `deploy` (exported once: the formats built from it share it)."""
        path = self.path("model.onnx")
        if not path.exists():
            from hwnas.convert.onnx import export_onnx
            export_onnx(self.deploy, self.shape, path, opset=self.opset, output_name=self.io["outputs"],
                        dynamic_axes=self.io["axes"])
        return path


class Format:
    """One export format: its files, its check and its tolerance. Subclasses set `name`, `files`,
    `tolerances` and implement `export`."""

    name: str = ""
    #: the files (or folders) it writes, by name
    files: tuple[str, ...] = ()
    #: its error bounds: `{name: Tolerance}` (more keys for a bound per precision)
    tolerances: dict[str, Tolerance] = {}
    #: whether exporting or checking it loads compiled packages that need g++'s libstdc++ preloaded
    #: (`hwnas.convert.cxx_runtime`; the apps restart themselves with it: `loads_cxx_packages`)
    cxx_runtime: bool = False

    @property
    def tolerance(self) -> Tolerance:
        return self.tolerances[self.name]

    def preflight(self, arch=None) -> None:
        """Raise (an `ExportError` naming the fix) when this format cannot be made here, or for `arch`
        (None: before the arch is known)."""

    def export(self, ctx: ExportContext) -> dict:
        """Write `files` with `ctx.path(name)` and return the record of their check
        (`hwnas.export.verify`: `passed`, the error and the tolerance)."""
        raise NotImplementedError

    def manifest_entry(self, ctx: ExportContext) -> dict | None:
        """What `manifest.json` states about this format beyond its files and check, under the format's
        name (null where an export leaves the format out); None, the default: no entry."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


#: in registration order: the order an export writes its formats in
_FORMATS: Registry[Format] = Registry("export format", ExportError, "e.g. format=[pt,onnx]", sort=False)


def register_format(fmt):
    """Register `fmt` (a `Format` subclass, as a class decorator, or an instance) under its `name`,
    replacing an earlier one of that name; returns what it was given."""
    obj = fmt() if isinstance(fmt, type) else fmt
    if not isinstance(obj, Format):
        raise TypeError(f"register_format expects a hwnas.export.format.Format subclass, got {fmt!r}")
    if not obj.name or not obj.files or obj.name not in obj.tolerances:
        raise ExportError(f"register_format: {type(obj).__name__} must set `name`, `files` and its own tolerance "
                          f"(tolerances[{obj.name!r}])")
    _FORMATS.add(obj.name, obj)
    return fmt


def unregister_format(name: str) -> None:
    """Forget format `name` (a plug-in test cleaning up after itself)."""
    _FORMATS.remove(name)


def list_formats() -> list[str]:
    """The registered formats, in the order an export writes them."""
    return _FORMATS.names()


def get_format(name: str) -> Format:
    return _FORMATS.lookup(name)


def tolerance(key: str) -> Tolerance:
    """The bound named `key`: a format's own (`onnx`) or one of its others (`aoti_fp16`)."""
    for fmt in _FORMATS.values():
        if key in fmt.tolerances:
            return fmt.tolerances[key]
    raise ExportError(f"no export format states a tolerance {key!r}; known formats: {list_formats()}")


def check_formats(formats) -> list[str]:
    """The requested formats as a list, in registration order; an unknown one raises, listing the known."""
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.strip("[]").split(",") if f.strip()]
    formats = [str(f) for f in formats]
    unknown = [f for f in formats if f not in _FORMATS]
    if unknown:
        raise _FORMATS.unknown(unknown[0])
    if not formats:
        raise ExportError(f"no export format given; choose one or more of {list_formats()}")
    return [f for f in _FORMATS if f in formats]


def preflight(formats: list[str], arch=None) -> None:
    """Fail before any work when a requested format cannot be made on this machine (or for `arch`)."""
    for name in formats:
        get_format(name).preflight(arch)


__all__ = ["ExportContext", "ExportError", "Format", "Tolerance", "check_formats", "get_format", "list_formats",
           "preflight", "register_format", "tolerance", "unregister_format"]


def loads_cxx_packages(cfg) -> bool:
    """Will this app run load compiled packages that need g++'s libstdc++ preloaded: a target whose
    `cxx_runtime` is set (alone or among `targets`), or a `format` list holding such a format? The
    app runner then restarts the app with it preloaded (`hwnas.cli.run_app`'s `preload`), which the
    packages' wrapper.so needs on the GPU machine."""
    from omegaconf import OmegaConf

    from hwnas.latency.target import find_target
    try:
        data = OmegaConf.to_container(cfg, resolve=False)
    except Exception:  # noqa: BLE001 -- not a config: nothing to load
        return False

    def walk(node) -> bool:
        if isinstance(node, dict):
            fmt = node.get("format")
            for name in (fmt if isinstance(fmt, list) else [fmt]):
                if isinstance(name, str) and name in _FORMATS and _FORMATS[name].cxx_runtime:
                    return True
            return any(walk(v) for v in node.values())
        if isinstance(node, list):
            return any(walk(v) for v in node)
        target = find_target(node) if isinstance(node, str) else None  # a target's name, alone or in `targets`
        return target is not None and target.cxx_runtime
    return walk(data)
