"""Issue 27, point 3's cheap change: does the `torch_cuda` recipe get faster with its attention as one
`scaled_dot_product_attention` call (`target.attention=sdpa`)? Both forms of the same model (timm's weights
imported where timm is installed), fp16, channels_last, each captured in one CUDA graph and timed in
interleaved rounds with CUDA events (deploy_speed's `bench_cuda`), beside timm's model run eagerly in a graph.
No compiling: a call of a couple of minutes. One JSON line per model and batch (stdout and --out).

    PYTHONPATH=. python experiments/sdpa_eager_gpu.py --out "$OUT/sdpa_eager.jsonl"          # GPU machine
    PYTHONPATH=. python experiments/sdpa_eager_gpu.py --device cpu --models nextvit_s --batches 1 --rounds 1
                                                                                  # CPU smoke run of the script
"""
from __future__ import annotations

import argparse
import copy
import json

import torch

from hwnas.latency.deploy import deploy_form

from deploy_speed import SPACE, _bench, build_ours, build_timm  # beside it (python experiments/x.py puts experiments/ first)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["nextvit_s", "efficientformerv2_s0", "efficientformerv2_s1"],
                    choices=sorted(SPACE))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=100)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=None, help="JSON lines (appended)")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    precision = "fp16" if cuda else "fp32"
    try:
        import timm  # noqa: F401
        have_timm = True
    except ImportError:
        have_timm = False
    for name in args.models:
        t = build_timm(name) if have_timm else None
        base, info = build_ours(name, t)
        for b in args.batches:
            x = torch.randn(b, 3, 224, 224, device=args.device,
                            dtype=torch.float16 if cuda else torch.float32).contiguous(memory_format=torch.channels_last)
            variants = {f"ours_{a}": (deploy_form("torch_cuda", batch=b, precision=precision, attention=a).module(
                copy.deepcopy(base)).to(args.device), x) for a in ("matmul", "sdpa")}
            if t is not None and cuda:
                variants["timm_eager"] = (copy.deepcopy(t).to(args.device).half().to(
                    memory_format=torch.channels_last).eval(), x)
            with torch.no_grad():
                outs = {k: m(xi).float() for k, (m, xi) in variants.items()}
            # interleaved rounds: each variant in one CUDA graph timed with CUDA events (deploy_speed's `_bench`)
            res = _bench(variants, args.rounds, args.per_round if cuda else max(1, args.per_round // 50), cuda)
            ref = outs["ours_matmul"]
            row = {"model": name, "batch": b, "precision": precision, "channels_last": True,
                   "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
                   "weights": info.get("weights"), "variants": res,
                   "sdpa_vs_matmul": res["ours_sdpa"]["median_ms"] / res["ours_matmul"]["median_ms"],
                   "sdpa_rel_diff": float((outs["ours_sdpa"] - ref).abs().max() / ref.abs().max()),
                   "method": "each variant captured in one CUDA graph, CUDA-event timing per replay, interleaved "
                             f"rounds ({args.rounds} x {args.per_round})" if cuda else "CPU smoke run, wall clock"}
            if "timm_eager" in res:
                row["matmul_vs_timm_eager"] = res["ours_matmul"]["median_ms"] / res["timm_eager"]["median_ms"]
                row["sdpa_vs_timm_eager"] = res["ours_sdpa"]["median_ms"] / res["timm_eager"]["median_ms"]
            line = json.dumps(row)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
            del variants, outs
            if cuda:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
