"""Search vs the reference architectures, and NSGA-II vs random search by hypervolume.

For one target's latency table and a real evaluator (top-1 on digits with inherited supernet
weights and BN recalibration), runs NSGA-II, random search (same number of trials) and mes_greedy
through the search app, then checks that NSGA-II and mes_greedy each find, for every reference,
a subnet at or under its predicted latency and its size, and compares the hypervolume of
(accuracy↑, latency↓, params↓) after N trials. One evaluator is shared by the runs (its cache
too). NSGA-II's first generation holds the space's min arch (seed_archs=[min]), never a
reference; random search starts from the same min arch, then samples uniformly.

    python experiments/search_vs_references.py                       # ORT table, built-in supernet
    python experiments/search_vs_references.py --checkpoint DIR/supernet.pt --n-trials 64

Writes experiments/results/search_vs_references_<space>.{json,md,png} (atomically).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from hwnas._files import atomic_write
from hwnas.latency.backends import cpu_name
from hwnas.search import hypervolume
from hwnas.search.app import build_evaluator, compose_config, run

ROOT = Path(__file__).resolve().parents[1]

DIRS = ["maximize", "minimize", "minimize"]


def hv_curve(records, ref_point, step):
    """Hypervolume of the first k trials, k = step, 2·step, ..., normalised by the reference box."""
    box = ref_point[1] * ref_point[2] * 100.0
    pts = [[r["accuracy"], r["latency_ms"], r["params"]] for r in records]
    ks = list(range(step, len(pts) + 1, step)) or [len(pts)]
    return [(k, hypervolume(pts[:k], [0.0, ref_point[1], ref_point[2]], DIRS) / box) for k in ks]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="onnxruntime_cpu")
    ap.add_argument("--space", default="efficientformerv2")
    ap.add_argument("--n-trials", type=int, default=48)
    ap.add_argument("--greedy-candidates", type=int, default=4, help="slimming actions evaluated per step")
    ap.add_argument("--checkpoint", default=None, help="supernet checkpoint (default: the built-in one)")
    ap.add_argument("--evaluator", default="supernet", help="supernet | proxy (proxy: a dry run, not a result)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="outputs/experiments/search_vs_references")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = ap.parse_args()

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    base = [f"+target={args.target}", f"space={args.space}", f"evaluator={args.evaluator}",
            f"seed={args.seed}", "progress=false"]
    if args.checkpoint:
        base.append(f"checkpoint={args.checkpoint}")
    t0 = time.time()
    cfg0 = compose_config(base + ["search=random"])
    from hwnas.config import get_space_from_cfg
    accuracy = build_evaluator(cfg0, get_space_from_cfg(cfg0.space))
    t_setup = time.time() - t0

    runs, seconds = {}, {}
    for name, extra in (("nsga2", ["search=nsga2", f"search.n_trials={args.n_trials}", "search.seed_archs=[min]"]),
                        # the same first trial as NSGA-II, so the hypervolumes compare the
                        # strategies, not their starting points
                        ("random", ["search=random", f"search.n_trials={args.n_trials}", "search.seed_archs=[min]"]),
                        ("mes_greedy", ["search=mes_greedy", f"search.candidates_per_step={args.greedy_candidates}"])):
        t = time.time()
        runs[name] = run(compose_config(base + extra), work / name, accuracy=accuracy)
        seconds[name] = round(time.time() - t, 1)

    refs = runs["nsga2"]["references"]
    lmax = max(r["latency_ms"] for r in refs.values()) * 1.1
    pmax = max(r["params"] for r in refs.values()) * 1.1
    ref_point = [0.0, lmax, pmax]
    step = max(1, args.n_trials // 8)
    curves = {k: hv_curve(runs[k]["records"], ref_point, step) for k in ("nsga2", "random")}

    checks = {}
    for strat in ("nsga2", "mes_greedy"):
        per_ref = {}
        for ref_name, entry in runs[strat]["picks"].items():
            p, ref = entry["pick"], entry["reference"]
            per_ref[ref_name] = None if p is None else dict(
                arch_id=p["arch_id"], is_reference=p["arch_id"] == ref["arch_id"],
                accuracy=p["accuracy"], latency_ms=p["latency_ms"], params=p["params"], mes=p["mes"],
                ref_accuracy=ref["accuracy"], ref_latency_ms=ref["latency_ms"], ref_params=ref["params"],
                ref_mes=ref["mes"],
                ok=p["latency_ms"] <= ref["latency_ms"] and p["params"] <= ref["params"])
        checks[strat] = per_ref
    all_found = all(v is not None and v["ok"] for c in checks.values() for v in c.values())

    result = dict(
        claim="NSGA-II and mes_greedy find, for every reference, a subnet at or under its predicted latency "
              "and size; NSGA-II's hypervolume after N trials vs random search's",
        target=args.target, space=args.space, n_trials=args.n_trials, seed=args.seed,
        evaluator=args.evaluator, accuracy=accuracy.label, accuracy_resolution=accuracy.resolution,
        latency=f"{args.target} table at {cfg0.space.resolution}px", machine=platform.processor() or platform.machine(),
        host_cpu=cpu_name(), greedy_candidates_per_step=args.greedy_candidates,
        greedy_steps=len(runs["mes_greedy"]["greedy_path"]) - 1,
        greedy_evaluated=len(runs["mes_greedy"]["records"]),
        hypervolume_reference_point=dict(accuracy=0.0, latency_ms=lmax, params=pmax),
        hypervolume=dict(nsga2=curves["nsga2"][-1][1], random=curves["random"][-1][1]),
        hypervolume_curves={k: [[a, b] for a, b in v] for k, v in curves.items()},
        picks=checks, every_reference_found=all_found,
        seconds=dict(setup=round(t_setup, 1), **seconds, total=round(time.time() - t0, 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"search_vs_references_{args.space}"
    for suffix, text in ((".json", json.dumps(result, indent=2) + "\n"), (".md", markdown(result))):
        atomic_write(out / f"{stem}{suffix}", text)
    plot(curves, out / f"{stem}.png", result)
    print(markdown(result))


def markdown(r: dict) -> str:
    L = [f"# Search vs references: {r['space']} on {r['target']}", "",
         f"Accuracy: {r['accuracy']} at {r['accuracy_resolution'] or 'the arch'}px (evaluator `{r['evaluator']}`); "
         f"latency: {r['latency']}; params: deployment model. Machine: {r['host_cpu']}. "
         f"Seconds: {r['seconds']}.", "",
         f"Command: `python experiments/search_vs_references.py --target {r['target']} --space {r['space']} "
         f"--n-trials {r['n_trials']} --greedy-candidates {r['greedy_candidates_per_step']} --seed {r['seed']}`", "",
         f"## Hypervolume after {r['n_trials']} trials (accuracy↑, latency↓, params↓; normalised)", "",
         f"- NSGA-II: **{r['hypervolume']['nsga2']:.4f}**", f"- random: **{r['hypervolume']['random']:.4f}**", "",
         "| trials | " + " | ".join(str(k) for k, _ in r["hypervolume_curves"]["nsga2"]) + " |",
         "|---|" + "---|" * len(r["hypervolume_curves"]["nsga2"])]
    for k in ("nsga2", "random"):
        L.append(f"| {k} | " + " | ".join(f"{v:.4f}" for _, v in r["hypervolume_curves"][k]) + " |")
    L += ["", f"## Picks (every reference found: **{r['every_reference_found']}**)", "",
          f"mes_greedy: {r['greedy_steps']} steps, {r['greedy_evaluated']} archs evaluated.", "",
          "| strategy | reference | ref acc | ref ms | ref M | pick | acc | ms | M | meets both |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for strat, per in r["picks"].items():
        for ref, p in per.items():
            if p is None:
                L.append(f"| {strat} | {ref} | | | | none | | | | no |")
                continue
            pid = p["arch_id"] + (" (= reference)" if p["is_reference"] else "")
            L.append(f"| {strat} | {ref} | {p['ref_accuracy']:.2f} | {p['ref_latency_ms']:.3f} | "
                     f"{p['ref_params'] / 1e6:.3f} | {pid} | {p['accuracy']:.2f} | {p['latency_ms']:.3f} | "
                     f"{p['params'] / 1e6:.3f} | {'yes' if p['ok'] else 'NO'} |")
    return "\n".join(L) + "\n"


def plot(curves, path: Path, r: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for k, v in curves.items():
        a = np.array(v)
        ax.plot(a[:, 0], a[:, 1], "o-", label=k)
    ax.set_xlabel("completed trials")
    ax.set_ylabel("normalised hypervolume")
    ax.set_title(f"{r['space']} on {r['target']}: NSGA-II vs random")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
