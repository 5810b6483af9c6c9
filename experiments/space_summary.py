"""Size of each search space's block set and a table of the reference architectures.

    python experiments/space_summary.py            # -> experiments/results/space_summary.md (+ .json)

Pure analytic (no torch): params are exact `nn.Parameter` counts of our torch models (equal to the
official ones, checked in tests/test_search_spaces.py); MACs count conv, linear and attention
matmuls at batch 1, as torch.utils.flop_counter does.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
from collections import Counter
from pathlib import Path

import search_spaces
from hwnas._files import atomic_write


def space_size(space) -> float:
    """log10 of the number of distinct archs (counted per stage, then multiplied)."""
    if space.name == "nextvit":  # every choice independent (r at every width since issue 17)
        from search_spaces.nextvit import CHOICES
        return sum(math.log10(math.prod(len(v) for v in c.values())) for c in CHOICES)
    from search_spaces.efficientformerv2 import ATTN_POSITIONS, CAPS, EXPANSIONS, WIDTHS
    total = 0.0
    for s in range(4):
        caps, attn = CAPS[s], ATTN_POSITIONS[s]
        opts = [len([e for e in EXPANSIONS if e <= c]) for c in caps]
        count = 0
        # every non-empty subset of kept positions, every count of trailing attention blocks that fits
        for mask in range(1, 2 ** len(caps)):
            kept = [p for p in range(len(caps)) if mask >> p & 1]
            ways = math.prod(opts[p] for p in kept)
            n_attn_ok = 1 + sum(1 for a in range(1, len(kept) + 1) if all(p in attn for p in kept[-a:]))
            count += ways * (n_attn_ok if s >= 2 else 1)
        total += math.log10(count * len(WIDTHS[s]))
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="experiments/results/space_summary")
    args = ap.parse_args()
    rows, spaces = [], {}
    for name in search_spaces.list_spaces():
        space = search_spaces.get_space(name)
        blocks = space.all_blocks()
        spaces[name] = {"all_blocks": len(blocks), "by_kind": dict(Counter(b.kind for b in blocks)),
                        "log10_archs": round(space_size(space), 2), "resolution": space.resolution}
        print(f"{name}: {len(blocks)} distinct blocks at {space.resolution}x{space.resolution} "
              f"({', '.join(f'{k.split(chr(46))[1]} {v}' for k, v in spaces[name]['by_kind'].items())}); "
              f"about 10^{spaces[name]['log10_archs']} archs")
        extra = [("min_arch", space.min_arch())]
        if space.largest_arch() != space.max_arch():
            extra.append(("largest_arch", space.largest_arch()))
        for ref, arch in list(space.references().items()) + extra:
            bl = arch.blocks()
            rows.append(dict(space=name, arch=ref, id=arch.id, params=arch.params(),
                             gmacs=round(arch.macs() / 1e9, 4), blocks=len(bl),
                             kinds=" ".join(f"{k.split('.')[1]}×{v}" for k, v in Counter(b.kind for b in bl).items())))
    lines = ["# Reference architectures (analytic, 224x224, 1000 classes)", "",
             f"Written by `python experiments/space_summary.py` on {platform.node() or 'this machine'} "
             f"({platform.machine()}, Python {platform.python_version()}); no torch involved.", "",
             "| space | arch | id | params | GMACs | blocks | block kinds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['space']} | {r['arch']} | {r['id']} | {r['params']:,} | {r['gmacs']} | {r['blocks']} | {r['kinds']} |")
    lines += ["", "## Block sets (`space.all_blocks()`: what a latency table profiles)", "",
              "| space | distinct blocks | by kind | archs (about) |", "|---|---|---|---|"]
    for name, s in spaces.items():
        lines.append(f"| {name} | {s['all_blocks']} | {s['by_kind']} | 10^{s['log10_archs']} |")
    out = Path(args.out)
    for suffix, text in ((".md", "\n".join(lines) + "\n"),
                         (".json", json.dumps({"references": rows, "spaces": spaces}, indent=2))):
        atomic_write(out.with_suffix(suffix), text)
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
