"""Why does the sandwich rule stall the supernet's largest subnet? One thing varied at a time (CPU).

The largest subnet of a supernet trained with the sandwich rule (largest + smallest + k random,
in-place distillation) ends far below the same arch trained alone (issue 11). Each case here trains
for `--epochs` x `--steps` optimizer steps at one batch size and learning rate, and records per
epoch the largest's and the smallest's val top-1 (BatchNorm recalibrated) and the training losses:

    python experiments/archive/sandwich_diagnostic.py run --space efficientformerv2 --cases sa,largest,sandwich \\
        --steps 40 --epochs 1 --data-root /work/main/.data/fashion-mnist

- `sa`: the max arch trained alone (`hwnas.training.standalone.train_standalone`);
- every other case is `hwnas.training.train` with the `TrainConfig` overrides in `CASES`
  (`--set key=value` adds an ad-hoc one, named by its overrides).

`probe` runs the sandwich step by step and measures, per step, each subnet's gradient on the
parameters it shares with the largest (norm, cosine with the largest's own gradient) and how far
AdamW moves the parameters the largest alone uses against those every subnet uses:

    python experiments/archive/sandwich_diagnostic.py probe --space efficientformerv2 --steps 40

Results are JSON lines appended to `--out` (one per case and epoch, one per probe step), each
naming the CPU; a case already there (same space, case, steps, epochs, batch, lr, seed) is skipped,
and an interrupted case resumes from its training state in `--work`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # experiments/archive/ -> the repository
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import search_spaces  # noqa: E402
import supernet  # noqa: E402

# TrainConfig overrides of each case; everything else is the sandwich default (k = 2, KL distillation)
CASES = {
    "sandwich": {},
    "largest": {"largest_warmup_epochs": "all"},  # the largest subnet alone, on the supernet's code path
    "nodistill": {"distill": False},  # students on the labels: distillation or sharing?
    "k0": {"num_random": 0},  # largest + smallest only
    "studentw": {"student_weight": 0.25},  # each student's loss x 1/4
    "proj": {"grad_projection": True},  # NASViT: the students' gradient loses its part opposing the largest's
    "clip1": {"clip_grad": 1.0},
    "wd0": {"weight_decay": 0.0},
}


def cpu_name() -> str:
    try:
        from hwnas.latency.backends import cpu_name as name
        return name()
    except Exception:  # noqa: BLE001 -- only a label
        import platform
        return platform.processor() or platform.machine()


def parse_value(v: str):
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def read_done(path: Path) -> set:
    done = set()
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r.get("kind") == "case" and r.get("final"):
                    done.add(r["id"])
    return done


def append(path: Path, rec: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # one line per write, flushed: a kill loses at most the line being written
        f.write(json.dumps(rec) + "\n")
        f.flush()
        os.fsync(f.fileno())


def data_cfg(args) -> dict:
    return {"name": "fashion_mnist", "root": args.data_root, "image_size": args.image_size}


def run_case(args, name: str, overrides: dict, out: Path) -> None:
    from hwnas.training.trainer import TrainConfig, train
    space = search_spaces.get_space(args.space)
    ident = f"{args.space}/{name}/s{args.steps}e{args.epochs}b{args.batch}lr{args.lr:g}seed{args.seed}"
    if ident in read_done(out):
        print(f"skip {ident}: done in {out}")
        return
    base = {"space": args.space, "case": name, "id": ident, "kind": "case", "steps": args.steps,
            "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": args.seed,
            "image_size": args.image_size, "overrides": overrides, "cpu": cpu_name(),
            "torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    if name == "sa":
        from hwnas.training.standalone import Recipe, train_standalone
        r = train_standalone(space.max_arch().with_resolution(args.image_size), data_cfg(args),
                             Recipe(epochs=args.epochs, batch_size=args.batch, lr=args.lr,
                                    max_steps_per_epoch=args.steps), seed=args.seed, device="cpu")
        rows = [{"epoch": args.epochs, "val_top1_largest": r["val_top1"], "test_top1_largest": r.get("test_top1"),
                 "loss_largest": r.get("train_loss")}]
    else:
        kw = {k: (args.epochs if v == "all" else v) for k, v in overrides.items()}
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, max_steps_per_epoch=args.steps,
                          eval_calib_batches=4, progress=False, device="cpu", **kw)
        work = Path(args.work) / ident.replace("/", "_")
        train(space, data_cfg(args), cfg, work, seed=args.seed, log=lambda m: print(f"[{name}] {m}", flush=True))
        state = torch.load(work / "train_state.pt", map_location="cpu", weights_only=True)
        rows = state["history"]
    seconds = time.perf_counter() - t0
    for i, row in enumerate(rows):
        final = i == len(rows) - 1
        rec = {**base, "lr_end": row.get("lr"), **{k: row.get(k) for k in ("epoch", "loss_largest", "loss_smallest", "loss_random",
                                                   "val_top1_largest", "val_top1_smallest", "test_top1_largest",
                                                   "conflict_share", "conflict_cos")},
               "final": final}
        if final:
            rec["seconds"] = round(seconds, 1)
        append(out, rec)
    last = rows[-1]
    print(f"{ident}: largest val {last.get('val_top1_largest')} smallest val {last.get('val_top1_smallest')} "
          f"loss largest {last.get('loss_largest')} ({seconds:.0f} s)", flush=True)


def run(args) -> None:
    out = Path(args.out)
    cases = [c for c in args.cases.split(",") if c]
    todo = []
    for c in cases:
        if c != "sa" and c not in CASES:
            raise SystemExit(f"--cases: unknown case {c!r} (allowed: sa, {', '.join(CASES)})")
        todo.append((c, {} if c == "sa" else CASES[c]))
    if args.set:
        extra = dict(kv.split("=", 1) for kv in args.set)
        extra = {k: parse_value(v) for k, v in extra.items()}
        todo.append(("set:" + ",".join(f"{k}={v}" for k, v in extra.items()), extra))
    for name, overrides in todo:
        run_case(args, name, overrides, out)


# ---- probe: per-subnet gradients of one sandwich step ------------------------------------------------
def probe(args) -> None:
    from hwnas.data import build_loaders
    from hwnas.training.sandwich import distill_loss, sample_archs
    from hwnas.training.trainer import TrainConfig, lr_at, make_optimizer
    from hwnas.data import derive_seed
    out = Path(args.out)
    space = search_spaces.get_space(args.space)
    res = args.image_size
    kw = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in (args.set or []))}
    cfg = TrainConfig(epochs=1, batch_size=args.batch, lr=args.lr, max_steps_per_epoch=args.steps, device="cpu",
                      progress=False, **kw)
    loader, _, ncls = build_loaders(data_cfg(args), res, cfg.batch_size, args.seed,
                                    max_steps_per_epoch=args.steps, device="cpu")
    torch.manual_seed(derive_seed(args.seed, 0xC0FFEE))
    net = supernet.build_supernet(space, num_classes=ncls, resolution=res)
    opt = make_optimizer(net, cfg)
    params = [p for _, p in net.named_parameters()]
    loader.set_epoch(0)
    batches = iter(loader)
    total = loader.steps
    warmup = int(round(cfg.warmup_epochs * total))
    ident = f"{args.space}/probe{'/' + ','.join(args.set) if args.set else ''}/s{args.steps}b{args.batch}lr{args.lr:g}"
    for step in range(total):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, total, warmup, cfg.lr, cfg.min_lr)
        x, y = next(batches)
        archs = sample_archs(space, args.seed, step, cfg.num_random, res)
        grads, teacher, losses = [], None, []
        for i, arch in enumerate(archs):
            net.set_active(arch)
            net.zero_grad(set_to_none=True)
            o = net(x)
            loss = F.cross_entropy(o, y, label_smoothing=0.1) if teacher is None else distill_loss(o, teacher)
            if teacher is None:
                teacher = o.detach()
            loss.backward()
            losses.append(float(loss))
            grads.append([None if p.grad is None else p.grad.detach().clone() for p in params])
        # parameters every subnet's backward reached vs those only the largest's did (a slice of a shared
        # tensor counts as shared: the mask is per element)
        g_l = grads[0]
        rec = {"kind": "probe", "id": ident, "space": args.space, "step": step, "cpu": cpu_name(),
               "losses": [round(v, 4) for v in losses]}
        per = []
        for gs in grads[1:]:
            dot = nl = ns = 0.0
            for gl, g in zip(g_l, gs):
                if gl is None or g is None:
                    continue
                dot += float((gl * g).sum())
                nl += float((gl * gl).sum())
                ns += float((g * g).sum())
            per.append({"norm_student": ns ** 0.5, "norm_largest_on_same": nl ** 0.5,
                        "cos": dot / max(1e-30, (nl * ns) ** 0.5)})
        rec["students"] = per
        # sum of all subnets' gradients, as the sandwich step accumulates it; AdamW step on the sum
        opt.zero_grad(set_to_none=True)
        for p, *gs in zip(params, *grads):
            present = [g for g in gs if g is not None]
            if present:
                p.grad = torch.stack(present).sum(0)
        # element masks: touched by any student, or by the largest only
        mask_s = [None] * len(params)
        for gs in grads[1:]:
            for j, g in enumerate(gs):
                if g is not None:
                    m = g != 0
                    mask_s[j] = m if mask_s[j] is None else (mask_s[j] | m)
        before = [p.detach().clone() for p in params]
        opt.step()
        upd_sh = upd_own = n_sh = n_own = 0.0
        cos_num = cos_l = cos_u = 0.0
        for j, (p, b) in enumerate(zip(params, before)):
            d = (p.detach() - b)
            if g_l[j] is None:
                continue
            ms = mask_s[j] if mask_s[j] is not None else torch.zeros_like(d, dtype=torch.bool)
            upd_sh += float((d[ms] ** 2).sum()); n_sh += int(ms.sum())
            upd_own += float((d[~ms] ** 2).sum()); n_own += int((~ms).sum())
            # the update's alignment with -grad of the largest alone: does the step still descend its loss?
            cos_num += float((-d * g_l[j]).sum()); cos_l += float((g_l[j] ** 2).sum()); cos_u += float((d * d).sum())
        rec.update(rms_update_shared=(upd_sh / max(1, n_sh)) ** 0.5, rms_update_largest_only=(upd_own / max(1, n_own)) ** 0.5,
                   n_shared=int(n_sh), n_largest_only=int(n_own),
                   cos_update_vs_largest_descent=cos_num / max(1e-30, (cos_l * cos_u) ** 0.5))
        append(out, rec)
        print(f"step {step + 1}/{total} losses {rec['losses']} cos(student, largest) "
              f"{[round(s['cos'], 3) for s in per]} |g_s|/|g_l| "
              f"{[round(s['norm_student'] / max(1e-30, s['norm_largest_on_same']), 2) for s in per]} "
              f"update descent cos {rec['cos_update_vs_largest_descent']:.3f}", flush=True)


# ---- report: the markdown table of every case -----------------------------------------------------
def report(args) -> None:
    path = Path(args.out)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    cases = [r for r in rows if r.get("kind") == "case"]

    def f(v, nd=2):
        return "" if v is None else f"{v:.{nd}f}"

    lines = ["# Sandwich diagnostic: why the largest subnet stalls (CPU)", "",
             f"Generated by `python experiments/archive/sandwich_diagnostic.py report` from `{path.name}`. "
             f"CPU: {', '.join(sorted({r['cpu'] for r in cases}))}, 1 torch thread per run, 2 runs at a time "
             "on a shared 2-core machine (seconds are wall time under that load). Fashion-MNIST, 32 px, "
             "batch 256, AdamW, peak lr 2e-3 (warm-up over epoch 1), 40 steps per epoch, seed 0. Val top-1 "
             "on the 10,000-image val split after BatchNorm recalibration (4 batches).", "",
             "| space | case | overrides | epoch | largest val top-1 | smallest val top-1 | loss largest (CE) "
             "| loss smallest | loss random | conflict share | conflict cos | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in cases:
        ov = ", ".join(f"{k}={v}" for k, v in r.get("overrides", {}).items()) or ("stand-alone" if r["case"] == "sa" else "")
        lines.append(f"| {r['space']} | {r['case']} | {ov} | {r['epoch']}/{r['epochs']} | {f(r.get('val_top1_largest'))} "
                     f"| {f(r.get('val_top1_smallest'))} | {f(r.get('loss_largest'), 3)} | {f(r.get('loss_smallest'), 3)} "
                     f"| {f(r.get('loss_random'), 3)} | {f(r.get('conflict_share'))} | {f(r.get('conflict_cos'), 3)} "
                     f"| {f(r.get('seconds'), 0) if r.get('final') else ''} |")
    probes = [r for r in rows if r.get("kind") == "probe"] + [
        json.loads(line) for q in [path.with_name(path.stem + "_probe.jsonl")] if q.is_file()
        for line in q.read_text().splitlines() if line.strip()]
    if probes:
        lines += ["", "## Probe: each subnet's gradient against the largest's, step by step (plain sandwich)", "",
                  "| step | losses (largest CE; smallest, random KL) | cos(student, largest) | |g_student| / |g_largest| |",
                  "|---|---|---|---|"]
        for r in probes:
            st = r["students"]
            losses = ", ".join(f"{v:.3f}" for v in r["losses"])
            cos = ", ".join(f"{x['cos']:.2f}" for x in st)
            ratio = ", ".join(f"{x['norm_student'] / max(1e-30, x['norm_largest_on_same']):.2f}" for x in st)
            lines.append(f"| {r['step'] + 1} | {losses} | {cos} | {ratio} |")
    text = "\n".join(lines) + "\n"
    md = path.with_suffix(".md")
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(md)
    print(f"wrote {md}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("report", help="markdown table of --out's cases (and its _probe.jsonl)")
    q.add_argument("--out", default=str(ROOT / "experiments" / "archive" / "results" / "sandwich_diagnostic.jsonl"))
    for name in ("run", "probe"):
        q = sub.add_parser(name)
        q.add_argument("--space", default="efficientformerv2")
        q.add_argument("--steps", type=int, default=40, help="optimizer steps per epoch")
        q.add_argument("--epochs", type=int, default=1)
        q.add_argument("--batch", type=int, default=256)
        q.add_argument("--lr", type=float, default=2e-3)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--image-size", type=int, default=32)
        q.add_argument("--data-root", default=str(ROOT / ".data" / "fashion-mnist"))
        q.add_argument("--threads", type=int, default=1)
        q.add_argument("--set", action="append", help="TrainConfig override key=value (repeatable)")
        q.add_argument("--out", default=str(ROOT / "experiments" / "archive" / "results" / "sandwich_diagnostic.jsonl"))
        q.add_argument("--work", default=str(ROOT / "outputs" / "sandwich_diagnostic"))
        if name == "run":
            q.add_argument("--cases", default="sa,largest,sandwich", help="comma-separated: sa, " + ", ".join(CASES))
    args = p.parse_args(argv)
    if args.cmd == "report":
        return report(args)
    torch.set_num_threads(args.threads)
    if args.cmd == "probe":
        args.out = args.out.replace(".jsonl", "_probe.jsonl") if args.out.endswith("sandwich_diagnostic.jsonl") else args.out
        probe(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
