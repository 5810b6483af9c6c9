"""What several experiment scripts share, in one module they import plainly (`python experiments/x.py`
puts `experiments/` on sys.path): the random-weights recipe of the checkpoint-import checks, and the
block grouping of the latency-correction studies. Tested in tests/test_experiment_shared.py.
"""
from __future__ import annotations

import re

#: the input size a block key names (`...hw=56)`)
HW = re.compile(r"hw=(\d+)")


def group(key: str, by: str) -> str:
    """The group of block `key` for a per-group correction: its kind (`by="kind"`), or its kind at its
    input size (`kind@56`, any other `by`)."""
    kind = key.split("(", 1)[0]
    if by == "kind":
        return kind
    m = HW.search(key)
    if m is None:
        raise ValueError(f"block key {key!r} names no input size (hw=...); group it by='kind'")
    return f"{kind}@{m.group(1)}"


def randomize(model, seed: int) -> None:
    """Weights with unit-ish activation scale; BN stats, layer scales, biases all non-trivial (so that
    a wrongly mapped tensor changes the output), from `seed`."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                v = torch.rand(t.shape, generator=g) * 1.5 + 0.5
            elif name.endswith("running_mean") or name.endswith("attention_biases"):
                v = torch.randn(t.shape, generator=g) * 0.1
            elif name.endswith("gamma") or "layer_scale" in name:
                v = torch.rand(t.shape, generator=g) * 0.5 + 0.25
            elif t.ndim >= 2:
                fan_in = t[0].numel()
                v = torch.randn(t.shape, generator=g) / fan_in ** 0.5
            elif name.endswith("weight"):  # norm scales
                v = torch.rand(t.shape, generator=g) * 0.5 + 0.75
            else:
                v = torch.randn(t.shape, generator=g) * 0.05
            t.copy_(v.reshape(t.shape).to(t.dtype))
