"""experiments/shared.py: what several experiment scripts share (issue 26: no script imports
another through sys.path) -- the latency studies' block grouping and the import checks' weights."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import shared  # noqa: E402


def test_group_is_the_kind_or_the_kind_at_its_input_size():
    key = "efficientformerv2.ffn(dim=32,hidden=128,hw=56)"
    assert shared.group(key, "kind") == "efficientformerv2.ffn"
    assert shared.group(key, "resolution") == "efficientformerv2.ffn@56"
    with pytest.raises(ValueError, match="names no input size"):
        shared.group("tiny.block(dim=8)", "resolution")


def test_randomize_is_seeded_and_moves_every_float_tensor_off_its_init():
    import search_spaces
    import supernet
    arch = search_spaces.get_space("efficientformerv2").min_arch()
    a, b, fresh = supernet.build_model(arch), supernet.build_model(arch), supernet.build_model(arch)
    shared.randomize(a, 0)
    shared.randomize(b, 0)
    sa, sb, sf = a.state_dict(), b.state_dict(), fresh.state_dict()
    floats = [k for k, v in sa.items() if v.is_floating_point()]
    assert all(torch.equal(sa[k], sb[k]) for k in floats)  # same seed, same weights
    assert all(not torch.equal(sa[k], sf[k]) for k in floats if k.endswith(("running_var", "running_mean")))
    assert 0.5 <= float(sa[next(k for k in floats if k.endswith("running_var"))].min())
    shared.randomize(b, 1)
    assert not torch.equal(b.state_dict()[floats[0]], sa[floats[0]])
