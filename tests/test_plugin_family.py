"""A third model family, defined only here, goes through the whole pipeline: registered with
`search_spaces.register_space` and `supernet.register_family`, then profiled on ONNX Runtime,
trained as a supernet, searched (4 trials, real supernet evaluator) and extracted to `pt` and
`onnx` -- with no change to hwnas itself.

TinyNet: a stride-2 conv stem, two stages of inverted-residual blocks (1x1 expand, depthwise 3x3,
1x1 project, BatchNorm + ReLU) with an elastic width, depth and expansion, a strided conv between
the stages, and a pooled linear head. Small enough to profile its whole space in seconds.
"""
from __future__ import annotations

import random
from typing import Any, Mapping

import pytest
import torch
import torch.nn as nn
import yaml

import hwnas
import search_spaces
import supernet
from search_spaces import Arch, ArchError, BlockSpec, Layout, Placed, SearchSpace, StageLayout
from supernet.layers import fold_conv_bn

NAME = "tinynet"
RES = 32
CHOICES = [dict(width=(16, 24, 32), depth=(1, 2), expansion=(2, 4)),
           dict(width=(32, 48, 64), depth=(1, 2, 3), expansion=(2, 4))]
KEYS = ("width", "depth", "expansion")


# ---- the pure-Python side: what can be built -------------------------------------------------------
class TinySpace(SearchSpace):
    name = NAME
    reference_names = ("tiny_s", "tiny_l")
    default_resolution = RES
    choices = CHOICES

    def _reference_stages(self, name: str) -> list[dict]:
        if name == "tiny_s":
            return [dict(width=16, depth=1, expansion=2), dict(width=32, depth=2, expansion=2)]
        if name == "tiny_l":
            return [{k: max(c[k]) for k in KEYS} for c in CHOICES]
        raise ArchError("arch", f"unknown reference {name!r}", list(self.reference_names))

    def max_arch(self) -> Arch:
        return self.reference("tiny_l")

    def min_arch(self) -> Arch:
        return Arch(NAME, [{k: min(c[k]) for k in KEYS} for c in CHOICES], self.resolution)

    def sample(self, rng: random.Random) -> Arch:
        return Arch(NAME, [{k: rng.choice(c[k]) for k in KEYS} for c in CHOICES], self.resolution)

    def validate(self, arch: Arch) -> None:
        self._check_space(arch)
        search_spaces.check_count(arch.stages, len(CHOICES))
        for s, stage in enumerate(arch.stages):
            st = search_spaces.check_keys(stage, s, KEYS)
            for k in KEYS:
                search_spaces.check_choice(st[k], CHOICES[s][k], f"stages[{s}].{k}")

    def layout(self, arch: Arch, num_classes: int = 1000) -> Layout:
        self.validate(arch)
        return self._layout(arch.stages, arch.resolution, num_classes)

    def supernet_layout(self, num_classes: int = 1000, resolution: int | None = None) -> Layout:
        return self._layout(self.max_arch().stages, resolution or self.resolution, num_classes)

    def _layout(self, stages, res: int, num_classes: int) -> Layout:
        w0, w1 = stages[0]["width"], stages[1]["width"]
        stem = Placed(BlockSpec.make("tinynet.stem", out=w0, hw=res))
        out = []
        for s, st in enumerate(stages):
            hw = res // 2 ** (s + 1)
            down = Placed(BlockSpec.make("tinynet.down", **{"in": w0}, out=w1, hw=hw * 2)) if s else None
            blocks = tuple(Placed(BlockSpec.make("tinynet.block", dim=st["width"],
                                                 hidden=st["width"] * st["expansion"], hw=hw), j)
                           for j in range(st["depth"]))
            out.append(StageLayout(down, blocks))
        head = Placed(BlockSpec.make("tinynet.head", **{"in": w1}, classes=num_classes, hw=res // 4))
        return Layout(stem, tuple(out), head)

    def all_blocks(self, num_classes: int = 1000) -> list[BlockSpec]:
        specs = {b.key: b for a in self._every_stage_combination() for b in a.blocks(num_classes)}
        return list(specs.values())

    def _every_stage_combination(self):
        import itertools
        for st0 in itertools.product(*CHOICES[0].values()):
            for st1 in itertools.product(*CHOICES[1].values()):
                yield Arch(NAME, [dict(zip(KEYS, st0)), dict(zip(KEYS, st1))], self.resolution)

    def block_params(self, spec: BlockSpec) -> int:
        if spec.kind == "tinynet.stem":
            return 3 * spec["out"] * 9 + 2 * spec["out"]
        if spec.kind == "tinynet.block":
            d, h = spec["dim"], spec["hidden"]
            return d * h + 2 * h + h * 9 + 2 * h + h * d + 2 * d
        if spec.kind == "tinynet.down":
            return spec["in"] * spec["out"] * 9 + 2 * spec["out"]
        return spec["in"] * spec["classes"] + spec["classes"]

    def block_macs(self, spec: BlockSpec) -> int:
        if spec.kind == "tinynet.stem":
            return (spec["hw"] // 2) ** 2 * 3 * spec["out"] * 9
        if spec.kind == "tinynet.block":
            d, h = spec["dim"], spec["hidden"]
            return spec["hw"] ** 2 * (2 * d * h + 9 * h)
        if spec.kind == "tinynet.down":
            return (spec["hw"] // 2) ** 2 * spec["in"] * spec["out"] * 9
        return spec["in"] * spec["classes"]

    # what the search needs
    def parameters(self) -> dict[str, tuple]:
        return {f"s{s}.{k}": c[k] for s, c in enumerate(CHOICES) for k in KEYS}

    def decode(self, params: Mapping[str, Any]) -> Arch:
        arch = Arch(NAME, [{k: params[f"s{s}.{k}"] for k in KEYS} for s in range(len(CHOICES))], self.resolution)
        self.validate(arch)
        return arch

    def encode(self, arch: Arch) -> dict[str, Any]:
        self.validate(arch)
        return {f"s{s}.{k}": st[k] for s, st in enumerate(arch.stages) for k in KEYS}


# ---- the torch side: the blocks, registered as a family -----------------------------------------------
class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def reparameterize(self):
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv, self.bn = fold_conv_bn(self.conv, self.bn), nn.Identity()


class Block(nn.Module):
    """A block: `set_drop_path` (stochastic depth; none here) and `reparameterize` (fold its BNs)."""

    def set_drop_path(self, rate: float):
        pass

    def reparameterize(self):
        for m in list(self.modules()):
            if isinstance(m, ConvBN):
                m.reparameterize()


class Stem(Block):
    def __init__(self, out: int):
        super().__init__()
        self.conv = ConvBN(3, out, 3, stride=2)

    def forward(self, x):
        return self.conv(x)


class InvertedResidual(Block):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.expand = ConvBN(dim, hidden)
        self.dw = ConvBN(hidden, hidden, 3, groups=hidden)
        self.project = ConvBN(hidden, dim, act=False)

    def forward(self, x):
        return x + self.project(self.dw(self.expand(x)))


class Down(Block):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBN(cin, cout, 3, stride=2, act=False)

    def forward(self, x):
        return self.conv(x)


class Head(Block):
    def __init__(self, cin: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class TinyFamily(supernet.Family):
    space = NAME
    builders = {"tinynet.stem": lambda s: Stem(s["out"]), "tinynet.block": lambda s: InvertedResidual(s["dim"], s["hidden"]),
                "tinynet.down": lambda s: Down(s["in"], s["out"]), "tinynet.head": lambda s: Head(s["in"], s["classes"])}

    def input_shape(self, spec: BlockSpec, batch: int = 1) -> tuple[int, ...]:
        chs = 3 if spec.kind == "tinynet.stem" else spec.get("dim", spec.get("in"))
        return (batch, chs, spec["hw"], spec["hw"])


@pytest.fixture(scope="module")
def family():
    search_spaces.register_space(NAME, TinySpace)
    supernet.register_family(TinyFamily())
    yield search_spaces.get_space(NAME)
    supernet.unregister_family(NAME)
    search_spaces.unregister_space(NAME)


def test_the_family_is_consistent(family):
    """Its analytic sizes are its torch models', and a subnet extracted from its supernet computes
    what the supernet computes (the sharing rule applies to it unchanged)."""
    space = family
    assert NAME in search_spaces.list_spaces() and NAME in supernet.list_families()
    net = supernet.build_supernet(space, num_classes=10).eval()
    x = torch.randn(2, 3, RES, RES)
    for arch in [space.min_arch(), space.max_arch(), *space.sample_many(4, 0)]:
        model = net.extract(arch)
        assert sum(p.numel() for p in model.parameters()) == arch.params(10)
        with torch.no_grad():
            y = net.set_active(arch)(x)
            assert torch.allclose(model(x), y, atol=1e-6)
            supernet.fuse_for_deploy(model)
            assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
            assert torch.allclose(model(x), y, atol=1e-5)
        assert space.decode(space.encode(arch)) == arch
    assert space.slimming_actions(space.max_arch())  # the generic slimming steps work for it too


def test_profile_search_and_extract(family, tmp_path):
    from hwnas.config import compose
    from hwnas.extract import extract
    from hwnas.latency import LatencyTable, get_backend
    from hwnas.latency.profiler import run_profile
    from hwnas.search.app import compose_config, run
    from hwnas.train import train_supernet

    space = family
    # 1. profile: every block of the space and 2 + 2 whole networks for the correction, on ONNX Runtime
    backend = get_backend("onnxruntime_cpu", warmup=2, repeats=10, min_runs=5, max_seconds=0.2)
    table_path = tmp_path / "tables" / "tiny.csv"
    table = run_profile(backend, space, table_path, n_fit=2, progress=False)
    assert {b.key for b in space.all_blocks()} <= set(table.rows)
    assert LatencyTable.load(table_path, target="onnxruntime_cpu", space=NAME).predict(space.max_arch()) > 0

    # 2. a supernet, briefly trained on digits (1 epoch of 4 steps), saved as a checkpoint
    tcfg = compose("train", [f"space.name={NAME}", f"space.resolution={RES}", "data=digits", "train.epochs=1",
                             "train.max_steps_per_epoch=4", "train.batch_size=32", "train.num_random=1",
                             "train.eval_calib_batches=0", "train.progress=false"])
    ckpt = train_supernet(tcfg, tmp_path / "train")

    # 3. a 4-trial search on that table, with the supernet evaluator
    cfg = compose_config(["+target=onnxruntime_cpu", f"target.table={table_path}", f"space.name={NAME}",
                          f"space.resolution={RES}", f"checkpoint={ckpt}", "search.n_trials=4",
                          "search.population_size=4", "evaluator=supernet", "evaluator.recalib_batches=2",
                          "evaluator.batch_size=64",
                          "progress=false"])
    out = run(cfg, tmp_path / "search")
    assert len(out["records"]) == 4
    picks = yaml.safe_load((tmp_path / "search" / "picks.yaml").read_text())
    assert set(picks) == {"tiny_s", "tiny_l"} and picks["tiny_l"]["pick"] is not None

    # 4. extract the pick to pt and onnx from the supernet checkpoint; each format checked on its runtime
    manifest = extract(run=str(tmp_path / "search"), pick="tiny_l", checkpoint=str(ckpt), formats=["pt", "onnx"],
                       out_dir=tmp_path / "export")
    assert manifest["checks_passed"] and set(manifest["formats"]) == {"pt", "onnx"}
    arch = Arch.from_dict(picks["tiny_l"]["pick"]["arch"])
    assert manifest["arch_id"] == arch.id and manifest["params"] == arch.params(10) == manifest["torch_params"]
    assert hwnas.load(tmp_path / "export").arch == arch
