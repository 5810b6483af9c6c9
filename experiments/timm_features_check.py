"""timm's `features_only=True` models, loaded from our `format=timm` files, return our stage outputs.

For each of the 7 references: our static model with random weights (BatchNorm statistics,
LayerScales and attention biases randomised too, so no branch is silently near zero) is written
with `hwnas.export.timm.save_timm` -- what `python -m hwnas.extract format=timm` writes -- once as
the classifier and once as the features-only backbone. Then timm loads them:

- `timm.create_model(name, checkpoint_path=FILE)`: its logits against ours;
- `timm.create_model(name, features_only=True, pretrained=True, pretrained_cfg_overlay=dict(file=FILE))`
  from the classifier file and from the backbone file: its four stage outputs against our
  backbone's (`supernet.build_model(arch, features_only=True)`).

TF32 off, timm's fused attention off (as experiments/import_check.py: random deep nets
amplify the rounding of another attention kernel). Each model runs twice: in float64, where the same
computation agrees to 1e-10 relative (max |diff| / max |ref| per output) and a wrong weight or
layer does not, and in float32, what deploys, where the two implementations' different order of
operations leaves rounding that random deep nets amplify (EfficientFormerV2-L: about 1.6e-5), held
to 1e-4. Where timm is not installed, only our side runs (files written, read back through the
layout table into a fresh model, outputs equal) and the timm part is reported as skipped.

    PYTHONPATH=. python experiments/timm_features_check.py --out "$OUT"      # GPU machine (timm there)
    python experiments/timm_features_check.py --refs efficientformerv2_s0 --size 64 --out DIR   # CPU smoke

Writes <out>/timm_features_check.{json,md} and, one line per model as it finishes,
<out>/timm_features_check.jsonl; `--resume FILE.jsonl` skips the models done there; `--deadline-s`
stops between models and writes what it has.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch

import search_spaces
import supernet
from hwnas._files import scratch_until_exit
from hwnas.export.timm import save_timm
from hwnas.latency.backends import cpu_name

from shared import randomize  # the same weights recipe as the import check

ROOT = Path(__file__).resolve().parents[1]
REFS = ["nextvit_s", "nextvit_b", "nextvit_l", "efficientformerv2_s0", "efficientformerv2_s1",
        "efficientformerv2_s2", "efficientformerv2_l"]
TOLS = {"float64": 1e-10, "float32": 1e-4}  # per dtype: max |diff| / max |ref| per output
DTYPES = {"float64": torch.float64, "float32": torch.float32}
STEM = "timm_features_check"


def rel_err(y, ref) -> float:
    if isinstance(ref, (list, tuple)):
        if len(y) != len(ref) or any(a.shape != b.shape for a, b in zip(y, ref)):
            return float("inf")
        return max(rel_err(a, b) for a, b in zip(y, ref))
    return float((y.double() - ref.double()).abs().max() / ref.double().abs().max())


def unfused(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model


def check_one(ref_name: str, seed: int, size: int, device, tmp: Path, dtype: str = "float32") -> dict:
    space = search_spaces.get_space("nextvit" if ref_name.startswith("nextvit") else "efficientformerv2")
    arch = space.reference(ref_name).with_resolution(size)
    ours = supernet.build_model(arch)
    randomize(ours, seed)
    ours.eval()
    backbone = supernet.build_model(arch, features_only=True).eval()
    missing, unexpected = backbone.load_state_dict(ours.state_dict(), strict=False)
    assert not missing and all(k.startswith("head.") for k in unexpected)
    files = {"classifier": tmp / f"{ref_name}_timm.pth", "backbone": tmp / f"{ref_name}_backbone_timm.pth"}
    info = {k: save_timm(m, files[k]) for k, m in (("classifier", ours), ("backbone", backbone))}
    dt = DTYPES[dtype]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    ours, backbone = ours.to(device, dt), backbone.to(device, dt)
    x = x.to(device, dt)
    with torch.no_grad():
        logits, feats = ours(x), backbone(x)
        # the exact value, as near as float64 gets: how far each side's float32 rounding lands from it
        exact = copy.deepcopy(backbone).double()(x.double()) if dt != torch.float64 else None
        # our side: each file read back through the timm layout table into a fresh model
        row = {"ref": ref_name, "dtype": dtype, "timm_model": info["classifier"]["timm_model"], "size": size,
               "create_kwargs": info["classifier"]["create_kwargs"],
               "load_classifier": info["classifier"]["load_with"], "load_backbone": info["backbone"]["load_with"]}
        layout = supernet.get_family(arch.space).checkpoint_layout("timm")
        for kind, model in (("classifier", ours), ("backbone", backbone)):
            twin = supernet.build_model(arch, features_only=kind == "backbone")
            twin.load_state_dict(layout.to_ours(torch.load(files[kind], weights_only=True)), strict=True)
            twin = twin.to(device, dt).eval()
            row[f"readback_{kind}"] = rel_err(twin(x), logits if kind == "classifier" else feats)
        try:
            import timm
        except ImportError:
            row["timm"] = "skipped: timm is not installed here"
            return row
        kw = dict(info["classifier"]["create_kwargs"])
        if "img_size" in kw:
            kw["img_size"] = tuple(kw["img_size"])
        name = info["classifier"]["timm_model"]
        tm = unfused(timm.create_model(name, checkpoint_path=str(files["classifier"]), **kw)).to(device, dt).eval()
        row["timm_classifier"] = rel_err(tm(x), logits)
        for kind in ("classifier", "backbone"):
            tf = timm.create_model(name, features_only=True, pretrained=True,
                                   pretrained_cfg_overlay=dict(file=str(files[kind])), **kw)
            tf = unfused(tf).to(device, dt).eval()
            got = tf(x)
            row[f"timm_features_from_{kind}_file"] = rel_err(got, feats)
            if exact is not None:
                row["rounding_vs_float64"] = {"ours": rel_err(feats, exact), "timm": rel_err(got, exact)}
            row["timm_feature_info"] = {"channels": tf.feature_info.channels(), "reduction": tf.feature_info.reduction()}
            row["our_feature_info"] = {"channels": backbone.feature_info.channels(),
                                       "reduction": backbone.feature_info.reduction()}
        row["timm"] = timm.__version__
    return row


def timm_source() -> str | None:
    try:
        import timm
    except ImportError:
        return None
    return f"timm {timm.__version__} from {Path(timm.__file__).parent}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    ap.add_argument("--refs", default=",".join(REFS), help="comma-separated reference names")
    ap.add_argument("--size", type=int, default=224, help="input size (timm's EfficientFormerV2 gets img_size)")
    ap.add_argument("--dtypes", default="float64,float32", help=f"comma-separated, of {', '.join(DTYPES)}")
    ap.add_argument("--resume", default=None, help="a .jsonl of an earlier run: skip the models done there")
    ap.add_argument("--deadline-s", type=float, default=None, help="stop between models after this long")
    args = ap.parse_args()
    dtypes = args.dtypes.split(",")
    if not dtypes or any(d not in DTYPES for d in dtypes):
        ap.error(f"--dtypes {args.dtypes!r}: a comma-separated list of {', '.join(DTYPES)}")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / f"{STEM}.jsonl"
    done = {}
    for path in [Path(args.resume)] if args.resume else []:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("size") == args.size and not str(r.get("timm", "")).startswith("skipped"):
                done[(r["ref"], r.get("dtype", "float32"))] = r
    if done:
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    t0 = time.time()
    tmp = scratch_until_exit("timm-features-check")
    rows = dict(done)
    jobs = [(ref, dt) for ref in args.refs.split(",") for dt in dtypes]
    for i, (ref, dt) in enumerate(jobs):
        if (ref, dt) in rows:
            print(f"{ref} {dt}: done in {args.resume}, skipped", flush=True)
            continue
        if args.deadline_s is not None and time.time() - t0 > args.deadline_s:
            print(f"deadline: stopping before {ref} {dt}", flush=True)
            break
        t = time.time()
        row = check_one(ref, REFS.index(ref) if ref in REFS else i, args.size, device, tmp, dt)
        row["seconds"] = round(time.time() - t, 1)
        rows[(ref, dt)] = row
        with open(jsonl, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    worst = {}
    for (ref, dt), r in rows.items():
        errs = [v for k, v in r.items() if k.startswith(("readback_", "timm_classifier", "timm_features"))]
        worst[dt] = max([worst.get(dt, 0.0), *errs])
    timm_ran = any("timm_classifier" in r for r in rows.values())
    passed = bool(rows) and all(worst[dt] <= TOLS[dt] for dt in worst)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "timm_source": timm_source(),
            "torch": torch.__version__, "python": platform.python_version(), "size": args.size,
            "tolerance": {dt: TOLS[dt] for dt in dtypes}, "worst_rel_err": worst, "passed": passed,
            "timm_ran": timm_ran, "models": len({ref for ref, _ in rows}), "seconds": round(time.time() - t0, 1),
            "timm": next((r["timm"] for r in rows.values()), None)}
    (out / f"{STEM}.json").write_text(json.dumps({"info": info, "results": list(rows.values())}, indent=1) + "\n")
    tols = ", ".join(f"{dt} {TOLS[dt]:g}" for dt in dtypes)
    lines = [f"# timm features_only check ({'timm ' + str(info['timm']) if timm_ran else 'our side only: timm not installed'})",
             "", f"Device: {info['device']}; {info['timm_source'] or 'no timm'}; torch {info['torch']}; TF32 off, timm's fused attention off; input "
             f"2x3x{args.size}x{args.size}; tolerance relative per output (max |diff| / max |ref|): {tols}. "
             "float64 decides whether the computation is the same; float32 (what deploys) shows the rounding "
             "that the two implementations' different order of operations leaves in a random deep net.",
             "Files written by `hwnas.export.timm.save_timm` (what `python -m hwnas.extract format=timm` writes).", "",
             "| reference | dtype | timm model | read back (classifier / backbone) | timm logits | timm features_only (classifier file) "
             "| timm features_only (backbone file) | timm feature_info = ours |",
             "|---|---|---|---|---|---|---|---|"]

    def f(v):
        return "-" if v is None else f"{v:.2e}"
    for r in rows.values():
        same = r.get("timm_feature_info") == r.get("our_feature_info") if "timm_feature_info" in r else None
        lines.append(f"| {r['ref']} | {r.get('dtype', 'float32')} | {r['timm_model']} | {f(r['readback_classifier'])} / "
                     f"{f(r['readback_backbone'])} | {f(r.get('timm_classifier'))} | "
                     f"{f(r.get('timm_features_from_classifier_file'))} | "
                     f"{f(r.get('timm_features_from_backbone_file'))} | {'-' if same is None else same} |")
    rounding = [f"{r['ref']} ours {r['rounding_vs_float64']['ours']:.1e} / timm {r['rounding_vs_float64']['timm']:.1e}"
                for r in rows.values() if r.get("rounding_vs_float64")]
    if rounding:
        lines += ["", "float32 stage outputs against our float64 ones (each side's own rounding, max |diff| / max |ref|): "
                  + "; ".join(rounding) + "."]
    verdict = "PASS" if passed else "FAIL"
    worst_s = ", ".join(f"{dt} {w:.2e} (<= {TOLS[dt]:g})" for dt, w in worst.items())
    lines += ["", f"Worst relative error: {worst_s}: {verdict}"
              + ("" if timm_ran else "; timm's part NOT RUN here (timm is not installed): run it on the GPU machine") + ".",
              "", ("How timm loads them, e.g.: `" + next(iter(rows.values()))["load_classifier"] + "`; features: `"
                   + next(iter(rows.values()))["load_backbone"] + "`.") if rows else "",
              "", "Reproduce: `PYTHONPATH=. python experiments/timm_features_check.py --out DIR` (with timm installed)."]
    (out / f"{STEM}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
