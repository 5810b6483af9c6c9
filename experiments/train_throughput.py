"""Supernet training speed: a sandwich step against a static training step, and the elastic overhead.

For each space, in bf16 autocast at 224x224 on synthetic data (train mode, AdamW):
- sandwich images/s: one `hwnas.training.sandwich_step` (largest + smallest + 2 random subnets,
  all on the same batch) plus the optimizer step, counting every subnet's images;
- static images/s: a training step (forward, backward, AdamW) of the static max model
  (Next-ViT-L / EfficientFormerV2-L) on the same batch;
- elastic overhead, per reference arch: supernet forward+backward at the arch divided by the
  extracted static model's forward+backward (goal <= 1.15x), each including its zero_grad. For
  context the supernet is also timed with plain autograd slicing of the shared tensors (how it
  trained before `supernet.sharing._SharedSlices`). The three are timed in interleaved rounds
  (static, supernet, plain, static, ...) so that drift in the machine hits all alike; each is
  the median of `--iters` rounds.
- EfficientFormerV2 only: the static max step again with PyTorch's bilinear-upsample kernel in
  place of the elementwise x2 upsample the blocks use (supernet.layers.upsample2x_bilinear).
Timed with CUDA events after warm-up.

    PYTHONPATH=. python experiments/train_throughput.py   # GPU machine
    python experiments/train_throughput.py --quick        # CPU smoke run (tiny, not a measurement)
Writes experiments/results/train_throughput.json and .md (or train_throughput_quick.*).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import search_spaces
import supernet
from hwnas.training import TrainConfig, make_optimizer, sample_archs, sandwich_step
from hwnas.training.sandwich import autocast, finish_buffers

ROOT = Path(__file__).resolve().parents[1]

GOAL = 1.15


def timed(fn, iters: int, warmup: int, device) -> float:
    """Median seconds of `fn()` over `iters` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def interleaved(fns: dict, rounds: int, warmup: int, device) -> dict:
    """Median seconds of each of `fns`, timed one call each in turn for `rounds` rounds."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            times[k].append(timed(fn, 1, 0, device))
    return {k: statistics.median(v) for k, v in times.items()}


def fwd_bwd(model, x, y, device, amp):
    with autocast(device, amp):
        out = model(x)
    F.cross_entropy(out.float(), y).backward()


def measure_space(name: str, batch: int, res: int, iters: int, warmup: int, device, amp: str) -> dict:
    space = search_spaces.get_space(name)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, res, res, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    net = supernet.build_supernet(space, num_classes=1000, resolution=res).to(device).train()
    cfg = TrainConfig()
    opt = make_optimizer(net, cfg)
    archs = sample_archs(space, seed=0, step=0, num_random=2, resolution=res)

    def sandwich():
        opt.zero_grad(set_to_none=True)
        bufs, start, delta = sandwich_step(net, archs, [(x, y)], seeds=[0], divisor=1, device=device, amp=amp)
        finish_buffers(bufs, start, delta, 1)
        opt.step()

    t_sandwich = timed(sandwich, iters, warmup, device)
    row = {"batch": batch, "subnets_per_step": len(archs),
           "sandwich_step_s": t_sandwich, "sandwich_images_per_s": batch * len(archs) / t_sandwich}

    static = net.extract(space.max_arch().with_resolution(res)).train()
    sopt = make_optimizer(static, cfg)

    def static_step():
        sopt.zero_grad(set_to_none=True)
        fwd_bwd(static, x, y, device, amp)
        sopt.step()

    t_static = timed(static_step, iters, warmup, device)
    row.update(static_max_step_s=t_static, static_max_images_per_s=batch / t_static,
               sandwich_vs_static_images_per_s=(batch * len(archs) / t_sandwich) / (batch / t_static))
    if name == "efficientformerv2":
        import supernet.layers as E  # supernet.layers.Upsample2x calls it in eager mode
        fast = E.upsample2x_bilinear
        E.upsample2x_bilinear = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)
        try:
            row["static_max_step_torch_upsample_s"] = timed(static_step, iters, warmup, device)
        finally:
            E.upsample2x_bilinear = fast
    del static, sopt, opt
    overhead = {}
    plain = supernet.build_supernet(space, num_classes=1000, resolution=res).to(device).train()
    plain.load_state_dict(net.state_dict())
    plain._subnet_tensors = plain._plain_tensors  # the pre-_SharedSlices path
    for ref in space.reference_names:
        arch = space.reference(ref).with_resolution(res)
        net.set_active(arch)
        plain.set_active(arch)
        model = net.extract(arch).train()

        def elastic():
            net.zero_grad(set_to_none=True)
            fwd_bwd(net, x, y, device, amp)

        def elastic_plain():
            plain.zero_grad(set_to_none=True)
            fwd_bwd(plain, x, y, device, amp)

        def static():
            model.zero_grad(set_to_none=True)
            fwd_bwd(model, x, y, device, amp)

        t = interleaved({"static": static, "supernet": elastic, "plain": elastic_plain}, iters, warmup, device)
        overhead[ref] = {"supernet_fwd_bwd_s": t["supernet"], "static_fwd_bwd_s": t["static"],
                         "plain_slicing_fwd_bwd_s": t["plain"], "ratio": t["supernet"] / t["static"],
                         "plain_slicing_ratio": t["plain"] / t["static"]}
        print(ref, json.dumps(overhead[ref]), flush=True)
        del model
    del plain
    row["elastic_overhead"] = overhead
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny CPU smoke run (not a measurement)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--spaces", default="nextvit,efficientformerv2")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    ap.add_argument("--suffix", default="", help="appended to the output names (train_throughput<suffix>.*)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    if args.quick:
        batch, res, iters, warmup, amp = 2, 64, 1, 1, "off"
    else:
        batch, res, iters, warmup, amp = args.batch, 224, args.iters, args.warmup, "bf16" if device.type == "cuda" else "off"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    results = {}
    for name in args.spaces.split(","):
        results[name] = measure_space(name, batch, res, iters, warmup, device, amp)
        print(name, json.dumps(results[name], indent=1), flush=True)
    ratios = [o["ratio"] for r in results.values() for o in r["elastic_overhead"].values()]
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "amp": amp, "resolution": res, "batch": batch, "iters": iters,
            "quick": args.quick, "goal_overhead": GOAL, "worst_overhead": max(ratios),
            "overhead_goal_met": max(ratios) <= GOAL}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("train_throughput_quick" if args.quick else "train_throughput") + args.suffix
    (out / f"{stem}.json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    lines = [f"# Supernet training throughput ({'quick CPU smoke run, not a measurement' if args.quick else info['device']})",
             "", f"Device: {info['device']}; torch {info['torch']}; {amp} autocast; {res}x{res} synthetic data; "
             f"batch {batch}; median of {iters} timed steps after {warmup} warm-up (CUDA events); "
             "the overhead table's three columns timed in interleaved rounds.", "",
             "| space | sandwich step (s) | sandwich img/s (4 subnets) | static max step (s) | static max img/s | ratio |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['sandwich_step_s']:.4f} | {r['sandwich_images_per_s']:.0f} | "
                     f"{r['static_max_step_s']:.4f} | {r['static_max_images_per_s']:.0f} | "
                     f"{r['sandwich_vs_static_images_per_s']:.2f} |")
    for name, r in results.items():
        if "static_max_step_torch_upsample_s" in r:
            lines += ["", f"{name}: the static max step takes {r['static_max_step_torch_upsample_s']:.4f} s with "
                      f"PyTorch's bilinear-upsample kernel instead of {r['static_max_step_s']:.4f} s with the "
                      "elementwise x2 upsample the blocks use."]
    lines += ["", "Elastic overhead: supernet forward+backward at the arch / extracted static model's "
              f"(goal <= {GOAL}x); 'plain slicing' is the supernet with autograd slicing of its shared "
              "tensors instead of `_SharedSlices`, for comparison.", "",
              "| reference | static (s) | supernet (s) | overhead | plain slicing (s) | plain overhead |",
              "|---|---|---|---|---|---|"]
    for r in results.values():
        for ref, o in r["elastic_overhead"].items():
            lines.append(f"| {ref} | {o['static_fwd_bwd_s']:.4f} | {o['supernet_fwd_bwd_s']:.4f} | {o['ratio']:.3f}x | "
                         f"{o['plain_slicing_fwd_bwd_s']:.4f} | {o['plain_slicing_ratio']:.3f}x |")
    lines += ["", f"Worst overhead {max(ratios):.3f}x: goal {'met' if info['overhead_goal_met'] else 'NOT met'}.",
              "", "Reproduce: `python experiments/train_throughput.py" + "".join(
                  f" {a}" for a in ("--quick" if args.quick else "", f"--batch {args.batch}" if args.batch != 64 else "",
                                    f"--suffix {args.suffix}" if args.suffix else "") if a) + "`"]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
