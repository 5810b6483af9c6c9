"""Fingerprints: a short hash of the graph a target runs, so a table row that no longer describes
the code is caught.

The graph is the deploy form's module (`hwnas.latency.deploy`) traced at the level of PyTorch's
Python API (a `TorchFunctionMode` records every call that returns a tensor: `F.conv2d`,
`Tensor.reshape`, `torch.cat`, ...) with, for each call, its argument kinds (the input, a weight, an
earlier result), dtypes, shapes, the memory format of inputs and weights, and every non-tensor
attribute (strides, groups, scale factors, dims). Weight values and source text are not in it, so
a comment or a refactoring that computes the same ops keeps every fingerprint; a changed op, shape,
dtype, memory format or rewrite changes it. The API level (not ATen) keeps it independent of
PyTorch's internal decompositions, so the GPU machine and a CPU machine with another torch version
agree. Tracing runs on meta tensors (no memory, no arithmetic: ~10-40 ms a block), which give the
same calls as real ones on any device (tested), because no block computes differently by device.

    fp = block_fingerprint(spec, form)                      # a table row
    fp = network_fingerprint(model_block_fingerprints(m, form))   # a whole network (deployed model m)

`FingerprintCache` keeps computed fingerprints on disk (`~/.cache/hwnas/fingerprints/`), keyed by
everything that can change them: the source of `search_spaces`, `supernet` and the deploy forms,
and the torch version.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode, resolve_name

from hwnas._files import atomic_write

SCHEME = "torch-function-trace"
VERSION = 1


def scheme_info() -> dict:
    """What a table's provenance records about its fingerprints."""
    return {"scheme": SCHEME, "version": VERSION, "torch": torch.__version__,
            "what": "sha256 of the deploy form's PyTorch-API call trace (op, argument kinds, dtypes, shapes, "
                    "memory format of inputs and weights, attributes; no weight values), on meta tensors; "
                    "whole networks: sha256 of their blocks' fingerprints in order"}


def _memory_format(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "c"
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        return "cl"
    return "s"


class _Tracer(TorchFunctionMode):
    def __init__(self, leaves: dict[int, str]):
        super().__init__()
        self.leaves = leaves
        self.produced: dict[int, int] = {}
        self.keep: list = []  # keeps every traced tensor alive, so no id() is reused during the trace
        self.records: list = []

    def _enc(self, a):
        if isinstance(a, torch.Tensor):
            i = self.produced.get(id(a))
            if i is not None:
                return ["%", i]
            self.keep.append(a)
            return [self.leaves.get(id(a), "t"), str(a.dtype), list(a.shape), _memory_format(a)]
        if isinstance(a, (list, tuple)):
            return [self._enc(v) for v in a]
        if isinstance(a, dict):
            return {str(k): self._enc(v) for k, v in sorted(a.items())}
        if isinstance(a, bool) or a is None or isinstance(a, (int, str)):
            return a
        if isinstance(a, float):
            return ["f", repr(a)]
        if isinstance(a, slice):
            return ["slice", self._enc(a.start), self._enc(a.stop), self._enc(a.step)]
        if isinstance(a, torch.device):
            return "device"  # where it runs is not part of the graph
        if isinstance(a, (torch.dtype, torch.memory_format, torch.layout)):
            return str(a)
        if a is Ellipsis:
            return "..."
        return type(a).__name__

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        if not outs or not all(isinstance(o, torch.Tensor) for o in outs):
            return out  # shape/dtype queries and other non-tensor results are not ops
        rec = [_op_name(func), self._enc(list(args)), self._enc(kwargs), []]
        for o in outs:
            self.keep.append(o)
            self.produced[id(o)] = len(self.records)
            rec[3].append([str(o.dtype), list(o.shape)])
        self.records.append(rec)
        return out


@functools.lru_cache(maxsize=None)
def _op_name_cached(func) -> str:
    try:
        return resolve_name(func) or getattr(func, "__qualname__", repr(func))
    except Exception:  # noqa: BLE001 -- unnamed callables: their qualified name is stable enough
        return getattr(func, "__qualname__", repr(func))


def _op_name(func) -> str:
    try:
        return _op_name_cached(func)
    except TypeError:  # unhashable
        return getattr(func, "__qualname__", repr(func))


@torch.no_grad()
def trace(module: nn.Module, x: torch.Tensor) -> list:
    """The call records of `module(x)`: [op, args, kwargs, outputs] each, in execution order."""
    leaves = {id(p): "p" for p in module.parameters()}
    leaves.update({id(b): "p" for b in module.buffers()})
    leaves[id(x)] = "x"
    tracer = _Tracer(leaves)
    with tracer:
        module(x)
    return tracer.records


def digest(records: list, salt: str) -> str:
    text = json.dumps([SCHEME, VERSION, salt, records], separators=(",", ":"), sort_keys=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fingerprint_module(module: nn.Module, x: torch.Tensor, salt: str) -> str:
    """The fingerprint of a deployed module run on `x` (any device)."""
    return digest(trace(module, x), salt)


def network_fingerprint(block_fingerprints: Sequence[str]) -> str:
    """A whole network's fingerprint: its blocks' fingerprints in execution order (a deployed model
    is its blocks' deploy forms in sequence, with nothing between them: tested)."""
    return hashlib.sha256(("net:" + ",".join(block_fingerprints)).encode()).hexdigest()[:16]


# ---- from keys and models ------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _space_specs(space_name: str) -> dict:
    import search_spaces
    return {s.key: s for s in search_spaces.get_space(space_name).all_blocks()}


_KEY = re.compile(r"^([\w.]+)\((.*)\)$")


def _parse_value(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v


def spec_for_key(key: str):
    """The `BlockSpec` of a table key (from its space's block set, else parsed from the key)."""
    from search_spaces import BlockSpec
    kind = key.split("(", 1)[0]
    try:
        spec = _space_specs(kind.split(".")[0]).get(key)
    except Exception:  # noqa: BLE001 -- an unknown space: the key parse below says what is wrong
        spec = None
    if spec is not None:
        return spec
    m = _KEY.match(key)
    if not m:
        raise ValueError(f"{key!r} is not a block key (kind(name=value,...))")
    args = {}
    for part in filter(None, m.group(2).split(",")):
        name, _, value = part.partition("=")
        args[name] = _parse_value(value)
    return BlockSpec.make(m.group(1), **args)


def block_fingerprint(spec, form) -> str:
    """The fingerprint of a block's deploy form, traced on meta tensors."""
    import supernet
    with torch.device("meta"):
        block = supernet.build_block(spec, init=False)
    block = form.module(block)
    x = form.example_input(supernet.block_input_shape(spec, form.batch), "meta", random=False)
    return fingerprint_module(block, x, form.salt())


def deployed_blocks(model: nn.Module) -> list[tuple]:
    """(spec, module) of every block of a static model (`supernet.Model`), in execution order
    (a backbone has no head)."""
    layout = model.layout
    out = [(layout.stem.spec, model.stem)]
    for st_layout, stage in zip(layout.stages, model.stages):
        if st_layout.downsample is not None:
            out.append((st_layout.downsample.spec, stage.downsample))
        out += [(p.spec, b) for p, b in zip(st_layout.blocks, stage.blocks)]
    if layout.head is not None:
        out.append((layout.head.spec, model.head))
    return out


def model_block_fingerprints(model: nn.Module, form) -> list[tuple[str, str]]:
    """(key, fingerprint) of every block of a model already in `form`'s deploy form (e.g. an
    export), each block traced on a meta copy with the input the form feeds a lone block."""
    import supernet
    out = []
    for spec, block in deployed_blocks(model):
        meta = copy.deepcopy(block).to("meta")
        x = form.example_input(supernet.block_input_shape(spec, form.batch), "meta", random=False)
        out.append((spec.key, fingerprint_module(meta, x, form.salt())))
    return out


# ---- the on-disk cache ---------------------------------------------------------------------------
def _package_dir(name: str) -> Path:
    import importlib
    return Path(importlib.import_module(name).__file__).parent


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """A hash of everything that can change a fingerprint: the sources of `search_spaces`,
    `supernet`, the deploy forms and this module, and the torch version."""
    h = hashlib.sha256(f"{SCHEME}:{VERSION}:torch {torch.__version__}".encode())
    files = sorted(_package_dir("search_spaces").rglob("*.py")) + sorted(_package_dir("supernet").rglob("*.py"))
    files += [Path(__file__).with_name("deploy.py"), Path(__file__)]
    for f in files:
        h.update(f.name.encode())  # (sub-packages included: a family's module may live in one)
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("HWNAS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "hwnas")
    return Path(base) / "fingerprints"


class FingerprintCache:
    """Current-code fingerprints of one deploy form, computed on demand and kept on disk."""

    def __init__(self, form, root: str | os.PathLike | None = None):
        self.form = form
        tag = hashlib.sha256(json.dumps([form.target, form.settings(), form.salt()], sort_keys=True)
                             .encode()).hexdigest()[:12]
        self.path = Path(root or cache_root()) / code_version() / f"{form.target}-{tag}.json"
        self.values: dict[str, str] = {}
        self._dirty = 0
        try:
            self.values = json.loads(self.path.read_text())
        except (OSError, ValueError):
            pass

    def get(self, key: str) -> str:
        fp = self.values.get(key)
        if fp is None:
            fp = self.values[key] = block_fingerprint(spec_for_key(key), self.form)
            self._dirty += 1
            if self._dirty >= 32:
                self.flush()
        return fp

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        out = {k: self.get(k) for k in keys}
        self.flush()
        return out

    def network(self, keys: Sequence[str]) -> str:
        return network_fingerprint([self.get(k) for k in keys])

    def flush(self) -> None:
        """Merge into the file on disk (other processes may have added keys), atomically."""
        if not self._dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                on_disk = json.loads(self.path.read_text())
            except (OSError, ValueError):
                on_disk = {}
            on_disk.update(self.values)
            atomic_write(self.path, json.dumps(on_disk, sort_keys=True), fsync=False)  # only a cache
            self.values = on_disk
        except OSError:
            pass  # a read-only home: the cache only saves time
        self._dirty = 0


_CACHES: dict = {}


def cache_for(form) -> FingerprintCache:
    """One cache per form (and cache root) per process."""
    key = (form.target, json.dumps(form.settings(), sort_keys=True), str(cache_root()))
    c = _CACHES.get(key)
    if c is None:
        c = _CACHES[key] = FingerprintCache(form)
    return c
