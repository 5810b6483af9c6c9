"""How many keys Next-ViT's attention has at each input resolution (issue 25, docs/accuracy.md round 21).

E-MHSA pools its K/V tokens sr² at a time (sr_ratios 8/4/2/1 for stages 1-4), so every NTB attends over
(input/32)² keys: 49 at the 224 px the family was designed for, 1 at 32 px. Over one key the softmax is 1, so the
attention branch is the same vector for every token and its q/k weights get no gradient; this script counts, with
forward hooks on the NTBs of Next-ViT-S (and the largest arch) built at each resolution, the tokens, sr and K/V
tokens of every E-MHSA, and checks the one-key case numerically (q/k weights drawn at std 1, so a softmax over
several keys would differ between tokens).

    PYTHONPATH=. python experiments/archive/nextvit_attention_keys.py --out experiments/archive/results/nextvit_attention_keys.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

import search_spaces
from supernet.model import build_model
from supernet.nextvit import EfficientAttention


def attention_keys(arch, batch: int = 4, seed: int = 0) -> list[dict]:
    """Per E-MHSA of `arch` (in forward order): tokens, sr, K/V tokens, and the largest difference between two
    tokens' attention weights (0 exactly when there is one key)."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=10).train()  # batch statistics: fresh BNs in eval scale features to ~1e-5
    rows = []

    def hook(mod, inp, out):
        x = inp[0]
        n, c = x.shape[1], x.shape[2]
        h = mod.num_heads
        kv = mod.norm(mod.sr(x.transpose(1, 2))).transpose(1, 2) if mod.sr is not None else x
        q = mod.q(x).reshape(x.shape[0], n, h, c // h).transpose(1, 2)
        k = mod.k(kv).reshape(x.shape[0], -1, h, c // h).transpose(1, 2)
        attn = ((q * mod.scale) @ k.transpose(-1, -2)).softmax(-1)
        rows.append({"tokens": n, "sr": mod.sr_ratio, "keys": k.shape[2],
                     "max_weight_spread": float((attn.max(-1).values - attn.min(-1).values).max())})

    for m in model.modules():
        if isinstance(m, EfficientAttention):
            for lin in (m.q, m.k):
                torch.nn.init.normal_(lin.weight, std=1.0)
            m.register_forward_hook(hook)
    res = arch.input_size
    with torch.no_grad():
        model(torch.randn(batch, 3, *res))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 224])
    ap.add_argument("--archs", nargs="+", default=["nextvit_s", "max"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    lines = ["# Next-ViT's attention: keys per E-MHSA at each input resolution", "",
             f"Command: `PYTHONPATH=. python experiments/archive/nextvit_attention_keys.py --out {args.out}`. Per arch, the "
             "distinct (tokens, sr, K/V tokens) of its NTBs; `weights differ` is the largest spread of one query's "
             "attention weights over its keys with q/k weights drawn at std 1 (0: one key, the softmax is 1).", "",
             "| input | arch | NTBs | (tokens, sr, K/V tokens) | weights differ |", "|---|---|---|---|---|"]
    for res in args.resolutions:
        space = search_spaces.get_space("nextvit", resolution=res)
        for name in args.archs:
            arch = space.max_arch() if name == "max" else space.reference(name)
            rows = attention_keys(arch)
            kinds = sorted({(r["tokens"], r["sr"], r["keys"]) for r in rows}, reverse=True)
            spread = max(r["max_weight_spread"] for r in rows)
            lines.append(f"| {res} px | {name} | {len(rows)} | {', '.join(map(str, kinds))} | {spread:.3g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
