"""Are Next-ViT's large archs slow to train because their residual branches start at full scale? (issue 25)

In every Fashion-MNIST regime tried (rounds 12-20, `accuracy_bench/regimes.md`) Next-ViT's larger archs end with a
higher training loss than its small ones, where EfficientFormerV2's (whose branches start at LayerScale's 1e-5)
end lower. If the deep archs are held back by their start, zero-initialising the last layer of every residual
branch (`Recipe.zero_init_residual`) should lower their training loss more than the small archs', and turn the
order. This trains each arch alone with the option off and on, same seed and data, and reports the final training
loss and top-1 of each pair.

    PYTHONPATH=. python experiments/archive/zero_init_pilot.py --archs min nextvit_s nextvit_l --epochs 3 --batch 128 \\
        --out experiments/archive/results/zero_init_pilot_cpu.jsonl

Archs by name from `accuracy_bench_nv_pilot_archs.json` (min, stratum6, nextvit_s, stratum16, nextvit_b,
nextvit_l); the probe data (the first 10,000 Fashion-MNIST training images, 32 px). Each run is appended to --out as
it ends, and a rerun skips the runs there (resumable). Prints and writes <out>.md, the table.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # experiments/archive/ -> the repository
ARCHS = ROOT / "experiments" / "results" / "accuracy_bench_nv_pilot_archs.json"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=["min", "nextvit_s", "nextvit_l"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=str(ROOT / ".data" / "fashion-mnist"))
    ap.add_argument("--limit-train", type=int, default=10000)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--val-size", type=int, default=10000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import torch
    from search_spaces import Arch
    from hwnas.training._accuracy_jobs import read_jsonl
    from hwnas.data import stored_splits
    from hwnas.training.standalone import train_standalone
    from hwnas.latency.backends import cpu_name
    by_name = {c["name"]: c for c in json.loads(ARCHS.read_text())["spaces"]["nextvit"]}
    bad = [a for a in args.archs if a not in by_name]
    if bad:
        raise SystemExit(f"--archs: {bad} not in {ARCHS.name} (it has {', '.join(by_name)})")
    data = {"name": "fashion_mnist", "root": args.data_root, "image_size": args.image_size,
            "limit_train": args.limit_train, "val_size": args.val_size}
    splits = stored_splits(data, splits=("train", "val", "test"))
    done = {(r["name"], r["zero_init_residual"]) for r in read_jsonl(args.out)}  # a torn last line is skipped
    machine = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    for name in args.archs:
        for zero in (False, True):
            if (name, zero) in done:
                continue
            recipe = dict(epochs=args.epochs, batch_size=args.batch, lr=args.lr, zero_init_residual=zero)
            t = time.time()
            r = train_standalone(Arch.from_dict(by_name[name]["arch"]), data, recipe, seed=args.seed,
                                 device=args.device, splits=splits,
                                 log=lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {name} zero={zero}: {msg}",
                                                       flush=True))
            rec = {"name": name, "zero_init_residual": zero, "macs": by_name[name]["macs"], "seed": args.seed,
                   "train_loss": r["train_loss"], "val_top1": r["val_top1"], "test_top1": r["test_top1"],
                   "seconds": round(time.time() - t, 1), "recipe": r["recipe"], "data": data, "machine": machine}
            with open(args.out, "a") as f:  # one whole line a run: a kill loses at most the run under way
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
            print(json.dumps({k: rec[k] for k in ("name", "zero_init_residual", "train_loss", "val_top1")}), flush=True)
    rows = read_jsonl(args.out)
    L = ["| arch | MACs (G, 224 px) | train loss off / on | val top-1 off / on | test top-1 off / on |", "|---|---|---|---|---|"]
    for name in sorted({r["name"] for r in rows}, key=lambda n: by_name[n]["macs"]):
        off, on = (next((r for r in rows if r["name"] == name and r["zero_init_residual"] is z), None) for z in (False, True))
        cell = lambda k: " / ".join(f"{r[k]:.4f}" if k == "train_loss" else f"{r[k]:.2f}" if r else "-" for r in (off, on))  # noqa: E731
        L.append(f"| {name} | {by_name[name]['macs'] / 1e9:.2f} | {cell('train_loss')} | {cell('val_top1')} | {cell('test_top1')} |")
    text = "\n".join(L) + (f"\n\n{rows[0]['machine']}; seed {rows[0]['seed']}; recipe {rows[0]['recipe']}; data {rows[0]['data']}"
                           f"\n\nReproduce: `PYTHONPATH=. python experiments/archive/zero_init_pilot.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
