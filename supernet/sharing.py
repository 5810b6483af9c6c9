"""The weight-sharing supernet: one set of tensors (the space's largest blocks), any subnet's forward.

The sharing rule, stated once: a subnet block placed at supernet position p (the `Placed.pos` the
space assigns -- first-k blocks) uses the first k entries along every dimension of that supernet
block's tensors (first-k channels, first-k hidden units, first-k heads), with two exceptions:

- **Concatenated branches keep their meaning.** Where a block's output channels are a
  concatenation of branches (Next-ViT's NTB: E-MHSA channels, then MHCA channels; the block says
  so with `out_branches`), the supernet holds each branch's largest range one after the other, and
  a subnet takes the first k of *each* range: an NTB with r·W E-MHSA and (1-r)·W MHCA channels uses
  channels [0, rW) and [W_max, W_max + (1-r)W) of a supernet NTB that holds W_max E-MHSA and M_max
  MHCA channels. This applies to every tensor dimension that indexes those channels -- in the block
  itself (its `channel_dims["out"]`: the NTB's norm2, MLP input columns, MLP output rows) and in the
  block that reads them next (its `channel_dims["in"]`: the next NCB's input projection, the
  head's norm and classifier columns). So channel c of an NTB's E-MHSA branch is the same channel
  in every subnet, whatever its r or width, and so is channel c of its MHCA branch. (Where the
  official structure passes channels through an identity -- a PatchEmbed between equal widths --
  the next block's tensors see them in the subnet's order, as they always did.)
- **Tensors tied to the input resolution** are resampled by the family instead
  (`Family.resample`: EfficientFormerV2's attention-bias tables).

How: the supernet holds the static modules of `space.supernet_layout()`. For a subnet it runs
the *same static block classes* (shape-only "skeletons" on the meta device, cached per block
spec), handing them views of the shared tensors (copies where a tensor takes two branch ranges).
So `extract(arch)` -- the static model with those slices copied in -- computes exactly what the
supernet computes, and gradients of any subnet flow into the shared tensors; BatchNorm statistics
of branch-range tensors are written back after the block runs. No elastic layer classes exist, so
nothing of this reaches an export. When training, the trainable slices come from one
`_SharedSlices` call per forward, which copies them out in one piece and adds their gradients
straight into the shared tensors' `.grad` (what plain slicing computes, at a fraction of the kernel
launches; tests/test_supernet.py checks the two agree).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.autograd.function import once_differentiable

import search_spaces
from search_spaces import Arch, ArchError, BlockSpec, SearchSpace

from .family import get_family
from .model import DeployModel, Model, ModelError, build_block, check_input, drop_path_rates


# Modules whose weight and bias autocast casts to its low-precision dtype (conv and linear).
_AUTOCAST_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def first_k(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The sharing rule without branches: the leading `shape` corner of a shared tensor (a view,
    differentiable)."""
    plan = share_plan("tensor", tensor.shape, torch.Size(shape))
    return tensor if plan is None else tensor[plan]


def share_plan(name: str, held: torch.Size, shape: torch.Size, resampled: bool = False,
               branches: dict | None = None):
    """How a subnet tensor of `shape` comes out of the shared one of shape `held`, decided once per
    arch: None (the whole tensor), a tuple with one entry per dimension, or "resize" (a tensor the
    family resamples, `resampled`: EfficientFormerV2's attention biases at another resolution).

    A tuple entry is a slice (first-k) or, for a dimension that indexes concatenated branches
    (`branches`: {dim: (the supernet's branch widths, the subnet's)}), a tuple of slices: the
    first k of each branch's range."""
    if len(shape) != len(held):
        raise RuntimeError(f"supernet tensor {name} of shape {tuple(held)} cannot hold {tuple(shape)}")
    branches = branches or {}
    if shape == held and not branches:
        return None
    if resampled and held[1:] != shape[1:]:
        return "resize"
    plan = []
    for d, (n, m) in enumerate(zip(shape, held)):
        if d in branches:
            held_w, sub_w = branches[d]
            if len(held_w) != len(sub_w) or sum(held_w) != m or sum(sub_w) != n or \
                    any(a > b for a, b in zip(sub_w, held_w)):
                raise RuntimeError(f"supernet tensor {name}: dimension {d} holds branches of {tuple(held_w)} "
                                   f"channels, which cannot hold branches of {tuple(sub_w)}")
            segs, start = [], 0
            for a, b in zip(sub_w, held_w):
                if a and segs and segs[-1].stop == start:  # adjacent ranges: one slice
                    segs[-1] = slice(segs[-1].start, start + a)
                elif a:
                    segs.append(slice(start, start + a))
                start += b
            plan.append(segs[0] if len(segs) == 1 and segs[0].start == 0 else tuple(segs))
        elif n > m:
            raise RuntimeError(f"supernet tensor {name} of shape {tuple(held)} cannot hold {tuple(shape)}")
        else:
            plan.append(slice(0, n))
    if all(isinstance(p, slice) and p.stop == m for p, m in zip(plan, held)):
        return None
    return tuple(plan)


def is_branched(plan) -> bool:
    """Whether a plan takes two or more ranges of some dimension (the subnet tensor is no view)."""
    return isinstance(plan, tuple) and any(isinstance(p, tuple) for p in plan)


def plan_pieces(plan) -> list[tuple[tuple, tuple]]:
    """The rectangular parts of a sliced plan: [(index into the shared tensor, index into the
    subnet's)], one per combination of branch ranges."""
    per_dim = []
    for p in plan:
        out, offset = [], 0
        for sl in (p if isinstance(p, tuple) else (p,)):
            n = sl.stop - sl.start
            out.append((sl, slice(offset, offset + n)))
            offset += n
        per_dim.append(out)
    return [tuple(zip(*combo)) for combo in itertools.product(*per_dim)]


def gather(tensor: torch.Tensor, plan) -> torch.Tensor:
    """The subnet's tensor by a sliced plan (differentiable; a view unless the plan is branched)."""
    if plan is None:
        return tensor
    x = tensor[tuple(p if isinstance(p, slice) else slice(None) for p in plan)]
    for d, p in enumerate(plan):
        if isinstance(p, tuple):
            x = torch.cat([x.narrow(d, sl.start, sl.stop - sl.start) for sl in p], dim=d)
    return x


@torch.no_grad()
def scatter_(tensor: torch.Tensor, plan, value: torch.Tensor) -> None:
    """Write a subnet's tensor into the shared one at its place (the inverse of `gather`)."""
    if plan is None:
        tensor.copy_(value)
    elif is_branched(plan):
        for src, dst in plan_pieces(plan):
            tensor[src].copy_(value[dst])
    else:
        tensor[plan].copy_(value)


@dataclass(eq=False)
class _Slot:
    """One tensor a skeleton needs: where it lives in the skeleton and in the supernet."""

    skel_table: dict  # the skeleton submodule's _parameters or _buffers
    attr: str
    src_table: dict  # the supernet submodule's _parameters or _buffers (looked up at run time,
    name: str        # since .to(device) replaces buffers)
    plan: object  # see share_plan
    resample: object = None  # plan == "resize": the family's fn(shared tensor, shape, module)
    owner: object = None  # the skeleton module the tensor goes into (what `resample` resamples for)
    shape: tuple = ()  # the subnet's shape of the tensor
    cast: bool = False  # a conv/linear weight or bias: autocast would run it in low precision
    is_param: bool = True
    branched: bool = False  # takes two or more ranges of some dimension: a copy, not a view
    pieces: list = field(default_factory=list)  # branched: plan_pieces(plan)
    _src: object = None  # the shared tensor `_view` was cut from, and its memory address
    _ptr: int = -1
    _view: object = None

    def tensor(self) -> torch.Tensor:
        """The subnet's tensor, differentiable w.r.t. the shared one (plain slicing)."""
        t = self.src_table[self.attr]
        if self.plan is None:
            return t
        if self.plan == "resize":
            return self.resample(t, self.shape, self.owner)
        return gather(t, self.plan) if self.branched else t[self.plan]

    def view(self, t: torch.Tensor) -> torch.Tensor:
        """The first-k corner of shared tensor `t` as a plain (detached) view, cached for as long as
        `t` is the same tensor over the same memory (`.to()`, `load_state_dict(assign=True)` or a
        `.data` swap all make a new one). In-place updates -- the optimizer's, BatchNorm's running
        statistics -- go through the view to the shared tensor. A branched plan gives a fresh copy
        (its BatchNorm statistics are written back by `_Step.run`)."""
        if self.branched:
            return gather(t.detach(), self.plan)
        ptr = t.data_ptr()
        if t is not self._src or ptr != self._ptr:
            self._src, self._ptr, self._view = t, ptr, t.detach()[self.plan]
        return self._view

    def grad_parts(self, grad: torch.Tensor, g: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(part of the shared tensor's .grad, part of the subnet tensor's gradient) pairs to add."""
        if self.branched:
            return [(grad[src], g[dst]) for src, dst in self.pieces]
        return [(grad[self.plan], g)]


class _SharedSlices(torch.autograd.Function):
    """The trainable first-k tensors of the active subnet, all at once.

    Forward: one flat copy of every first-k corner (a handful of kernels), handed out as contiguous
    views -- already in autocast's low-precision dtype for conv/linear weights, as autocast would cast
    them anyway. Backward: each gradient is added straight into the first-k corner of its shared
    tensor's `.grad` (one foreach call; shared tensors without a `.grad` get zeros, allocated in one
    piece). Plain slicing instead costs a full-size zero gradient, a copy and an accumulation per
    tensor and subnet. On a GPU, where small subnets are launch-bound, that made EfficientFormerV2-S0's
    forward+backward 1.16-1.20x its static model's at batch 64 on an H200; with this it is 1.01-1.05x
    (experiments/results/train_throughput*.md).

    Consequence: the shared parameters' `.grad` is written directly, not through autograd's
    accumulation, so per-parameter gradient hooks and `torch.autograd.grad(loss, supernet_params)`
    see none of these gradients, and torch's DistributedDataParallel (which relies on those hooks)
    would not all-reduce them; `hwnas.training` all-reduces `.grad` itself.
    """

    @staticmethod
    def forward(ctx, slots, casts, low, *params):
        views = [s.view(p) for s, p in zip(slots, params)]
        out = [None] * len(views)
        for cast in (True, False):
            idx = [i for i, c in enumerate(casts) if c == cast]
            if not idx:
                continue
            group = [views[i] for i in idx]
            flat = _flatten_dense_tensors(group)  # a copy, except for one contiguous tensor: a view
            if cast:
                flat = flat.to(low)
            elif len(group) == 1:
                flat = flat.clone()  # never hand out the shared tensor's own memory
            for i, v in zip(idx, _unflatten_dense_tensors(flat, group)):
                out[i] = v
        ctx.slots, ctx.params = slots, params
        return tuple(out)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        used = [(s, p, g) for s, p, g in zip(ctx.slots, ctx.params, grads) if g is not None]
        fresh = [p for _, p, _ in used if p.grad is None]
        if fresh and fresh[0].device.type == "cpu":
            # One large zeroed block costs the CPU allocator fresh pages (page faults) on every
            # step; tensor-sized blocks come back from its free lists.
            for p in fresh:
                p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
        else:  # one allocation and one kernel for all of them
            for dtype in {p.dtype for p in fresh}:
                group = [p for p in fresh if p.dtype == dtype]
                flat = torch.zeros(sum(p.numel() for p in group), dtype=dtype, device=group[0].device)
                for p, g in zip(group, _unflatten_dense_tensors(flat, group)):
                    p.grad = g
        if used:
            parts = [part for s, p, g in used for part in s.grad_parts(p.grad, g)]
            torch._foreach_add_([a for a, _ in parts], [b for _, b in parts])
        return (None, None, None) + (None,) * len(ctx.params)


@dataclass
class _Step:
    path: str  # the module path in the static model of the arch ("stages.2.blocks.3")
    holder: str  # the module path of the supernet block it shares ("stages.2.blocks.9")
    skeleton: nn.Module
    slots: list
    drop_path: float

    def __post_init__(self):
        # Buffers taken as copies (branch ranges): BatchNorm updates them in training, so they go back.
        self.write_back = [s for s in self.slots if s.branched and not s.is_param]

    def tensors(self) -> dict:
        return {s.name: s.tensor() for s in self.slots}

    def run(self, x: torch.Tensor, tensors: list, training: bool, call=None) -> torch.Tensor:
        """The block on `x` with the subnet's `tensors`; `call(skeleton, x)` runs a part of it
        instead of its forward (the head's norm, its `forward_head`)."""
        for s, t in zip(self.slots, tensors):
            s.skel_table[s.attr] = t
        sk = self.skeleton
        if sk.training != training:
            sk.train(training)
        if training:
            sk.set_drop_path(self.drop_path)
        out = sk(x) if call is None else call(sk, x)
        if training:
            for s in self.write_back:
                scatter_(s.src_table[s.attr], s.plan, s.skel_table[s.attr])
        return out


class Supernet(Model):
    """Holds the largest model of a space; `set_active(arch)` picks the subnet `forward` computes."""

    def __init__(self, space: SearchSpace, num_classes: int = 1000, resolution: int | None = None,
                 drop_path_rate: float = 0.0):
        self.space = space
        self.family = get_family(space)
        self.num_classes = num_classes
        res = search_spaces.canonical_resolution(space.resolution if resolution is None else resolution)
        if not isinstance(res, int):
            raise ModelError(f"a supernet holds one square input size, not {res}: build it square (its subnets "
                             "run at any size; set_active(arch) resamples what depends on the size)")
        self.resolution = res
        super().__init__(space.supernet_layout(num_classes, self.resolution))
        self.drop_path_rate = drop_path_rate
        n = sum(len(st.blocks) for st in self.layout.stages)
        rates = drop_path_rates(n, drop_path_rate)
        self._pos_rate, i = {}, 0
        for s, st in enumerate(self.layout.stages):
            for j, _ in enumerate(st.blocks):
                self._pos_rate[(s, j)] = rates[i]
                i += 1
        # The branches of each supernet block's input (the output of the block before it), e.g.
        # (512, 256) after a Next-ViT NTB: the dimensions that read them hold one range per branch.
        self._held_in: dict[int, tuple | None] = {}
        prev = None
        for st_layout, stage in zip(self.layout.stages, self.stages):
            for m in ([stage.downsample] if st_layout.downsample is not None else []) + list(stage.blocks):
                self._held_in[id(m)] = getattr(prev, "out_branches", None) if prev is not None else None
                prev = m
        self._held_in[id(self.head)] = getattr(prev, "out_branches", None)
        self._held_in[id(self.stem)] = None
        self._skeletons: dict[str, nn.Module] = {}
        self._step_cache: dict[tuple, _Step] = {}  # (path, spec key, position, ...): a block's step, built once
        self._steps: list[_Step] = []
        self._stage_ends: list[int] = []  # per stage: the index in _steps of its last step
        self._active_layout = None
        self.active_arch: Arch | None = None
        self.set_active(space.max_arch().with_resolution(self.resolution).with_task("classify"))

    # ---- choosing the subnet -------------------------------------------------------------
    def set_active(self, arch: Arch) -> "Supernet":
        if not isinstance(arch, Arch):
            raise ArchError("arch", f"expected an Arch, got {type(arch).__name__}")
        if arch.space != self.space.name:
            raise ArchError("space", f"this supernet is of space {self.space.name!r}, the arch of {arch.space!r}",
                            [self.space.name])
        layout = arch.layout(self.num_classes)
        placed = [("stem", layout.stem.spec, "stem", 0.0)]
        ends = []
        for s, st in enumerate(layout.stages):
            if st.downsample is not None:
                placed.append((f"stages.{s}.downsample", st.downsample.spec, f"stages.{s}.downsample", 0.0))
            for j, p in enumerate(st.blocks):
                placed.append((f"stages.{s}.blocks.{j}", p.spec, f"stages.{s}.blocks.{p.pos}",
                               self._pos_rate[(s, p.pos)]))
            ends.append(len(placed) - 1)
        if layout.head is not None:  # a backbone arch: no head, the forward returns the stage outputs
            placed.append(("head", layout.head.spec, "head", 0.0))
        steps, in_branches = [], None
        for path, spec, holder, rate in placed:
            steps.append(self._step(path, spec, holder, rate, in_branches))
            in_branches = getattr(steps[-1].skeleton, "out_branches", None)
        self._steps = steps
        self._stage_ends = ends
        self._active_layout = layout
        self.active_arch = arch
        return self

    def _skeleton(self, spec: BlockSpec) -> nn.Module:
        sk = self._skeletons.get(spec.key)
        if sk is None:
            with torch.device("meta"):
                sk = build_block(spec, init=False)
            self._skeletons[spec.key] = sk
        return sk

    def _step(self, path: str, spec: BlockSpec, holder: str, drop_path: float, in_branches) -> _Step:
        # Building a step walks the skeleton's tensors (about 2 ms a block); a sandwich step switches
        # subnets 4 times, and random subnets share most of their blocks, so each is built once.
        key = (path, spec.key, holder, drop_path, in_branches)
        step = self._step_cache.get(key)
        if step is None:
            step = self._step_cache[key] = self._build_step(path, spec, holder, drop_path, in_branches)
        return step

    def _branch_dims(self, path: str, spec: BlockSpec, sk: nn.Module, holder: nn.Module, in_branches) -> dict:
        """{tensor name: {dim: (the supernet's branch widths, the subnet's)}} for the dimensions of
        this block's tensors that index concatenated branches (its input's or its own output's)."""
        dims = getattr(sk, "channel_dims", {})
        out: dict = {}
        for side, held, sub in (("in", self._held_in[id(holder)], in_branches),
                                ("out", getattr(holder, "out_branches", None), getattr(sk, "out_branches", None))):
            if held is None and sub is None:
                continue
            if held is None or sub is None or len(held) != len(sub):
                raise RuntimeError(f"supernet block {path} ({spec.key}): its {side}put channels are "
                                   f"{'branches ' + str(sub) if sub else 'one range'} in the subnet but "
                                   f"{'branches ' + str(held) if held else 'one range'} in the supernet")
            if side not in dims:
                raise RuntimeError(f"{type(sk).__name__} ({spec.key}) {'reads' if side == 'in' else 'writes'} "
                                   f"concatenated branches but does not name the dimensions of its tensors "
                                   f"that index them (channel_dims[{side!r}])")
            for name, d in dims[side].items():
                out.setdefault(name, {})[d] = (tuple(held), tuple(sub))
        return out

    def _build_step(self, path: str, spec: BlockSpec, holder_path: str, drop_path: float, in_branches) -> _Step:
        sk = self._skeleton(spec)
        holder = self.get_submodule(holder_path)
        branches = self._branch_dims(path, spec, sk, holder, in_branches)
        slots = []
        named = [(n, t, True) for n, t in sk.named_parameters()] + \
                [(n, t, False) for n, t in sk.named_buffers()]
        for name, t, is_param in named:
            owner_name, _, attr = name.rpartition(".")
            skel_owner = sk.get_submodule(owner_name)
            try:
                src_owner = holder.get_submodule(owner_name)
            except AttributeError:
                src_owner = None
            table = None if src_owner is None else (src_owner._parameters if is_param else src_owner._buffers)
            if table is None or table.get(attr) is None:
                raise RuntimeError(f"supernet block {holder_path} ({spec.key}) has no tensor {name}; "
                                   "the space's supernet_layout does not cover this block")
            resample = self.family.resampler(name)
            plan = share_plan(name, table[attr].shape, t.shape, resampled=resample is not None,
                              branches=branches.get(name))
            skel_table = skel_owner._parameters if is_param else skel_owner._buffers
            cast = is_param and attr in ("weight", "bias") and isinstance(skel_owner, _AUTOCAST_MODULES)
            branched = is_branched(plan)
            slots.append(_Slot(skel_table, attr, table, name, plan, resample if plan == "resize" else None,
                               skel_owner, tuple(t.shape), cast, is_param, branched,
                               plan_pieces(plan) if branched else []))
        return _Step(path, holder_path, sk, slots, drop_path)

    def shared_places(self, arch: Arch | None = None) -> dict[str, tuple[str, object, tuple]]:
        """Where each tensor of `arch`'s static model (default: the active arch) lives in the
        supernet: {static key: (supernet key, plan, the static tensor's shape)} -- the plan as
        `share_plan` returns it (`gather` / `scatter_` apply it)."""
        previous = self.active_arch
        if arch is not None and arch != previous:
            self.set_active(arch)
        out = {f"{step.path}.{s.name}": (f"{step.holder}.{s.name}", s.plan, s.shape)
               for step in self._steps for s in step.slots}
        if previous is not None and previous != self.active_arch:
            self.set_active(previous)
        return out

    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.double() make new tensors: drop the cached views of the old ones now,
        # rather than hold the old memory until each slot's next forward notices.
        for step in getattr(self, "_step_cache", {}).values():
            for s in step.slots:
                s._src, s._ptr, s._view = None, -1, None
        return super()._apply(fn, recurse)

    # ---- running it ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The active subnet's output: logits, or for a backbone arch its stage outputs."""
        if self._active_layout.head is None:
            return self._forward_stages(x, range(len(self._stage_ends)))[1]
        check_input(x)
        return self._run_steps(x, self._steps)

    def _run_steps(self, x: torch.Tensor, steps: list, take: dict | None = None, call=None):
        """Run `steps` on `x` (the last one through `call` when given); with `take` (step index ->
        stage), also collect the outputs of those steps."""
        tensors = self._subnet_tensors(x.device.type, steps)
        i, feats = 0, []
        for k, step in enumerate(steps):
            n = len(step.slots)
            x = step.run(x, tensors[i:i + n], self.training, call if k == len(steps) - 1 else None)
            i += n
            if take and k in take:
                feats.append(x)
        return (x, feats) if take is not None else x

    # timm's model API on the active subnet (Model's methods call these)
    def _layout(self):
        return self._active_layout

    def _forward_stages(self, x, take=(), stop=None):
        check_input(x)
        last = self._stage_ends[-1 if stop is None else stop]
        take = {self._stage_ends[s]: s for s in take}
        return self._run_steps(x, self._steps[:last + 1], take)

    def _head_step(self, what: str) -> _Step:
        if self._active_layout.head is None:
            raise ModelError(f"{what}: the active arch is a backbone (no head); set_active a classify arch")
        return self._steps[-1]

    def _head_norm(self, x):
        return self._run_steps(x, [self._head_step("forward_features")], call=lambda sk, y: sk.norm(y))

    def _head_tail(self, x, pre_logits: bool):
        return self._run_steps(x, [self._head_step("forward_head")],
                               call=lambda sk, y: sk.forward_head(y, pre_logits))

    @property
    def out_indices(self) -> tuple:
        return tuple(range(len(self._stage_ends))) if self._stage_ends else ()

    @out_indices.setter
    def out_indices(self, value) -> None:  # Model.__init__ sets it; the supernet returns every stage
        pass

    def get_classifier(self):
        raise ModelError("get_classifier: the supernet's classifier is shared by every subnet; extract a "
                         "subnet (supernet.extract(arch)) to get or replace its classifier")

    def reset_classifier(self, num_classes: int, global_pool=None) -> None:
        raise ModelError("reset_classifier: the supernet's classifier is shared by every subnet; build the "
                         "supernet with num_classes=..., or extract a subnet and reset its classifier")

    def _plain_tensors(self, device_type: str, steps: list | None = None) -> list:
        """What `_subnet_tensors` computes, by plain differentiable slicing: the reference the tests
        compare `_SharedSlices` with, and the baseline of experiments/train_throughput.py."""
        return [s.tensor() for step in (self._steps if steps is None else steps) for s in step.slots]

    def _subnet_tensors(self, device_type: str, steps: list | None = None) -> list:
        """Every slot's tensor of `steps` (default: the active subnet's) for this forward, in step
        order (see `_SharedSlices`)."""
        grad = torch.is_grad_enabled()
        out, shared, where = [], [], []
        for step in self._steps if steps is None else steps:
            for s in step.slots:
                t = s.src_table[s.attr]
                if s.plan is None:
                    out.append(t)
                elif s.plan == "resize":
                    out.append(s.resample(t, s.shape, s.owner))
                elif grad and t.requires_grad:
                    where.append(len(out))
                    shared.append((s, t))
                    out.append(None)
                else:
                    out.append(s.view(t))
        if shared:
            low = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
            slots = tuple(s for s, _ in shared)
            casts = tuple(low is not None and s.cast and t.dtype == torch.float32 for s, t in shared)
            for i, t in zip(where, _SharedSlices.apply(slots, casts, low, *(t for _, t in shared))):
                out[i] = t
        return out

    # ---- leaving the supernet ---------------------------------------------------------------
    @torch.no_grad()
    def extract(self, arch: Arch | None = None, out_indices=None) -> DeployModel:
        """The plain model of `arch` (default: the active one) with its shared weights copied in
        (a backbone arch: the features-only model, returning the stages `out_indices`)."""
        previous = self.active_arch
        if arch is not None and arch != previous:
            self.set_active(arch)
        arch = self.active_arch
        state = {f"{step.path}.{name}": t.detach().clone() for step in self._steps
                 for name, t in step.tensors().items()}
        with torch.device("meta"):  # no allocation or init: every tensor comes from `state`
            model = DeployModel(arch, self.num_classes, init=False, out_indices=out_indices)
        model.load_state_dict(state, strict=True, assign=True)
        model.train(self.training)
        if previous is not None and previous != arch:
            self.set_active(previous)
        return model


def build_supernet(space: SearchSpace | str, num_classes: int = 1000, resolution: int | None = None,
                   drop_path_rate: float = 0.0) -> Supernet:
    """The elastic supernet of a space (its largest model), active on the max arch."""
    if isinstance(space, str):
        space = search_spaces.get_space(space)
    return Supernet(space, num_classes, resolution, drop_path_rate)


