"""The Next-ViT search space: NHS stages `(NCB×N + NTB×1)×L` with elastic N, L, r, widths, MLP ratios.

Stage fields (stages are 0-based here; the paper's stage 1 is `stages[0]`):

- `stages[0]` (no NTB, as in the paper): `n`, `ncb_width`, `ncb_mlp_ratio`.
- `stages[1..3]`: `n` NCBs then one NTB, the pattern repeated `l` times (`l` is elastic in
  `stages[2]` only, NHS's own scaling knob: Next-ViT-S/B/L are l = 2/4/6); `ncb_width`,
  `ntb_width` (the NTB's output channels), `r` (the NTB shrink ratio: the share of channels that go
  through E-MHSA; r = 1 is a pure E-MHSA block with no MHCA branch), `ncb_mlp_ratio`,
  `ntb_mlp_ratio`. Every r in {0.5, 0.75, 1} is valid at every NTB width (Next-ViT Table 8 is
  Next-ViT-S with r = 0.5 / 0.75 / 1 in every NTB).

Weight sharing (how a subnet finds its weights in the supernet): first-k blocks -- NCB q of pattern
p in `stages[2]` is supernet block 5p+q, the NTB of pattern p is block 5p+4 -- and first-k channels
in every tensor, except that the channels an NTB concatenates keep their branch: stated once, in
`supernet.sharing`.

The supernet's NTBs (`supernet_layout`) hold the largest E-MHSA branch (r = 1 at the largest width:
W_max channels) and the largest MHCA branch (r = 0.5: W_max/2 channels). Their concatenation is held
as two ranges, W_max E-MHSA channels then W_max/2 MHCA channels, in every tensor that reads or
writes it (the NTB's norm2 and MLP, the next block's input projection, the head), and a subnet
takes the first rW of the one and the first (1-r)W of the other. So the supernet is not one arch
of the space: its NTBs are 1.5·W_max wide where they concatenate, and the 1000-class supernet holds
72.9 M parameters (Next-ViT-L has 57.9 M; with only Next-ViT-L's branches and the NTB input
projections it held 59.4 M).

`max_arch()` stays Next-ViT-L (r = 0.75): it is what the sandwich rule trains as its largest subnet
and the teacher of in-place distillation, and what official weights fill (the leading range of
each branch). It is no longer the arch with the most parameters -- r = 1 everywhere at full width
is larger (`largest_arch()`), and it has no MHCA branch at all, so no single arch covers every
shared tensor. Training stays sound because every entry of every shared tensor belongs to some arch
the sandwich's random subnets draw (r is drawn uniformly at every width, so the E-MHSA channels
beyond 0.75·W are trained by r = 1 subnets and the MHCA channels beyond 0.25·W by r = 0.5 ones),
each channel means the same thing in every subnet that uses it, and the teacher is the paper's own
architecture.
"""
from __future__ import annotations

import random
from typing import Any, Iterator, Mapping

from .core import (Arch, ArchError, BlockSpec, Layout, Placed, SearchSpace, StageLayout,
                   check_choice, check_count, check_keys, hw_pair, hw_value, input_pair, iter_unique,
                   make_divisible, next_lower, register_space, with_change)

HEAD_DIM = 32
STEM_CHS = (64, 32, 64)
SR_RATIOS = (8, 4, 2, 1)  # per stage; stages[0] has no NTB so 8 is never used

# The elastic choices. Every set contains the paper's value; every maximum is Next-ViT-L's.
CHOICES: list[dict[str, tuple]] = [
    dict(n=(1, 2, 3), ncb_width=(64, 96), ncb_mlp_ratio=(2, 3)),
    dict(n=(1, 2, 3), l=(1,), ncb_width=(128, 160, 192), ntb_width=(128, 160, 192, 224, 256),
         r=(0.5, 0.75, 1.0), ncb_mlp_ratio=(2, 3), ntb_mlp_ratio=(1.5, 2)),
    dict(n=(1, 2, 3, 4), l=(1, 2, 3, 4, 5, 6), ncb_width=(256, 320, 384),
         ntb_width=(256, 320, 384, 448, 512), r=(0.5, 0.75, 1.0), ncb_mlp_ratio=(2, 3),
         ntb_mlp_ratio=(1.5, 2)),
    dict(n=(1, 2), l=(1,), ncb_width=(512, 640, 768), ntb_width=(512, 640, 768, 896, 1024),
         r=(0.5, 0.75, 1.0), ncb_mlp_ratio=(2, 3), ntb_mlp_ratio=(1.5, 2)),
]
STAGE0_KEYS = ("n", "ncb_width", "ncb_mlp_ratio")
STAGE_KEYS = ("n", "l", "ncb_width", "ntb_width", "r", "ncb_mlp_ratio", "ntb_mlp_ratio")
PAPER_R = 0.75


def ntb_split(width: int, r: float) -> tuple[int, int]:
    """(E-MHSA channels, MHCA channels) of an NTB, exactly as the official code splits them."""
    mhsa = make_divisible(int(width * r), HEAD_DIM)
    return mhsa, width - mhsa


def max_branches(stage: int) -> tuple[int, int]:
    """(E-MHSA, MHCA) channels the supernet's NTBs of this stage hold: the largest of each branch
    over every width and r of the stage (r = 1 and r = 0.5 at the largest width)."""
    splits = [ntb_split(w, r) for w in CHOICES[stage]["ntb_width"] for r in CHOICES[stage]["r"]]
    return max(m for m, _ in splits), max(c for _, c in splits)


class NextViTSpace(SearchSpace):
    name = "nextvit"
    reference_names = ("nextvit_s", "nextvit_b", "nextvit_l")
    choices = CHOICES
    # a supernet trained on every arch leaves Next-ViT-S/B 55-60 points under training alone (31-35 %); on
    # the consistent ones, 0.95 / 0.68 points at 32 epochs (docs/accuracy.md, rounds 10, 13, 14): the default recipe
    trains_consistent_only = True

    # ---- references -------------------------------------------------------------------
    def _reference_stages(self, name: str) -> list[dict]:
        ls = {"nextvit_s": 2, "nextvit_b": 4, "nextvit_l": 6}
        if name not in ls:
            raise ArchError("arch", f"unknown reference {name!r}", list(self.reference_names))
        return [
            dict(n=3, ncb_width=96, ncb_mlp_ratio=3),
            dict(n=3, l=1, ncb_width=192, ntb_width=256, r=0.75, ncb_mlp_ratio=3, ntb_mlp_ratio=2),
            dict(n=4, l=ls[name], ncb_width=384, ntb_width=512, r=0.75, ncb_mlp_ratio=3, ntb_mlp_ratio=2),
            dict(n=2, l=1, ncb_width=768, ntb_width=1024, r=0.75, ncb_mlp_ratio=3, ntb_mlp_ratio=2),
        ]

    def max_arch(self) -> Arch:
        """Next-ViT-L: the sandwich rule's largest subnet (see the module docstring)."""
        return self.reference("nextvit_l")

    def largest_arch(self) -> Arch:
        """The arch with the most parameters and MACs: Next-ViT-L with r = 1 in every NTB."""
        return Arch(self.name, [dict(st, r=1.0) if "r" in st else st for st in self.max_arch().stages],
                    self.resolution)

    def min_arch(self) -> Arch:
        stages = [dict(n=1, ncb_width=64, ncb_mlp_ratio=2)]
        for s in (1, 2, 3):
            c = CHOICES[s]
            w = min(c["ntb_width"])
            stages.append(dict(n=1, l=1, ncb_width=min(c["ncb_width"]), ntb_width=w,
                               r=min(c["r"]), ncb_mlp_ratio=min(c["ncb_mlp_ratio"]),
                               ntb_mlp_ratio=min(c["ntb_mlp_ratio"])))
        return self.arch(stages)

    def sample(self, rng: random.Random) -> Arch:
        stages = [{k: rng.choice(c[k]) for k in (STAGE0_KEYS if s == 0 else STAGE_KEYS)}
                  for s, c in enumerate(CHOICES)]
        return self.arch(stages)

    def sample_depth(self, rng: random.Random) -> Arch:
        """Next-ViT-L's widths, ratios and r, with every stage's NCB count `n` and repetition count `l`
        drawn (`n` only in stage 0)."""
        stages = []
        for s, st in enumerate(self.max_arch().stages):
            st = dict(st, n=rng.choice(CHOICES[s]["n"]))
            if "l" in st:
                st["l"] = rng.choice(CHOICES[s]["l"])
            stages.append(st)
        return self.arch(stages)

    # ---- structural consistency (experimental) ---------------------------------------------
    def consistent_triples(self, s: int, l: int = 1) -> list[tuple[int, int, float]]:
        """The (ncb_width, ntb_width, r) of stage `s` (1-3) whose NTB needs no input projection (its
        E-MHSA width equals its input width, as in every official Next-ViT) and, where the pattern
        repeats (`l` > 1), whose NTB changes the width so the next NCB projects its input too."""
        c = CHOICES[s]
        return [(n, w, r) for n in c["ncb_width"] for w in c["ntb_width"] for r in c["r"]
                if ntb_split(w, r)[0] == n and not (l > 1 and w == n)]

    def is_consistent(self, arch: Arch) -> bool:
        """True when every block of `arch` computes what the same block of the max arch computes, with
        no projection skipped or added (docs/accuracy.md, "Next-ViT: the cause"): an NTB whose input
        width differs from its E-MHSA width runs an input projection that Next-ViT-L's NTBs skip, and a
        stride-1 NCB after an NTB of its own width skips the projection Next-ViT-L's NCBs run, so the
        shared weights after them see differently scaled inputs in the two kinds of subnet."""
        return all((st["ncb_width"], st["ntb_width"], st["r"]) in self.consistent_triples(s, st["l"])
                   for s, st in enumerate(arch.stages) if s > 0)

    def min_consistent_arch(self) -> Arch:
        """The smallest arch for which `is_consistent` holds (the sandwich's smallest subnet under
        `train.consistent_only`): `min_arch` with each stage's smallest consistent NTB."""
        stages = [dict(st) for st in NextViTSpace.min_arch(self).stages]
        for s in (1, 2, 3):
            n, w, r = min(self.consistent_triples(s), key=lambda t: (t[1], t[0]))
            stages[s].update(ncb_width=n, ntb_width=w, r=r)
        return self.arch(stages)

    def sample_consistent(self, rng: random.Random) -> Arch:
        """A random arch for which `is_consistent` holds: every key drawn as `sample` draws it, except
        each stage's (ncb_width, ntb_width, r), drawn uniformly from `consistent_triples`."""
        stages = []
        for s, c in enumerate(CHOICES):
            st = {k: rng.choice(c[k]) for k in (STAGE0_KEYS if s == 0 else STAGE_KEYS)}
            if s > 0:
                st["ncb_width"], st["ntb_width"], st["r"] = rng.choice(self.consistent_triples(s, st["l"]))
            stages.append(st)
        return self.arch(stages)

    def consistent_view(self) -> "ConsistentNextViTSpace":
        view = self.__dict__.get("_consistent_view")
        if view is None:
            view = self.__dict__["_consistent_view"] = ConsistentNextViTSpace(self.resolution, self.task)
        return view

    # ---- validation ----------------------------------------------------------------------
    def validate(self, arch: Arch) -> None:
        self._check_space(arch)
        check_count(arch.stages, 4)
        for s, stage in enumerate(arch.stages):
            keys = STAGE0_KEYS if s == 0 else STAGE_KEYS
            st = check_keys(stage, s, keys)
            for k in keys:
                check_choice(st[k], CHOICES[s][k], f"stages[{s}].{k}")

    # ---- structure -----------------------------------------------------------------------
    def _stage_hw(self, input_size: tuple[int, int], s: int) -> tuple:
        """(input size of the stage's first block, size of every later block) for stage s, as
        `BlockSpec` values (`hw_value`)."""
        h, w = (side // 2 ** (s + 2) for side in input_size)
        first = (h, w) if s == 0 else (2 * h, 2 * w)
        return hw_value(*first), hw_value(h, w)

    def layout(self, arch: Arch, num_classes: int = 1000) -> Layout:
        self.validate(arch)
        return self._layout(arch.stages, arch.input_size, num_classes, supernet=False)

    def supernet_layout(self, num_classes: int = 1000, resolution=None) -> Layout:
        """The blocks the supernet holds: Next-ViT-L's, with NTBs that hold both largest branches.

        Each NTB holds E-MHSA on `max_branches(s)[0]` channels and MHCA on `max_branches(s)[1]`
        (so its `out` is their sum: the concatenation held as two ranges), an MLP as wide as the
        largest subnet's, and an input projection (1x1 conv + BN): Next-ViT's own NTBs need none
        (their input width equals their E-MHSA width), but a subnet whose NCB width differs from its
        NTB's E-MHSA width does. The block after an NTB (and the head) reads the held concatenation.
        """
        res = input_pair(self.resolution if resolution is None else resolution)
        return self._layout(self.max_arch().stages, res, num_classes, supernet=True)

    def _layout(self, stages: tuple, input_size: tuple[int, int], num_classes: int, supernet: bool) -> Layout:
        stem = Placed(BlockSpec.make("nextvit.stem", hw=hw_value(*input_size)))
        in_chs = STEM_CHS[-1]
        out_stages = []
        for s, st in enumerate(stages):
            hw_first, hw = self._stage_hw(input_size, s)
            stride = 1 if s == 0 else 2
            ncb_w = st["ncb_width"]
            ncb_hidden = make_divisible(ncb_w * st["ncb_mlp_ratio"], HEAD_DIM)
            placed = []
            patterns = 1 if s == 0 else st["l"]
            for p in range(patterns):
                for q in range(st["n"]):
                    first = p == 0 and q == 0
                    spec = BlockSpec.make("nextvit.ncb", **{"in": in_chs}, out=ncb_w,
                                          stride=stride if first else 1, hidden=ncb_hidden,
                                          hw=hw_first if first else hw)
                    placed.append(Placed(spec, p * (_pattern_len(s)) + q))
                    in_chs = ncb_w
                if s == 0:
                    continue
                w = st["ntb_width"]
                hidden = make_divisible(w * st["ntb_mlp_ratio"], HEAD_DIM)
                if supernet:
                    mhsa, mhca = max_branches(s)
                    w = mhsa + mhca
                else:
                    mhsa, _ = ntb_split(w, st["r"])
                spec = BlockSpec.make(
                    "nextvit.ntb", **{"in": in_chs}, out=w, mhsa=mhsa, stride=1, sr=SR_RATIOS[s],
                    hidden=hidden, proj=bool(supernet or in_chs != mhsa), hw=hw)
                placed.append(Placed(spec, p * _pattern_len(s) + _pattern_len(s) - 1))
                in_chs = w
            out_stages.append(StageLayout(None, tuple(placed)))
        head = Placed(BlockSpec.make("nextvit.head", **{"in": in_chs}, classes=num_classes,
                                    hw=hw_value(*(side // 32 for side in input_size))))
        return Layout(stem, tuple(out_stages), head)

    def all_blocks(self, num_classes: int = 1000) -> list[BlockSpec]:
        """Every block any arch of this space (at this space's resolution and task) can contain."""
        res = self.input_size
        specs = [BlockSpec.make("nextvit.stem", hw=hw_value(*res))]
        in_set = {STEM_CHS[-1]}
        for s, c in enumerate(CHOICES):
            hw_first, hw = self._stage_hw(res, s)
            stride = 1 if s == 0 else 2
            for w in c["ncb_width"]:
                for ratio in c["ncb_mlp_ratio"]:
                    hidden = make_divisible(w * ratio, HEAD_DIM)
                    for i in sorted(in_set):
                        specs.append(BlockSpec.make("nextvit.ncb", **{"in": i}, out=w, stride=stride,
                                                    hidden=hidden, hw=hw_first))
                    specs.append(BlockSpec.make("nextvit.ncb", **{"in": w}, out=w, stride=1,
                                                hidden=hidden, hw=hw))
                    if s > 0 and max(c["l"]) > 1:  # the NCB that follows an NTB inside a stage
                        for wt in c["ntb_width"]:
                            specs.append(BlockSpec.make("nextvit.ncb", **{"in": wt}, out=w, stride=1,
                                                        hidden=hidden, hw=hw))
            if s == 0:
                in_set = set(c["ncb_width"])
                continue
            for wn in c["ncb_width"]:
                for wt in c["ntb_width"]:
                    for r in c["r"]:
                        mhsa, _ = ntb_split(wt, r)
                        for ratio in c["ntb_mlp_ratio"]:
                            specs.append(BlockSpec.make(
                                "nextvit.ntb", **{"in": wn}, out=wt, mhsa=mhsa, stride=1,
                                sr=SR_RATIOS[s], hidden=make_divisible(wt * ratio, HEAD_DIM),
                                proj=wn != mhsa, hw=hw))
            in_set = set(c["ntb_width"])
        if self.task == "classify":
            for i in sorted(in_set):
                specs.append(BlockSpec.make("nextvit.head", **{"in": i}, classes=num_classes,
                                            hw=hw_value(*(side // 32 for side in res))))
        return list(iter_unique(specs))

    # ---- what the search needs ------------------------------------------------------------
    def parameters(self) -> dict[str, tuple]:
        out = {}
        for s in range(len(CHOICES)):
            out.update(self._stage_parameters(s))
        return out

    def _stage_parameters(self, s: int) -> dict[str, tuple]:
        return {f"s{s}.{k}": tuple(CHOICES[s][k]) for k in (STAGE0_KEYS if s == 0 else STAGE_KEYS)
                if len(CHOICES[s][k]) > 1}

    def decode(self, params: Mapping[str, Any]) -> Arch:
        arch = self.arch([self._decode_stage(params, s) for s in range(len(CHOICES))])
        self.validate(arch)
        return arch

    def _decode_stage(self, params: Mapping[str, Any], s: int) -> dict:
        return {k: params.get(f"s{s}.{k}", CHOICES[s][k][0]) for k in (STAGE0_KEYS if s == 0 else STAGE_KEYS)}

    def encode(self, arch: Arch) -> dict[str, Any]:
        self.validate(arch)
        out: dict[str, Any] = {}
        for s, st in enumerate(arch.stages):
            out.update(self._encode_stage(s, st))
        return out

    def _encode_stage(self, s: int, st: Mapping[str, Any]) -> dict[str, Any]:
        return {f"s{s}.{k}": v for k, v in st.items() if len(CHOICES[s][k]) > 1}

    def slimming_steps(self, arch: Arch) -> Iterator[tuple[str, list[dict]]]:
        """Lower one of N, L, a width or an MLP ratio, or lower r (1 -> 0.75 -> 0.5)."""
        base = [dict(s) for s in arch.stages]
        for s, st in enumerate(base):
            for key in sorted(st, key=lambda k: k == "r"):  # r last, as the paper's ablation order
                for v in next_lower(st[key], CHOICES[s][key]):
                    yield f"s{s}.{key} {st[key]}->{v}", with_change(base, s, **{key: v})

    # ---- analytic cost -----------------------------------------------------------------
    def block_params(self, spec: BlockSpec) -> int:
        return _PARAMS[spec.kind](spec)

    def block_macs(self, spec: BlockSpec) -> int:
        return _MACS[spec.kind](spec)


TRIPLE_KEYS = ("ncb_width", "ntb_width", "r")


def triple_name(t: tuple) -> str:
    """A consistent (ncb_width, ntb_width, r) as one search choice: '192/256/0.75'."""
    return f"{int(t[0])}/{int(t[1])}/{float(t[2])}"


class ConsistentNextViTSpace(NextViTSpace):
    """Next-ViT restricted to its structurally consistent archs (`is_consistent`; `NextViTSpace.consistent_view`),
    0.175 % of the archs the full space's parameters reach: what a search covers when its supernet trained only
    those (`train.consistent_only`). Per stage 1-3, `ncb_width`, `ntb_width` and `r` are one parameter,
    `s<i>.nwr`, whose choices are the stage's consistent triples; in stage 2 with `l` > 1 (where the NTB
    must change the width), a triple that keeps it is repaired to the nearest one that does. The references
    are consistent archs, so they stay in the view."""

    consistent = True

    def consistent_view(self) -> "ConsistentNextViTSpace":
        return self

    def min_arch(self) -> Arch:
        return self.min_consistent_arch()

    def sample(self, rng: random.Random) -> Arch:
        return self.sample_consistent(rng)

    def _stage_parameters(self, s: int) -> dict[str, tuple]:
        if not s:
            return super()._stage_parameters(s)
        out = {}
        for name, choices in super()._stage_parameters(s).items():
            if name == f"s{s}.ncb_width":  # where the triple's first field was
                out[f"s{s}.nwr"] = tuple(triple_name(t) for t in self.consistent_triples(s))
            elif name.split(".")[1] not in TRIPLE_KEYS:
                out[name] = choices
        return out

    def _decode_stage(self, params: Mapping[str, Any], s: int) -> dict:
        st = super()._decode_stage(params, s)
        if s:
            by_name = {triple_name(t): t for t in self.consistent_triples(s)}
            name = params.get(f"s{s}.nwr", next(iter(by_name)))
            if name not in by_name:
                raise ArchError(f"s{s}.nwr", f"{name!r} is no consistent (ncb_width, ntb_width, r) of stage {s}",
                                list(by_name))
            n, w, r = by_name[name]
            valid = self.consistent_triples(s, st["l"])
            if (n, w, r) not in valid:  # repeated pattern: the NTB must change the width, the nearest that does
                n, w, r = min(valid, key=lambda t: (abs(t[1] - w), abs(t[0] - n), abs(t[2] - r)))
            st.update(ncb_width=n, ntb_width=w, r=r)
        return st

    def encode(self, arch: Arch) -> dict[str, Any]:
        self.validate(arch)
        if not self.is_consistent(arch):
            raise ArchError("arch", f"{arch.id} is not structurally consistent (an NTB input projection or an NCB "
                                    "projection Next-ViT-L does not have), and this search covers the consistent "
                                    "archs only: its supernet trained only those (train.consistent_only)")
        out = super().encode(arch)
        return {k: out[k] for k in self.parameters() if k in out}

    def _encode_stage(self, s: int, st: Mapping[str, Any]) -> dict[str, Any]:
        out = super()._encode_stage(s, st)
        if s:
            out = {k: v for k, v in out.items() if k.split(".")[1] not in TRIPLE_KEYS}
            out[f"s{s}.nwr"] = triple_name((st["ncb_width"], st["ntb_width"], st["r"]))
        return out

    def slimming_steps(self, arch: Arch) -> Iterator[tuple[str, list[dict]]]:
        """The full space's steps that keep the arch consistent (N, L, an MLP ratio), and per stage 1-3
        a move to each other consistent triple (`slimming_actions` keeps the ones that make it smaller)."""
        for name, stages in super().slimming_steps(arch):
            if self.is_consistent(Arch(arch.space, stages, arch.resolution, arch.task)):
                yield name, stages
        base = [dict(st) for st in arch.stages]
        for s, st in enumerate(base):
            if not s:
                continue
            here = (st["ncb_width"], st["ntb_width"], st["r"])
            for t in self.consistent_triples(s, st["l"]):
                if t != here:
                    yield (f"s{s}.nwr {triple_name(here)}->{triple_name(t)}",
                           with_change(base, s, ncb_width=t[0], ntb_width=t[1], r=t[2]))

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + ", consistent archs only)"


def _pattern_len(s: int) -> int:
    """Blocks per NHS pattern in the supernet (Next-ViT-L): N_max NCBs + 1 NTB (stage 0: N_max)."""
    n_max = max(CHOICES[s]["n"])
    return n_max if s == 0 else n_max + 1


# ---- parameter and MAC counts (must equal the torch modules in supernet.nextvit) ------------
def _bn(c: int) -> int:
    return 2 * c


def _patch_embed_params(cin: int, cout: int, stride: int, force: bool = False) -> int:
    return cin * cout + _bn(cout) if (stride == 2 or cin != cout or force) else 0


def _mhca_params(c: int) -> int:
    return c * HEAD_DIM * 9 + _bn(c) + c * c


def _mlp_params(c: int, hidden: int) -> int:
    return c * hidden + hidden + hidden * c + c


def _stem_params(spec: BlockSpec) -> int:
    a, b, c = STEM_CHS
    return (3 * a * 9 + _bn(a)) + (a * b * 9 + _bn(b)) + (b * c * 9 + _bn(c)) + (c * c * 9 + _bn(c))


def _ncb_params(spec: BlockSpec) -> int:
    cin, cout = spec["in"], spec["out"]
    return (_patch_embed_params(cin, cout, spec["stride"]) + _mhca_params(cout) + _bn(cout)
            + _mlp_params(cout, spec["hidden"]))


def _ntb_params(spec: BlockSpec) -> int:
    cin, cout, mhsa = spec["in"], spec["out"], spec["mhsa"]
    mhca = cout - mhsa
    n = _patch_embed_params(cin, mhsa, spec["stride"], force=spec["proj"]) + _bn(mhsa)
    n += 4 * (mhsa * mhsa + mhsa) + (_bn(mhsa) if spec["sr"] > 1 else 0)
    if mhca:
        n += _patch_embed_params(mhsa, mhca, 1) + _mhca_params(mhca)
    return n + _bn(cout) + _mlp_params(cout, spec["hidden"])


def _head_params(spec: BlockSpec) -> int:
    c, k = spec["in"], spec["classes"]
    return _bn(c) + c * k + k


def _area(hw, stride: int = 1) -> int:
    """Pixels of a `BlockSpec` size after a stride (ceil, as the pooling and convs round)."""
    h, w = hw_pair(hw)
    return -(-h // stride) * -(-w // stride)


def _stem_macs(spec: BlockSpec) -> int:
    a, b, c = STEM_CHS
    n1, n2 = _area(spec["hw"], 2), _area(spec["hw"], 4)
    return n1 * (a * 3 * 9 + b * a * 9 + c * b * 9) + n2 * c * c * 9


def _mhca_macs(c: int, n: int) -> int:
    return n * (c * HEAD_DIM * 9 + c * c)


def _ncb_macs(spec: BlockSpec) -> int:
    cin, cout, stride = spec["in"], spec["out"], spec["stride"]
    n = _area(spec["hw"], stride)
    m = n * cin * cout if (stride == 2 or cin != cout) else 0
    return m + _mhca_macs(cout, n) + n * 2 * cout * spec["hidden"]


def _ntb_macs(spec: BlockSpec) -> int:
    cin, cout, mhsa, stride, sr = spec["in"], spec["out"], spec["mhsa"], spec["stride"], spec["sr"]
    n = _area(spec["hw"], stride)
    m = n * cin * mhsa if (stride == 2 or cin != mhsa or spec["proj"]) else 0
    nk = n // (sr * sr) if sr > 1 else n
    m += 2 * n * mhsa * mhsa + 2 * nk * mhsa * mhsa + 2 * n * nk * mhsa  # q, proj; k, v; q@k, attn@v
    mhca = cout - mhsa
    if mhca:
        m += (n * mhsa * mhca if mhsa != mhca else 0) + _mhca_macs(mhca, n)
    return m + n * 2 * cout * spec["hidden"]


def _head_macs(spec: BlockSpec) -> int:
    return spec["in"] * spec["classes"]


_PARAMS = {"nextvit.stem": _stem_params, "nextvit.ncb": _ncb_params, "nextvit.ntb": _ntb_params,
           "nextvit.head": _head_params}
_MACS = {"nextvit.stem": _stem_macs, "nextvit.ncb": _ncb_macs, "nextvit.ntb": _ntb_macs,
         "nextvit.head": _head_macs}

register_space("nextvit", NextViTSpace)
