"""What an architecture *is*, independent of any weights: `Arch`, `BlockSpec`, `SearchSpace`.

Pure Python on purpose (no torch): a search that scores latency and size never builds a model.
"""
from __future__ import annotations

import abc
import copy
import functools
import hashlib
import json
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .errors import HwnasError


class ArchError(HwnasError, ValueError):
    """An architecture that its space cannot build; the message names the field and the allowed values."""

    def __init__(self, field_name: str, problem: str, allowed: Any = None):
        self.field = field_name
        self.allowed = allowed
        msg = f"{field_name}: {problem}"
        if allowed is not None:
            msg += f" (allowed: {_fmt_allowed(allowed)})"
        super().__init__(msg)


def _fmt_allowed(allowed: Any) -> str:
    if isinstance(allowed, (list, tuple, set, frozenset)):
        return "{" + ", ".join(str(a) for a in sorted(allowed, key=str)) + "}" if isinstance(
            allowed, (set, frozenset)) else "[" + ", ".join(str(a) for a in allowed) + "]"
    return str(allowed)


def make_divisible(v: float, divisor: int = 32, min_value: int | None = None) -> int:
    """Next-ViT's `_make_divisible` (official code): round to a multiple, never more than 10 % down."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def canonical(value: Any) -> Any:
    """Plain-data canonical form: tuples become lists, integral floats become ints (3.0 -> 3).

    One arch has one canonical form, so its JSON, its hash and its id do not depend on whether a
    user wrote `3` or `3.0` in a YAML file.
    """
    t = type(value)
    if t is int or t is str or t is bool or value is None:  # the common case, without ABC checks
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


TASKS = ("classify", "backbone")
DEFAULT_TASK = "classify"


@dataclass(frozen=True, eq=False)
class Arch:
    """One architecture of a space, as plain data.

    `stages` is a list of per-stage dicts whose keys the space defines (see each space's docstring).
    `resolution` is the input size the arch is deployed at: an int for square images, or
    `[H, W]` (`input_size` is always `(H, W)`); it is part of the arch because latency, MACs and
    EfficientFormerV2's attention biases depend on it. `task` is what is deployed: `classify`
    (the whole classifier, the default) or `backbone` (stem and stages only: the features a
    detection or segmentation head consumes; no classifier head, so neither its latency nor
    its parameters count).

    The plain-data form leaves defaults out (`task` when `classify`; a square `resolution` is one
    int), so an arch written before these fields existed reads back as itself, with the same id.
    """

    space: str
    stages: tuple
    resolution: Any = 224
    task: str = DEFAULT_TASK

    def __init__(self, space: str, stages: Sequence[Mapping[str, Any]], resolution: Any = 224,
                 task: str = DEFAULT_TASK):
        object.__setattr__(self, "space", str(space))
        object.__setattr__(self, "stages", tuple(canonical(dict(s)) if isinstance(s, Mapping) else s
                                                 for s in stages))
        object.__setattr__(self, "resolution", canonical_resolution(resolution))
        object.__setattr__(self, "task", task)
        # Derived data (JSON, block keys) is computed once per Arch: the search scores the same
        # arch against tables, caches and studies many times. Stages are never mutated in place.
        object.__setattr__(self, "_memo", {})

    # ---- plain data -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        res = self.resolution
        d = {"space": self.space, "resolution": list(res) if isinstance(res, tuple) else res,
             "stages": [dict(s) if isinstance(s, Mapping) else s for s in self.stages]}
        if self.task != DEFAULT_TASK:
            d["task"] = self.task
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Arch":
        fields = ["space", "resolution", "stages", "task"]
        if not isinstance(d, Mapping):
            raise ArchError("arch", f"expected a mapping with keys space, resolution, stages; got {type(d).__name__}")
        unknown = set(d) - {*fields, "id"}
        if unknown:
            raise ArchError(sorted(unknown)[0], "unknown field", fields)
        for k in ("space", "stages"):
            if k not in d:
                raise ArchError(k, "missing field", fields)
        if not isinstance(d["stages"], (list, tuple)):
            raise ArchError("stages", "must be a list of per-stage mappings")
        check_task(d.get("task", DEFAULT_TASK))
        return cls(d["space"], [dict(s) if isinstance(s, Mapping) else s for s in d["stages"]],
                   d.get("resolution", 224), d.get("task", DEFAULT_TASK))

    def to_json(self) -> str:
        js = self._memo.get("json")
        if js is None:
            js = self._memo["json"] = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return js

    @property
    def id(self) -> str:
        """A stable short id: the first 12 hex digits of the SHA-1 of the canonical JSON."""
        return hashlib.sha1(self.to_json().encode()).hexdigest()[:12]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Arch) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        task = "" if self.task == DEFAULT_TASK else f", task={self.task}"
        return f"Arch({self.space}, id={self.id}, resolution={fmt_input(self.input_size)}{task})"

    @property
    def input_size(self) -> tuple[int, int]:
        """The input image size (H, W)."""
        return input_pair(self.resolution)

    @property
    def scope(self) -> str:
        """What a latency table keys its correction and fidelity by: see `scope`."""
        memo = self._memo.get("scope")
        if memo is None:
            default = getattr(_REGISTRY.get(self.space), "default_resolution", 224)
            memo = self._memo["scope"] = scope(self.space, self.task, self.input_size, default)
        return memo

    def with_resolution(self, resolution: Any) -> "Arch":
        """The same arch at another input size (an int, or (H, W)); the task is kept."""
        return Arch(self.space, [dict(s) for s in self.stages], resolution, self.task)

    def with_task(self, task: str) -> "Arch":
        """The same arch deployed as another task (`classify` or `backbone`)."""
        check_task(task)
        return self if task == self.task else Arch(self.space, [dict(s) for s in self.stages], self.resolution, task)

    # ---- derived (delegated to the space, which knows the structure) -------------------------
    def _space(self) -> "SearchSpace":
        return get_space(self.space)

    def layout(self, num_classes: int = 1000) -> "Layout":
        """The blocks of the arch as the torch model nests them; a backbone's layout has no head."""
        memo = ("layout", num_classes)
        if memo not in self._memo:
            lay = self._space().layout(self, num_classes)
            if self.task == "backbone" and lay.head is not None:
                lay = Layout(lay.stem, lay.stages, None)
            self._memo[memo] = lay
        return self._memo[memo]

    def blocks(self, num_classes: int = 1000) -> list["BlockSpec"]:
        """Every deployable block in execution order (stem, stage blocks and, unless the arch is a
        backbone, the head)."""
        memo = ("blocks", num_classes)
        if memo not in self._memo:
            self._memo[memo] = tuple(self.layout(num_classes).blocks())
        return list(self._memo[memo])

    def block_keys(self, num_classes: int = 1000) -> tuple[str, ...]:
        """The latency-table keys of `blocks()`, in the same order (validated, computed once)."""
        memo = ("keys", num_classes)
        if memo not in self._memo:
            self._memo[memo] = tuple(b.key for b in self.blocks(num_classes))
        return self._memo[memo]

    def params(self, num_classes: int = 1000) -> int:
        """Exact count of `nn.Parameter` elements of the torch model of this arch."""
        space = self._space()
        return sum(space.block_params(b) for b in self.blocks(num_classes))

    def macs(self, num_classes: int = 1000) -> int:
        """Multiply-accumulates of conv, linear and attention matmuls (batch 1)."""
        space = self._space()
        return sum(space.block_macs(b) for b in self.blocks(num_classes))


@dataclass(frozen=True)
class BlockSpec:
    """One deployable block with every number that fixes its shape and cost.

    `key` is a stable string (the row key of latency tables): the kind, then the arguments in
    their declared order, e.g. `nextvit.ncb(in=64,out=96,stride=1,hidden=288,hw=56)`.
    """

    kind: str
    args: tuple  # ((name, value), ...) in declaration order

    @classmethod
    def make(cls, kind: str, **args: Any) -> "BlockSpec":
        # Interned: a space has a few hundred distinct blocks, and the search builds the block
        # lists of many thousands of archs, so each spec (and its key string) is made once.
        memo = (kind, tuple(args.items()))
        spec = _INTERNED.get(memo)
        if spec is None:
            spec = _INTERNED[memo] = cls(kind, tuple((k, canonical(v)) for k, v in args.items()))
        return spec

    @functools.cached_property
    def key(self) -> str:
        inner = ",".join(f"{k}={_fmt_value(v)}" for k, v in self.args)
        return f"{self.kind}({inner})"

    def __getitem__(self, name: str) -> Any:
        for k, v in self.args:
            if k == name:
                return v
        raise KeyError(f"{self.kind} has no argument {name!r}")

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def as_dict(self) -> dict:
        return dict(self.args)

    def __repr__(self) -> str:
        return f"BlockSpec({self.key})"


_INTERNED: dict = {}


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(v)


@dataclass(frozen=True)
class Placed:
    """A block at its place: `pos` is the index of the supernet block whose weights it shares."""

    spec: BlockSpec
    pos: int | None = None


@dataclass(frozen=True)
class StageLayout:
    downsample: Placed | None
    blocks: tuple  # tuple[Placed, ...]


@dataclass(frozen=True)
class Layout:
    """The blocks of one arch grouped the way the torch model nests them (`head` is None for a
    backbone: `Arch.layout` of an arch whose task is `backbone`)."""

    stem: Placed
    stages: tuple  # tuple[StageLayout, ...]
    head: Placed | None

    def blocks(self) -> list[BlockSpec]:
        out = [self.stem.spec]
        for st in self.stages:
            if st.downsample is not None:
                out.append(st.downsample.spec)
            out.extend(p.spec for p in st.blocks)
        if self.head is not None:
            out.append(self.head.spec)
        return out


class SearchSpace(abc.ABC):
    """A family of architectures, in pure Python: the choices, the references, sampling,
    validation, the blocks an arch is made of, and what the search needs to walk the space.

    A new family subclasses this, implements the abstract methods and registers a factory with
    `register_space(name, cls)`; its torch side registers a `supernet.Family` under the same name.
    The search sees a space only through `parameters` / `encode` / `decode` (one categorical
    parameter per choice, no Optuna import here) and `slimming_actions`.
    """

    name: str = ""
    reference_names: tuple = ()
    default_resolution: int = 224

    def __init__(self, resolution: Any = None, task: str | None = None):
        self.resolution = canonical_resolution(self.default_resolution if resolution is None else resolution)
        check_resolution(self.resolution, "resolution")
        self.task = DEFAULT_TASK if task is None else task
        check_task(self.task)

    @property
    def input_size(self) -> tuple[int, int]:
        """The deployment input size (H, W) of the archs this space builds."""
        return input_pair(self.resolution)

    @property
    def scope(self) -> str:
        """Its archs' `Arch.scope`: what a latency table keys their correction and fidelity by."""
        return scope(self.name, self.task, self.input_size, self.default_resolution)

    def arch(self, stages: Sequence[Mapping[str, Any]]) -> Arch:
        """An arch of this space at its deployment setting (resolution and task); what the
        built-in spaces' `sample`, `decode`, `min_arch` and the references go through."""
        return Arch(self.name, stages, self.resolution, self.task)

    # ---- what the space holds -----------------------------------------------------------
    @property
    @abc.abstractmethod
    def choices(self) -> list[dict]:
        """Per stage: each field of the stage mapping and the values it may take (for humans;
        `validate` has the last word on combinations)."""

    @abc.abstractmethod
    def _reference_stages(self, name: str) -> list[dict]:
        """The stage mappings of reference `name` (one of `reference_names`)."""

    @abc.abstractmethod
    def max_arch(self) -> Arch:
        """The largest subnet the sandwich rule trains (the teacher of in-place distillation); the
        supernet holds its tensors, and usually nothing more (Next-ViT's NTBs hold more: see
        `search_spaces.nextvit`)."""

    def largest_arch(self) -> Arch:
        """The arch with the most parameters (default: `max_arch()`)."""
        return self.max_arch()

    @abc.abstractmethod
    def min_arch(self) -> Arch:
        """The smallest arch."""

    @abc.abstractmethod
    def sample(self, rng: random.Random) -> Arch:
        """A random valid arch drawn with `rng`."""

    def sample_depth(self, rng: random.Random) -> Arch:
        """A random arch with the max arch's widths and ratios and only its depth drawn with `rng`
        (OFA's elastic-depth phase; `train.depth_slots` trains such archs in the sandwich). A family
        without a notion of depth leaves it undefined."""
        raise NotImplementedError(f"space {self.name!r} defines no sample_depth (the max arch with a random depth)")

    def sample_consistent(self, rng: random.Random) -> Arch:
        """A random arch whose blocks all compute what the max arch's blocks compute, with no
        structural switch (`train.consistent_only` trains only such archs). A family without
        such switches leaves it undefined."""
        raise NotImplementedError(f"space {self.name!r} defines no sample_consistent")

    def min_consistent_arch(self) -> Arch:
        """The smallest arch `sample_consistent` can draw (undefined where it is)."""
        raise NotImplementedError(f"space {self.name!r} defines no min_consistent_arch")

    #: True for the view `consistent_view` returns
    consistent: bool = False
    #: what `train.consistent_only: null` (the default) means for a supernet of this family: train its
    #: consistent archs only. A family that defines `sample_consistent` because its other archs do not
    #: inherit sets it (Next-ViT, docs/accuracy.md round 13)
    trains_consistent_only: bool = False

    def consistent_view(self) -> "SearchSpace":
        """This space restricted to its structurally consistent archs (those `sample_consistent` draws):
        what a search covers when its accuracy comes from a supernet trained on those only
        (`train.consistent_only`). Its `parameters` / `decode` / `encode`, `sample`, `min_arch` and
        `slimming_actions` stay inside them; its archs (name, scope, tables, predictors) are the space's
        own. A family without such archs leaves it undefined."""
        raise NotImplementedError(f"space {self.name!r} defines no consistent archs (sample_consistent)")

    @abc.abstractmethod
    def validate(self, arch: Arch) -> None:
        """Raise `ArchError` naming the field and the allowed values unless the space can build `arch`."""

    @abc.abstractmethod
    def layout(self, arch: Arch, num_classes: int = 1000) -> Layout:
        """The blocks of `arch` (validated first), each placed at the supernet position whose weights it shares."""

    @abc.abstractmethod
    def supernet_layout(self, num_classes: int = 1000, resolution: int | None = None) -> Layout:
        """The blocks the supernet holds (every subnet's block at a position fits in the one there)."""

    @abc.abstractmethod
    def all_blocks(self, num_classes: int = 1000) -> list[BlockSpec]:
        """Every block any arch of the space (at its resolution) can contain: what profiling measures."""

    @abc.abstractmethod
    def block_params(self, spec: BlockSpec) -> int:
        """Exact `nn.Parameter` elements of the torch block of `spec`."""

    @abc.abstractmethod
    def block_macs(self, spec: BlockSpec) -> int:
        """Multiply-accumulates of the block (batch 1)."""

    # ---- what the search needs ------------------------------------------------------------
    @abc.abstractmethod
    def parameters(self) -> dict[str, tuple]:
        """Every searched parameter and its choices, in a fixed order (choices with a single value
        are left out): the categorical parameters a sampler suggests."""

    @abc.abstractmethod
    def decode(self, params: Mapping[str, Any]) -> Arch:
        """The arch `params` describe, repaired to the nearest valid value where a choice is only
        invalid in combination, then validated; `ArchError` when no repair can help."""

    @abc.abstractmethod
    def encode(self, arch: Arch) -> dict[str, Any]:
        """The parameters of `arch`: `decode(encode(arch)) == arch` for every valid arch."""

    def slimming_steps(self, arch: Arch) -> Iterator[tuple[str, list[dict]]]:
        """Candidate one-step reductions of `arch` as (name, stages); they may be invalid or repeat
        (`slimming_actions` keeps the valid, new ones). Default: one searched parameter one choice
        lower, repaired by `decode`; a family overrides it with steps named after its own fields."""
        params = self.encode(arch)
        domain = self.parameters()
        for key, value in params.items():
            for lower in next_lower(value, domain[key]):
                try:
                    cand = self.decode({**params, key: lower})
                except ArchError:
                    continue
                yield f"{key} {value}->{lower}", [dict(s) for s in cand.stages]

    def slimming_actions(self, arch: Arch) -> list[tuple[str, Arch]]:
        """Every valid arch one slimming step below `arch` (the greedy MES search's neighbours),
        named by what the step changes, in a fixed order. A step must make the arch smaller in MACs
        or parameters: a lower Next-ViT r at some widths costs more (its MHCA branch grows)."""
        self.validate(arch)
        out, seen = [], set()
        macs, params = arch.macs(), arch.params()
        for name, stages in self.slimming_steps(arch):
            cand = Arch(arch.space, stages, arch.resolution, arch.task)
            if cand != arch and cand not in seen and self.is_valid(cand) and \
                    (cand.macs() < macs or cand.params() < params):
                seen.add(cand)
                out.append((name, cand))
        return out

    # ---- references ---------------------------------------------------------------------
    def reference(self, name: str) -> Arch:
        stages = self._reference_stages(name)
        return self.arch(stages)

    def references(self) -> dict[str, Arch]:
        return {n: self.reference(n) for n in self.reference_names}

    # ---- common helpers -----------------------------------------------------------------
    def _check_space(self, arch: Arch) -> None:
        if not isinstance(arch, Arch):
            raise ArchError("arch", f"expected an Arch, got {type(arch).__name__}")
        if arch.space != self.name:
            raise ArchError("space", f"arch belongs to space {arch.space!r}, not {self.name!r}", [self.name])
        check_resolution(arch.resolution, "resolution")
        check_task(arch.task)

    def coerce(self, arch: Arch | Mapping | str) -> Arch:
        """An Arch from an Arch, a dict, or a reference name; validated."""
        if isinstance(arch, str):
            if arch not in self.reference_names:
                raise ArchError("arch", f"unknown reference {arch!r}", list(self.reference_names))
            arch = self.reference(arch)
        elif isinstance(arch, Mapping):
            arch = Arch.from_dict(arch)
        self.validate(arch)
        return arch

    def is_valid(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
            return True
        except ArchError:
            return False

    def sample_many(self, n: int, seed: int = 0) -> list[Arch]:
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(n)]

    def __repr__(self) -> str:
        task = "" if self.task == DEFAULT_TASK else f", task={self.task}"
        return f"{type(self).__name__}(resolution={fmt_input(self.input_size)}{task})"


RESOLUTION_STEP = 32
RESOLUTION_RANGE = (32, 1024)


def canonical_resolution(resolution: Any) -> Any:
    """An input size in its one canonical form: an int for a square image, (H, W) otherwise
    (a list or tuple of two equal sides becomes one int). Anything else is kept as given for
    `check_resolution` to reject."""
    resolution = canonical(resolution)
    if isinstance(resolution, list) and len(resolution) == 2:
        h, w = resolution
        return h if h == w and type(h) is int and type(w) is int else (h, w)
    return resolution


def input_pair(resolution: Any) -> tuple[int, int]:
    """(H, W) of a resolution: an int (square) or a pair."""
    return tuple(resolution) if isinstance(resolution, (tuple, list)) else (resolution, resolution)


def fmt_input(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def check_resolution(resolution: Any, field_name: str) -> None:
    # Multiples of 32: every stage then has an integral size, E-MHSA's 1-D pool always sees whole
    # windows, and EfficientFormerV2's stride attention upsamples back to its stage's exact size.
    lo, hi = RESOLUTION_RANGE
    sides = list(resolution) if isinstance(resolution, (tuple, list)) and len(resolution) == 2 else [resolution]
    for side in sides:
        if not isinstance(side, int) or isinstance(side, bool) or not (lo <= side <= hi) or side % RESOLUTION_STEP:
            raise ArchError(field_name, f"{resolution!r} is not a supported input size",
                            f"multiples of {RESOLUTION_STEP} from {lo} to {hi}: one int for a square image, "
                            "or [H, W]")


def check_task(task: Any) -> None:
    if task not in TASKS:
        raise ArchError("task", f"{task!r} is not a task", list(TASKS))


def scope(space: str, task: str, input_size: tuple[int, int], default_resolution: int = 224) -> str:
    """The name a latency table keys a correction, its fidelity and its completeness by.

    A table holds one row per block key (shapes included), so rows of every input size and task
    sit side by side; the correction from a sum of rows to a whole network is fitted per setting.
    A classifier at the space's default 224x224 is the space's name itself (the tables made before
    other settings existed); any other setting is `<space>:<task>@<H>x<W>`.
    """
    if task == DEFAULT_TASK and tuple(input_size) == (default_resolution, default_resolution):
        return space
    return f"{space}:{task}@{fmt_input(input_size)}"


def parse_scope(name: str) -> tuple[str, str | None, tuple[int, int] | None]:
    """(space, task, (H, W)) of a `scope` name; task and size are None for a bare space name."""
    if ":" not in name:
        return name, None, None
    space, _, rest = name.partition(":")
    task, _, size = rest.partition("@")
    h, _, w = size.partition("x")
    return space, task, (int(h), int(w))


def hw_value(h: int, w: int) -> Any:
    """A block's spatial size as a `BlockSpec` value: one int when square (the keys tables have
    always had), `"<H>x<W>"` otherwise."""
    return h if h == w else f"{h}x{w}"


def hw_pair(value: Any) -> tuple[int, int]:
    """(h, w) of a `BlockSpec` spatial size written by `hw_value`."""
    if isinstance(value, str):
        h, _, w = value.partition("x")
        return int(h), int(w)
    return int(value), int(value)


def check_keys(stage: Any, index: int, keys: Iterable[str]) -> dict:
    keys = list(keys)
    if not isinstance(stage, Mapping):
        raise ArchError(f"stages[{index}]", f"must be a mapping with keys {keys}")
    unknown = [k for k in stage if k not in keys]
    if unknown:
        raise ArchError(f"stages[{index}].{unknown[0]}", "unknown field", keys)
    missing = [k for k in keys if k not in stage]
    if missing:
        raise ArchError(f"stages[{index}].{missing[0]}", "missing field", keys)
    return dict(stage)


def check_choice(value: Any, allowed: Sequence, field_name: str) -> None:
    if (type(value) is not int and type(value) is not float) or value not in allowed:
        raise ArchError(field_name, f"{value!r} is not allowed", list(allowed))


def check_count(stages: Sequence, n: int) -> None:
    if not isinstance(stages, (list, tuple)) or len(stages) != n:
        got = len(stages) if isinstance(stages, (list, tuple)) else type(stages).__name__
        raise ArchError("stages", f"expected {n} stages, got {got}", f"exactly {n}")


_REGISTRY: dict[str, Callable[..., SearchSpace]] = {}
_CACHE: dict[tuple, SearchSpace] = {}


def register_space(name: str, factory: Callable[..., SearchSpace]) -> None:
    """Make `get_space(name)` build its space with `factory(resolution=...)` (a `SearchSpace`
    subclass); a family's torch side registers a `supernet.Family` under the same name."""
    _REGISTRY[name] = factory
    for key in [k for k in _CACHE if k[0] == name]:
        del _CACHE[key]


def unregister_space(name: str) -> None:
    """Forget space `name` (a plug-in test cleaning up after itself)."""
    _REGISTRY.pop(name, None)
    for key in [k for k in _CACHE if k[0] == name]:
        del _CACHE[key]


def list_spaces() -> list[str]:
    return sorted(_REGISTRY)


def get_space(name: str, resolution: Any = None, task: str | None = None) -> SearchSpace:
    """The search space registered as `name`, deploying its archs at `resolution` (an int, or
    (H, W); default the space's own) as `task` (`classify`, the default, or `backbone`); an
    unknown name raises an error listing the names."""
    if name not in _REGISTRY:
        raise ArchError("space", f"unknown search space {name!r}", list_spaces())
    resolution = canonical_resolution(resolution)
    key = (name, resolution, task)
    if key not in _CACHE:
        _CACHE[key] = _REGISTRY[name](resolution=resolution) if task is None else \
            _REGISTRY[name](resolution=resolution, task=task)
    return _CACHE[key]


def next_lower(value: Any, choices: Iterable) -> list:
    """The next smaller choice (a one-element list), or [] at the minimum: one slimming step."""
    smaller = sorted(c for c in choices if c < value)
    return smaller[-1:]


def with_change(stages: Sequence[Mapping], s: int, **change: Any) -> list[dict]:
    """A copy of the stage mappings with stage `s` updated by `change`."""
    out = [copy.deepcopy(dict(st)) for st in stages]
    out[s].update(change)
    return out


def iter_unique(specs: Iterable[BlockSpec]) -> Iterator[BlockSpec]:
    seen = set()
    for s in specs:
        if s.key not in seen:
            seen.add(s.key)
            yield s
