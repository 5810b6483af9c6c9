"""Static, deployable models: one block per `BlockSpec`, nested as stem -> stages -> head.

Nothing here knows about weight sharing; these are the modules that get exported, measured and
shipped. The supernet runs exactly these block classes on slices of its shared tensors.

A model speaks timm's model API, so code written for timm's Next-ViT and EfficientFormerV2 works
unchanged: `forward_features` (stem, stages and the final norm, as timm's), `forward_head(x,
pre_logits=False)`, `reset_classifier(n)`, `get_classifier()`, `num_features`, `feature_info`,
`forward_intermediates(x, indices=...)`, `no_weight_decay()`. The model of a *backbone* arch
(`arch.task == "backbone"`, what `build_model(arch, features_only=True)` builds) has no head and
returns the outputs of its stages (`out_indices`; strides 4/8/16/32 for the built-in families),
as timm's `features_only=True` model does.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

import search_spaces
from search_spaces import Arch, BlockSpec, Layout
from search_spaces.errors import HwnasError

from .family import family_of_kind
from .layers import trunc_normal_init

INPUT_MULTIPLE = 32


class ModelError(HwnasError, ValueError):
    """A model asked for something its structure does not have (an input size, a head, an index)."""


def build_block(spec: BlockSpec, init: bool = True) -> nn.Module:
    """One static block, what a latency table measures, built by the family registered for its
    kind (`supernet.Family`). Unknown kinds raise a clear error."""
    block = family_of_kind(spec.kind).build_block(spec)
    if init:
        trunc_normal_init(block)
    return block


def block_input_shape(spec: BlockSpec, batch: int = 1) -> tuple[int, ...]:
    """The input tensor shape a block expects (NCHW)."""
    return family_of_kind(spec.kind).input_shape(spec, batch)


def drop_path_rates(n: int, rate: float) -> list[float]:
    """Linearly increasing stochastic-depth rates over n blocks, as both papers do."""
    if n <= 1:
        return [0.0] * n
    return [rate * i / (n - 1) for i in range(n)]


class FeatureInfo(list):
    """timm's `feature_info`: one dict per stage output (`num_chs`, `reduction`, `module`, `index`).

    A list of all stages (what timm's classifier models hold) with the accessors of timm's
    `FeatureInfo` (what its `features_only` models hold), which answer for `out_indices`:
    `channels()`, `reduction()`, `module_name()`, `get(key, idx)`, `get_dicts(keys, idx)`.
    """

    def __init__(self, info: Sequence[dict], out_indices: Sequence[int] | None = None):
        super().__init__(info)
        self.out_indices = tuple(range(len(info))) if out_indices is None else tuple(out_indices)

    def get(self, key: str, idx=None):
        if idx is None:
            return [self[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self[i][key] for i in idx]
        return self[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx=None):
        which = self.out_indices if idx is None else (idx if isinstance(idx, (tuple, list)) else [idx])
        out = [dict(self[i]) if keys is None else {k: self[i][k] for k in keys} for i in which]
        return out if idx is None or isinstance(idx, (tuple, list)) else out[0]

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)


def take_indices(num_stages: int, indices=None) -> list[int]:
    """timm's `feature_take_indices`: None -> every stage, an int n -> the last n, a sequence ->
    those stages (negative ones count from the end); sorted, each once."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ModelError(f"indices={indices}: the last-n form takes 1 to {num_stages} (this model has "
                             f"{num_stages} stages)")
        return list(range(num_stages - indices, num_stages))
    out = []
    for i in indices:
        j = num_stages + i if i < 0 else i
        if not isinstance(j, int) or not 0 <= j < num_stages:
            raise ModelError(f"stage index {i} is out of range: this model has stages 0 to {num_stages - 1}")
        out.append(j)
    if not out:
        raise ModelError("no stage index given: pass indices=None (every stage), an int or a list of stages")
    return sorted(set(out))


def check_input(x: torch.Tensor) -> None:
    """Inputs are NCHW with sides multiples of 32 (every stage then has whole cells)."""
    if x.dim() != 4:
        raise ModelError(f"expected an NCHW image batch, got a tensor of shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if not isinstance(h, int):  # traced with dynamic shapes: nothing to check here
        return
    if h % INPUT_MULTIPLE or w % INPUT_MULTIPLE:
        raise ModelError(f"input size {h}x{w}: both sides must be multiples of {INPUT_MULTIPLE} "
                         f"(resize or pad the image, e.g. to {-(-h // 32) * 32}x{-(-w // 32) * 32})")


class Stage(nn.Module):
    def __init__(self, downsample: nn.Module | None, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(self.downsample(x))


class Model(nn.Module):
    """A plain PyTorch model of one layout: `stem`, `stages[i].downsample`, `stages[i].blocks[j]`,
    `head` (None for a backbone's layout), with timm's model API."""

    def __init__(self, layout: Layout, init: bool = True, out_indices: Sequence[int] | None = None):
        super().__init__()
        self.stem = build_block(layout.stem.spec, init)
        self.stages = nn.Sequential(*[
            Stage(build_block(st.downsample.spec, init) if st.downsample is not None else None,
                  [build_block(p.spec, init) for p in st.blocks])
            for st in layout.stages])
        self.head = build_block(layout.head.spec, init) if layout.head is not None else None
        self.layout = layout
        self.out_indices = tuple(take_indices(len(layout.stages), out_indices))

    # ---- the forward -------------------------------------------------------------------------
    @property
    def features_only(self) -> bool:
        """True for a backbone (no head): `forward` returns the stage outputs at `out_indices`."""
        return self._layout().head is None

    def forward(self, x):
        if self.features_only:
            return self._forward_stages(x, self.out_indices)[1]
        check_input(x)
        return self.head(self.stages(self.stem(x)))

    def _forward_stages(self, x, take: Sequence[int] = (), stop: int | None = None):
        """(the output of the last stage run, [outputs of the stages in `take`]); runs the stages up
        to `stop` (default: all)."""
        check_input(x)
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in take:
                feats.append(x)
            if stop is not None and i >= stop:
                break
        return x, feats

    def _head_norm(self, x):
        return self._need_head("forward_features").norm(x)

    def _head_tail(self, x, pre_logits: bool):
        return self._need_head("forward_head").forward_head(x, pre_logits)

    def _layout(self) -> Layout:
        return self.layout

    def _need_head(self, what: str) -> nn.Module:
        if self.head is None:
            raise ModelError(f"{what}: this is a features-only model (a backbone: no final norm, no "
                             "classifier); its forward returns the stage outputs. Build it with "
                             "supernet.build_model(arch, features_only=False) for a classifier.")
        if not hasattr(self.head, "forward_head"):
            raise ModelError(f"{what}: the head of this family ({type(self.head).__name__}) does not split "
                             "into norm / forward_head (timm's API); call the model itself")
        return self.head

    # ---- timm's model API ----------------------------------------------------------------------
    def forward_features(self, x):
        """Stem, stages and the final norm (where timm's `forward_features` ends)."""
        return self._head_norm(self._forward_stages(x)[0])

    def forward_head(self, x, pre_logits: bool = False):
        """Global average pool and the classifier (pooled features with `pre_logits=True`)."""
        return self._head_tail(x, pre_logits)

    def forward_intermediates(self, x, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's `forward_intermediates`: the outputs of the stages `indices` (None: all, an int n:
        the last n, a list: those) and, unless `intermediates_only`, the final features (after the
        norm, as `forward_features`). `norm=True` puts the last stage's intermediate through the
        norm too; `stop_early` skips the stages after the last one asked for."""
        if output_fmt != "NCHW":
            raise ModelError(f"output_fmt={output_fmt!r}: these models produce NCHW feature maps only")
        n = len(self._layout().stages)
        take = take_indices(n, indices)
        stop = max(take) if stop_early or intermediates_only else None
        x, feats = self._forward_stages(x, take, stop)
        if norm and n - 1 in take:
            feats[-1] = self._head_norm(feats[-1])
        if intermediates_only:
            return feats
        if stop is None or stop == n - 1:
            x = self._head_norm(x)
        return x, feats

    @property
    def feature_info(self) -> FeatureInfo:
        """Per stage output: channels (`num_chs`), output stride (`reduction`) and the module
        (`stages.<i>`), from the layout (no forward)."""
        layout = self._layout()
        family = family_of_kind(layout.stem.spec.kind)
        reductions = family.stage_reductions or self._measured_reductions()
        info = []
        for i, st in enumerate(layout.stages):
            last = st.blocks[-1].spec if st.blocks else st.downsample.spec
            info.append({"num_chs": family.out_channels(last), "reduction": reductions[i],
                         "module": f"stages.{i}", "index": i})
        return FeatureInfo(info, self.out_indices if self.features_only else None)

    def _measured_reductions(self) -> list[int]:
        layout = self._layout()
        h, w = block_input_shape(layout.stem.spec)[-2:]
        with torch.device("meta"):
            meta = Model(layout, init=False)
        with torch.no_grad():
            _, feats = meta._forward_stages(torch.empty(1, 3, h, w, device="meta"), range(len(layout.stages)))
        return [h // f.shape[-2] for f in feats]

    @property
    def num_features(self) -> int:
        """Channels of the final features (timm's `num_features`, also `head_hidden_size`)."""
        return self.feature_info[-1]["num_chs"]

    @property
    def head_hidden_size(self) -> int:
        return self.num_features

    def get_classifier(self):
        """The classifier layer (EfficientFormerV2: its two heads, as timm returns them)."""
        return self._need_head("get_classifier").get_classifier()

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for `num_classes` (0: none, `forward_head` returns pooled features)."""
        if global_pool not in (None, "avg"):
            raise ModelError(f"global_pool={global_pool!r}: these models pool by average only ('avg')")
        if num_classes < 0:
            raise ModelError(f"num_classes={num_classes}: give 0 (no classifier) or more")
        self._need_head("reset_classifier").reset_classifier(int(num_classes))
        self.num_classes = int(num_classes)
        arch = getattr(self, "arch", None)
        if arch is not None:  # the layout (latency keys, fingerprints) follows the new head
            self.layout = arch.layout(self.num_classes)

    def no_weight_decay(self) -> set[str]:
        """Parameter names timm keeps out of weight decay (EfficientFormerV2's attention biases)."""
        keys = family_of_kind(self._layout().stem.spec.kind).no_weight_decay
        return {n for n, _ in self.named_parameters() if any(k in n for k in keys)}

    # ---- training helpers ----------------------------------------------------------------------
    def blocks(self) -> list[nn.Module]:
        return [b for st in self.stages for b in st.blocks]

    def set_drop_path(self, rate: float) -> None:
        blocks = self.blocks()
        for b, r in zip(blocks, drop_path_rates(len(blocks), rate)):
            b.set_drop_path(r)


class DeployModel(Model):
    """The static model of one arch: a classifier, or -- for a backbone arch -- the stage outputs
    at `out_indices` (timm's `features_only=True`)."""

    def __init__(self, arch: Arch, num_classes: int = 1000, drop_path_rate: float = 0.0, init: bool = True,
                 out_indices: Sequence[int] | None = None):
        search_spaces.get_space(arch.space)  # an unknown space: the error that lists the spaces
        super().__init__(arch.layout(num_classes), init, out_indices)
        self.arch = arch
        self.num_classes = 0 if arch.task == "backbone" else num_classes
        self.set_drop_path(drop_path_rate)


def build_model(arch: Arch, num_classes: int = 1000, drop_path_rate: float = 0.0,
                features_only: bool | None = None, out_indices: Sequence[int] | None = None) -> DeployModel:
    """The plain model of `arch`, freshly initialised (trunc-normal std .02, as the papers).

    `features_only=True` builds the backbone (no head; its forward returns the outputs of the
    stages `out_indices`, default all: strides 4/8/16/32); None follows the arch's task."""
    if features_only is not None:
        arch = arch.with_task("backbone" if features_only else "classify")
    return DeployModel(arch, num_classes, drop_path_rate, out_indices=out_indices)


@torch.no_grad()
def zero_init_residual(model: nn.Module) -> int:
    """Zero the last layer of every residual branch of the blocks that have such an init
    (`zero_init_residual()`: Next-ViT's NCB and NTB), so each starts as the identity (Goyal et al.'s
    zero-gamma, ReZero, Fixup: a deep residual net then trains from a shallow one's start); an
    EfficientFormerV2 block's branches already start at LayerScale's 1e-5. Training-only: the
    architecture is unchanged. Returns how many blocks were so initialised."""
    n = 0
    for m in model.modules():
        if callable(getattr(m, "zero_init_residual", None)):
            m.zero_init_residual()
            n += 1
    return n


@torch.no_grad()
def fuse_for_deploy(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm (and EfficientFormerV2's LayerScale) into the layer beside it, in place.

    Every block folds itself (`reparameterize()`, as timm's blocks do): this calls it on the
    outermost modules that have one -- the model's blocks, or a lone block (a latency-table row).
    Outputs are unchanged (within float rounding); the model is put in eval mode, since folding
    uses the running statistics. The head's norm folds into the classifier, so a folded model's
    `forward_features` no longer ends with that norm (its logits are unchanged).
    """
    model.eval()
    _reparameterize(model)
    return model


def _reparameterize(module: nn.Module) -> None:
    if callable(getattr(module, "reparameterize", None)):
        module.reparameterize()  # the block folds its own parts
        return
    for child in list(module.children()):
        _reparameterize(child)
