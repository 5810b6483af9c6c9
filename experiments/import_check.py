"""Pretrained import reproduces timm's models: outputs equal within 1e-5 relative.

For each of timm's nextvit_small/base/large and efficientformerv2_s0/s1/s2/l: build it with
random weights (BatchNorm statistics, LayerScales and attention biases randomised too, so no
branch is silently near zero), save its state dict to a file, import the file with
`supernet.pretrained.load_pretrained` into (a) our static reference model and (b) the space's
supernet (active at that reference: one-to-one for the max arch, first-k for the others), and
compare outputs on the same input in fp32 (TF32 off). The same weights in the official layout
(`from_hwnas_keys(..., "official")`) go through the official importer too.

    PYTHONPATH=. python experiments/import_check.py   # GPU machine with timm: the real check
    python experiments/import_check.py --quick        # CPU, no timm: official/timm layouts round-trip
Writes experiments/results/import_check.json and .md (or import_check_quick.*).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import search_spaces
import supernet
from hwnas._files import scratch_until_exit
from shared import randomize  # experiments/shared.py (timm_features_check.py uses it too)
from supernet.pretrained import from_hwnas_keys, load_pretrained

ROOT = Path(__file__).resolve().parents[1]

MODELS = [("nextvit_small", "nextvit", "nextvit_s"), ("nextvit_base", "nextvit", "nextvit_b"),
          ("nextvit_large", "nextvit", "nextvit_l"),
          ("efficientformerv2_s0", "efficientformerv2", "efficientformerv2_s0"),
          ("efficientformerv2_s1", "efficientformerv2", "efficientformerv2_s1"),
          ("efficientformerv2_s2", "efficientformerv2", "efficientformerv2_s2"),
          ("efficientformerv2_l", "efficientformerv2", "efficientformerv2_l")]
TOL = 1e-5


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.double() - ref.double()).abs().max() / ref.double().abs().max())


def set_fused_attention(model: torch.nn.Module, on: bool) -> bool:
    """timm's Next-ViT E-MHSA may run F.scaled_dot_product_attention; ours computes softmax(q k^T) v."""
    found = False
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn, found = on, True
    return found


def check(source: torch.nn.Module, arch, sd_files: dict, device, x, num_classes: int) -> dict:
    # Compare against timm computing attention the way we do. Random deep nets amplify rounding
    # differences a lot, so timm's fused kernel is only reported against timm itself.
    row = {}
    if set_fused_attention(source, True):
        fused = source(x)
        set_fused_attention(source, False)
        row["timm_fused_vs_unfused"] = rel_err(fused, source(x))
    ref = source(x)
    for layout, path in sd_files.items():
        model = supernet.build_model(arch, num_classes=num_classes).to(device)
        rep = load_pretrained(model, path)
        model.eval()
        row[f"static_{layout}"] = {"rel_err": rel_err(model(x), ref), "loaded": len(rep["loaded"]),
                                   "kept_init": len(rep["missing"]), "detected": rep["layout"]}
        del model
    space = search_spaces.get_space(arch.space)
    net = supernet.build_supernet(space, num_classes=num_classes, resolution=arch.resolution).to(device)
    rep = load_pretrained(net, next(iter(sd_files.values())))
    net.eval()
    net.set_active(arch)
    row["supernet"] = {"rel_err": rel_err(net(x), ref), "loaded": len(rep["loaded"]) + len(rep["partial"]),
                       "kept_init": len(rep["missing"]), "max_arch": arch == space.max_arch().with_resolution(arch.resolution)}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CPU round trip of our own models (no timm)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if torch.cuda.is_available() and not args.quick else "cpu")
    res = 64 if args.quick else 224
    x = torch.randn(2, 3, res, res, generator=torch.Generator().manual_seed(0)).to(device)
    results, t0 = {}, time.time()
    tmp = scratch_until_exit("import-check")
    models = MODELS if not args.quick else [m for m in MODELS if m[0] in ("nextvit_small", "efficientformerv2_s0")]
    for i, (timm_name, space_name, ref_name) in enumerate(models):
        space = search_spaces.get_space(space_name)
        arch = space.reference(ref_name).with_resolution(res)
        if args.quick:  # no timm: our own model stands in for it, saved in timm's and the official layout
            source = supernet.build_model(arch, num_classes=1000)
            randomize(source, seed=i)
            ours = source.state_dict()
            timm_sd = from_hwnas_keys(ours, space_name, "timm")
        else:
            import timm
            source = timm.create_model(timm_name, pretrained=False, num_classes=1000)
            randomize(source, seed=i)
            timm_sd = source.state_dict()
            ours = None
        source = source.to(device).eval()
        files = {"timm": tmp / f"{timm_name}_timm.pth"}
        torch.save(timm_sd, files["timm"])
        # The official layout, derived from our keys (what the official repos' .pth files hold).
        helper = supernet.build_model(arch, num_classes=1000)
        load_pretrained(helper, timm_sd)
        official = from_hwnas_keys(helper.state_dict(), space_name, "official")
        files["official"] = tmp / f"{timm_name}_official.pth"
        torch.save({"model": official}, files["official"])
        del helper, ours
        with torch.no_grad():
            row = check(source, arch, files, device, x, 1000)
        row["params"] = sum(p.numel() for p in source.parameters())
        row["params_ours_analytic"] = arch.params()
        results[timm_name] = row
        print(timm_name, json.dumps({k: v["rel_err"] for k, v in row.items() if isinstance(v, dict)}), flush=True)
        del source
        if device.type == "cuda":
            torch.cuda.empty_cache()
    worst = max(v["rel_err"] for row in results.values() for v in row.values() if isinstance(v, dict))
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "python": platform.python_version(), "resolution": res,
            "tolerance": TOL, "worst_rel_err": worst, "passed": worst <= TOL, "seconds": round(time.time() - t0, 1),
            "quick": args.quick, "source": "timm" if not args.quick else "hwnas models in timm/official layout"}
    if not args.quick:
        import timm
        info["timm"] = timm.__version__
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "import_check_quick" if args.quick else "import_check"
    (out / f"{stem}.json").write_text(json.dumps({"info": info, "results": results}, indent=1))
    lines = [f"# Pretrained import check ({'quick, CPU' if args.quick else 'timm'})", "",
             f"Device: {info['device']}; torch {info['torch']}" + (f"; timm {info.get('timm')}" if "timm" in info else "")
             + f"; fp32, TF32 off; input 2x3x{res}x{res}; tolerance {TOL:g} relative (max |diff| / max |ref|), "
             "against timm with its non-fused attention (the last column: how far timm's own fused kernel "
             "moves these random deep nets).", "",
             "| model | params | static (timm file) | static (official file) | supernet at this arch | supernet kept init "
             "| timm fused SDPA vs timm unfused |",
             "|---|---|---|---|---|---|---|"]
    for name, row in results.items():
        fused = row.get("timm_fused_vs_unfused")
        lines.append(f"| {name} | {row['params']:,} | {row['static_timm']['rel_err']:.2e} | "
                     f"{row['static_official']['rel_err']:.2e} | {row['supernet']['rel_err']:.2e}"
                     f"{' (max arch)' if row['supernet']['max_arch'] else ''} | {row['supernet']['kept_init']} | "
                     f"{'-' if fused is None else f'{fused:.1e}'} |")
    lines += ["", f"Worst relative error {worst:.2e}: {'PASS' if info['passed'] else 'FAIL'} (<= {TOL:g}).",
              "", "Reproduce: `python experiments/import_check.py" + (" --quick" if args.quick else "") + "`"]
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if info["passed"] else 1)


if __name__ == "__main__":
    main()
