"""Static, deployable models: one block per `BlockSpec`, nested as stem -> stages -> head.

Nothing here knows about weight sharing; these are the modules that get exported, measured and
shipped. The supernet runs exactly these block classes on slices of its shared tensors.
"""
from __future__ import annotations

import torch
import torch.nn as nn

import search_spaces
from search_spaces import Arch, BlockSpec, Layout

from .family import family_of_kind
from .layers import trunc_normal_init


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


class Stage(nn.Module):
    def __init__(self, downsample: nn.Module | None, blocks: list[nn.Module]):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(self.downsample(x))


class Model(nn.Module):
    """A plain PyTorch model of one layout: `stem`, `stages[i].downsample`, `stages[i].blocks[j]`, `head`."""

    def __init__(self, layout: Layout, init: bool = True):
        super().__init__()
        self.stem = build_block(layout.stem.spec, init)
        self.stages = nn.Sequential(*[
            Stage(build_block(st.downsample.spec, init) if st.downsample is not None else None,
                  [build_block(p.spec, init) for p in st.blocks])
            for st in layout.stages])
        self.head = build_block(layout.head.spec, init)
        self.layout = layout

    def forward_features(self, x):
        return self.stages(self.stem(x))

    def forward(self, x):
        return self.head(self.forward_features(x))

    def blocks(self) -> list[nn.Module]:
        return [b for st in self.stages for b in st.blocks]

    def set_drop_path(self, rate: float) -> None:
        blocks = self.blocks()
        for b, r in zip(blocks, drop_path_rates(len(blocks), rate)):
            b.set_drop_path(r)


class DeployModel(Model):
    """The static model of one arch."""

    def __init__(self, arch: Arch, num_classes: int = 1000, drop_path_rate: float = 0.0, init: bool = True):
        space = search_spaces.get_space(arch.space)
        super().__init__(space.layout(arch, num_classes), init)
        self.arch = arch
        self.num_classes = num_classes
        self.set_drop_path(drop_path_rate)


def build_model(arch: Arch, num_classes: int = 1000, drop_path_rate: float = 0.0) -> DeployModel:
    """The plain model of `arch`, freshly initialised (trunc-normal std .02, as the papers)."""
    return DeployModel(arch, num_classes, drop_path_rate)


@torch.no_grad()
def fuse_for_deploy(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm (and EfficientFormerV2's LayerScale) into the layer beside it, in place.

    Every block folds itself (`reparameterize()`, as timm's blocks do): this calls it on the
    outermost modules that have one -- the model's blocks, or a lone block (a latency-table row).
    Outputs are unchanged (within float rounding); the model is put in eval mode, since folding
    uses the running statistics.
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
