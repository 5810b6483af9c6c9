"""A model family's torch side, registered per search space: the plug-in boundary of `supernet`.

A family is two registrations: its pure-Python space (`search_spaces.register_space`, what the
search needs) and, here, a `Family` -- how each `BlockSpec` kind becomes a static block, the input
a block takes, which tensors depend on the input resolution, and the key layouts of the
family's foreign checkpoints (the official code's, timm's). Everything else (the supernet, the
static models, pretrained import, export checks) asks these registries and never tests a
family's name. A block folds its own BatchNorms in `reparameterize()` (`fuse_for_deploy`).

    class TinyFamily(Family):
        space = "tiny"
        builders = {"tiny.stem": lambda spec: Stem(spec["out"]), ...}
        def input_shape(self, spec, batch=1): ...
    register_family(TinyFamily())
"""
from __future__ import annotations

import abc
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
import torch.nn as nn

from search_spaces import ArchError, BlockSpec
from search_spaces.errors import HwnasError


class PretrainedError(HwnasError, ValueError):
    """A checkpoint that cannot be imported into the given model; the message says why and what to do."""


# ---- checkpoint key layouts --------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyPair:
    """One tensor (a whole key) or one module (a key prefix ending in '.') under both names.

    `theirs_shape`: the other layout stores the tensor reshaped (e.g. a LayerScale as (C, 1, 1)
    where ours is (C,)); keys go back and forth with `reshape(theirs_shape)` / `reshape(-1)`.
    """

    ours: str
    theirs: str
    theirs_shape: tuple | None = None


def stage_depths(keys: Iterable[str]) -> tuple[int, ...]:
    """Blocks per stage of a state dict in our (and timm's) naming, `stages.<s>.blocks.<j>.`."""
    depths: dict[int, int] = {}
    for k in keys:
        m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            s, j = int(m.group(1)), int(m.group(2))
            depths[s] = max(depths.get(s, 0), j + 1)
    return tuple(depths.get(s, 0) for s in range(max(depths) + 1)) if depths else ()


@dataclass(frozen=True)
class CheckpointLayout:
    """Another code base's names for a family's static-model tensors; both directions from one table.

    `pairs(depths)` is the table for a model with these blocks per stage: every module or tensor
    whose name differs, as a `KeyPair`. A key maps through its longest prefix in the table (a key
    with no entry keeps its name), so an entry for a module renames everything inside it and
    entries for its parts refine that. The table must be one-to-one in both columns; reading it
    left to right imports a checkpoint (`to_ours`), right to left writes one (`to_theirs`).
    """

    name: str  # "official", "timm", ...
    detect: Callable[[frozenset], bool]  # do these checkpoint keys look like this layout?
    pairs: Callable[[tuple[int, ...]], Iterable[KeyPair]]
    # blocks per stage read from keys in this layout (default: timm's naming, which is ours)
    depths: Callable[[Iterable[str]], tuple[int, ...]] = stage_depths
    skip: tuple[str, ...] = ()  # key suffixes of derived buffers the other code saves; never copied

    def table(self, depths: tuple[int, ...]) -> tuple[dict, dict]:
        """({our prefix: pair}, {their prefix: pair}) for these depths; refuses a table that is not one-to-one."""
        ours, theirs = {}, {}
        for p in self.pairs(tuple(depths)):
            for side, index in ((p.ours, ours), (p.theirs, theirs)):
                if side in index:
                    raise ValueError(f"checkpoint layout {self.name!r}: {side!r} appears twice in its table")
                index[side] = p
        return ours, theirs

    def to_ours(self, sd: Mapping[str, Any]) -> dict:
        """A state dict in this layout -> our static-model key names (derived buffers dropped)."""
        _, theirs = self.table(self.depths(sd))
        out = {}
        for k, v in sd.items():
            if self.skip and k.endswith(self.skip):
                continue
            p, rest = _longest(theirs, k)
            if p is None:
                out[k] = v
                continue
            if p.theirs_shape is not None:
                v = v.reshape(-1)
            out[p.ours + rest] = v
        return out

    def to_theirs(self, sd: Mapping[str, Any]) -> dict:
        """The inverse of `to_ours`: our static model's state dict in this layout."""
        ours, _ = self.table(stage_depths(sd))
        out = {}
        for k, v in sd.items():
            p, rest = _longest(ours, k)
            if p is None:
                out[k] = v
                continue
            if p.theirs_shape is not None:
                v = v.reshape(p.theirs_shape)
            out[p.theirs + rest] = v
        return out


def _longest(index: Mapping[str, KeyPair], key: str):
    """(pair, rest of the key) for the longest entry of `index` that is `key` itself or a prefix of
    it ending at a '.'; (None, key) when there is none."""
    if key in index:
        return index[key], ""
    end = len(key)
    while True:
        end = key.rfind(".", 0, end)
        if end < 0:
            return None, key
        p = index.get(key[:end + 1])
        if p is not None:
            return p, key[end + 1:]


# ---- the family ------------------------------------------------------------------------------------
class Family(abc.ABC):
    """The torch side of one search space. Subclass, set `space` and `builders`, implement
    `input_shape`, and `register_family(MyFamily())`; the rest has working defaults."""

    #: the name of the search space (`search_spaces.get_space(space)`) whose blocks this family builds
    space: ClassVar[str] = ""
    #: `BlockSpec.kind` -> a function building that static block from its spec
    builders: ClassVar[Mapping[str, Callable[[BlockSpec], nn.Module]]] = {}
    #: the key layouts of checkpoints from other code (official, timm) that `supernet.pretrained` imports
    checkpoint_layouts: ClassVar[tuple[CheckpointLayout, ...]] = ()
    #: tensors (by name suffix) that depend on the input resolution: resampled to the shape wanted
    #: (a subnet at another resolution, a checkpoint of another one) instead of sliced first-k;
    #: `fn(tensor, shape, module)`, `module` being the one that will hold the result (or None)
    resample: ClassVar[Mapping[str, Callable[..., torch.Tensor]]] = {}
    #: key prefixes of the classifier, whose size is the number of classes (a checkpoint's head of
    #: another class count is skipped, not an error)
    classifier: ClassVar[tuple[str, ...]] = ("head.fc",)
    #: ops every Core ML program of this family holds (the export check inspects them), and those
    #: every program of its backbone (no head) holds
    coreml_ops: ClassVar[frozenset] = frozenset()
    coreml_backbone_ops: ClassVar[frozenset] = frozenset()
    #: whether an ONNX export of its backbones can take any image size (every shape in the graph
    #: follows the input); otherwise the height and width are those it was exported at
    onnx_dynamic_hw: ClassVar[bool] = False
    #: the output stride of each stage (timm's `feature_info` reductions); None: found by running
    #: the model once on a meta tensor
    stage_reductions: ClassVar[tuple[int, ...] | None] = None
    #: parameter names (substrings) that timm excludes from weight decay (`no_weight_decay()`)
    no_weight_decay: ClassVar[tuple[str, ...]] = ()
    #: reference name -> timm model name, for `hwnas.extract format=timm`
    timm_models: ClassVar[Mapping[str, str]] = {}
    #: the output stride at which the family's attention blocks see their keys: the fewest keys any of them
    #: attends over is (H/s)(W/s) (`attention_keys`); None: the family has no attention
    attention_key_stride: ClassVar[int | None] = None

    def attention_keys(self, input_size) -> int | None:
        """The fewest keys an attention block of this family attends over at input `input_size` (one side, or
        (H, W)); None without attention. One key means a softmax over one element: every query gets the same
        output, and the attention's q/k weights no gradient (docs/accuracy.md, round 21)."""
        if self.attention_key_stride is None:
            return None
        h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        s = self.attention_key_stride
        return max(1, -(-int(h) // s)) * max(1, -(-int(w) // s))

    def out_channels(self, spec: BlockSpec) -> int:
        """The channels a block of this spec outputs (its `out`, else its `dim`)."""
        return spec["out"] if spec.get("out") is not None else spec["dim"]

    def build_block(self, spec: BlockSpec) -> nn.Module:
        return self.builders[spec.kind](spec)

    @abc.abstractmethod
    def input_shape(self, spec: BlockSpec, batch: int = 1) -> tuple[int, ...]:
        """The NCHW shape of the input a block of this family takes (what profiling feeds it)."""

    def resampler(self, name: str) -> Callable[[torch.Tensor, tuple], torch.Tensor] | None:
        """The function that resamples tensor `name` to another shape, or None (it is sliced)."""
        for suffix, fn in self.resample.items():
            if name.endswith(suffix):
                return fn
        return None

    def checkpoint_layout(self, name: str) -> CheckpointLayout:
        for layout in self.checkpoint_layouts:
            if layout.name == name:
                return layout
        raise PretrainedError(f"no {name!r} checkpoint layout for {self.space} (known: "
                              f"{[lay.name for lay in self.checkpoint_layouts] + ['hwnas']})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(space={self.space!r}, kinds={sorted(self.builders)})"


_FAMILIES: dict[str, Family] = {}
_BY_KIND: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make `family` the torch side of space `family.space` (replacing an earlier registration)."""
    if not isinstance(family, Family):
        raise TypeError(f"register_family expects a supernet.Family instance, got {type(family).__name__}")
    if not family.space or not family.builders:
        raise ValueError(f"{type(family).__name__}: set `space` and `builders` before registering it")
    old = _FAMILIES.get(family.space)
    if old is not None:
        for kind in old.builders:
            _BY_KIND.pop(kind, None)
    taken = {k: f.space for k, f in _BY_KIND.items() if k in family.builders and f.space != family.space}
    if taken:
        kind, space = next(iter(taken.items()))
        raise ValueError(f"block kind {kind!r} is already built by family {space!r}")
    _FAMILIES[family.space] = family
    for kind in family.builders:
        _BY_KIND[kind] = family
    return family


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(space: Any) -> Family:
    """The family registered for `space` (a name or a `SearchSpace`); an unknown one is an error listing them."""
    name = space if isinstance(space, str) else space.name
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ArchError("space", f"no supernet family registered for space {name!r} "
                        "(supernet.register_family)", list_families()) from None


def family_of_kind(kind: str) -> Family:
    """The family that builds blocks of this `BlockSpec.kind`."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise ValueError(f"unknown block kind {kind!r}; known: {sorted(_BY_KIND)}") from None


def known_kinds() -> list[str]:
    return sorted(_BY_KIND)


def unregister_family(space: str) -> None:
    """Forget the family of `space` (a plug-in test cleaning up after itself)."""
    family = _FAMILIES.pop(space, None)
    if family is not None:
        for kind in family.builders:
            if _BY_KIND.get(kind) is family:
                del _BY_KIND[kind]
