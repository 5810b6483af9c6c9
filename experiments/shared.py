"""What several experiment scripts share, in one module they import plainly (`python experiments/x.py`
puts `experiments/` on sys.path): the random-weights recipe of the checkpoint-import checks, the
block grouping of the latency-correction studies (tested in tests/test_experiment_shared.py), and what
the two adapt studies (latency_adapt_forms.py, latency_adapt_refresh.py) share: a committed adapt result
read back, the library's correction fitted to it, and their result files written (tested through their
reproduction tests in tests/test_latency_adapt.py).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

import hwnas.latency.correction as C
from hwnas.latency import LatencyTable
from hwnas.latency.adapt import result_source_table
from hwnas.latency.keys import block_keys
from search_spaces import Arch

ROOT = Path(__file__).resolve().parents[1]

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


# ---- the adapt studies (issue 28) ----------------------------------------------------------------------
#: the correction forms `hwnas.latency.adapt.fit_adapted` chooses between (the lower leave-one-out error):
#: name -> (form, ridges)
LIBRARY_FORMS = {"one scale + b (default)": ("scale", (C.RIDGE,)), "per kind, ridge 0.05 (library)": ("per_kind", (C.RIDGE,))}
GOAL = {"within_10pct": 0.95, "within_5pct": 0.80, "kendall_tau": 0.95}  # issue 28, on >= 50 held-out subnets


def design(source: LatencyTable, scope: str, archs: list[Arch], by: str, groups: list[str], overhead: bool) -> np.ndarray:
    """Per-group sums (`groups`: kinds, or kind@resolution) of the source rows, each times the source's own
    correction of its kind (`a_kind`, as `fit_adapted` uses it); `total`: their sum in one column (`groups`
    unused); `overhead`: the number of blocks as a last column."""
    corr = source.correction(scope)
    a_src, a_def = corr.get("a", {}), corr.get("a_default", 1.0)
    if by == "total":
        groups = sorted({C.kind_of(k) for a in archs for k in block_keys(a)})
    X = C.kind_sums(source, archs, groups, group=lambda k: group(k, "kind" if by == "total" else by))
    X = X * np.array([a_src.get(g.split("@", 1)[0], a_def) for g in groups])
    if by == "total":
        X = X.sum(1, keepdims=True)
    if overhead:
        X = np.column_stack([X, [len(block_keys(a)) for a in archs]])
    return X


def fit_form(Xf: np.ndarray, yf: np.ndarray, Xh: np.ndarray, form: str, ridges) -> dict:
    """Fitted on the adaptation networks (columns they never use get the common scale, as `fit_adapted`
    does); the ridge of lowest leave-one-out error; predictions of the held-out networks."""
    used = Xf.any(0)
    loo = {r: C._loo_mape(Xf[:, used], yf, form, ridge=r) for r in ridges}
    ridge = min(loo, key=loo.get)
    s = np.full(Xf.shape[1], C._fit(Xf[:, used], yf, "scale")[0][0])
    s[used], b = C._fit(Xf[:, used], yf, form, ridge=ridge)
    return {"loo_mape": loo[ridge], "ridge": ridge if form != "scale" else None, "pred": Xh @ s + b}


def load_result(result_file: Path):
    """A committed adapt result as (result, source table, adaptation archs and their times in the table's
    statistic, held-out records, held-out archs, their measured times)."""
    res = json.loads(result_file.read_text())
    source = result_source_table(res, ROOT)
    fit_archs = [Arch.from_dict(n["arch"]) for n in res["adapt"]["networks"]]
    yf = np.array([n[source.statistic] for n in res["adapt"]["networks"]])
    held = res["held_out"]["networks"]
    return (res, source, fit_archs, yf, held, [Arch.from_dict(n["arch"]) for n in held],
            np.array([n["measured_ms"] for n in held]))


def write_results(stem: Path, rows: list, to_markdown) -> None:
    """`rows` to stem.json and, through `to_markdown`, to stem.md (printed too)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    text = to_markdown(rows)
    stem.with_suffix(".md").write_text(text)
    print(text)
