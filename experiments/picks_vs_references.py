"""Picks vs references, trained for real: is the search's pick at or under each reference's latency at
least as accurate as the reference, when both are trained from scratch with the same recipe?

    # 1. CPU: per space, a search (TPE, evaluator=predictor, a measured latency table) and, for every
    #    reference, its most accurate (predicted) arch at or under the reference's latency and size that is
    #    not the reference itself; written as an archs file `ranking_fidelity.py gpu --archs` reads
    python experiments/picks_vs_references.py choose       # -> experiments/results/picks_vs_references_archs.json

    # 2. GPU: every pick and reference trained alone, >= 2 seeds, the ranking runs' stand-alone recipe
    #    (--resume-from those runs: references they trained are not trained again)
    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/ranking_fidelity.py gpu --variants none \\
        --archs experiments/results/picks_vs_references_archs.json --sa-seeds 0,1 --sa-epochs 6 --sa-batch 512 \\
        --image-size 32 --workers 6 --repeat-archs 0 --out "$OUT" --data-root .data/fashion-mnist \\
        --resume-from experiments/results/ranking_fidelity_raw/h200-run4

    # 3. CPU: per reference, both stand-alone test top-1 (mean and spread over seeds), latency and params
    python experiments/picks_vs_references.py analyze experiments/results/picks_vs_references_raw/*/
        # -> experiments/results/picks_vs_references_<space>.{json,md}

On your own data: `choose --predictor FILE` (a predictor fitted on pairs of your supernet, docs/accuracy.md)
and the GPU step with `--data name=imagefolder root=... test_dir=test image_size=...`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from hwnas._files import atomic_write
from hwnas.training._accuracy_jobs import read_results, write_json

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "experiments" / "results"
ARCHS_FILE = RESULTS / "picks_vs_references_archs.json"
SPACES = ("nextvit", "efficientformerv2")


# ---- choose (CPU) ---------------------------------------------------------------------------------
def choose(args) -> dict:
    import search_spaces
    from omegaconf import OmegaConf
    from hwnas.mes import MES
    from hwnas.search.app import build_evaluator, compose_config, load_table, searched_space
    from hwnas.search.objectives import LatencyTarget, Scorer
    from hwnas.search.report import pick_for
    from hwnas.search.strategies import Budget
    from search_vs_random import run_once
    out = dict(target=args.target, strategy=args.strategy, n_trials=args.n_trials, seed=args.seed,
               method=f"per space one search of each of {args.strategy} (evaluator=predictor, seed_archs=[min], so no reference is a "
                      "trial; the search's strategy on an in-memory study, as search_vs_random.py) over the target's table at the deployment resolution; for each reference, the arch "
                      "with the highest predicted accuracy at or under the reference's predicted latency and "
                      "params (1000-class head, as the search reports them), the reference itself excluded"
                      + ("; with --budgeted, per reference also each strategy's search under that reference's "
                         "latency and params (Optuna constraints), its trials added to the candidates"
                         if args.budgeted else ""),
               budgeted=bool(args.budgeted), tables={}, predictors={}, spaces={}, pairs={})
    for name in args.spaces.split(","):
        space = search_spaces.get_space(name)
        base = [f"+target={args.target}", f"space={name}", "evaluator=predictor", "progress=false",
                f"search.n_trials={args.n_trials}", "search.seed_archs=[min]"]
        if args.predictor:
            base.append(f"evaluator.path={args.predictor}")
        cfg = compose_config(base + [f"search={args.strategy.split(',')[0]}"])
        acc = build_evaluator(cfg, space)
        space = searched_space(space, acc)  # as the app: a consistent-only predictor -> the consistent archs
        table, table_path = load_table(cfg.target, space)
        mes = MES.for_target(OmegaConf.to_container(cfg.target.get("mes") or {}, resolve=True), table.provenance,
                             cfg.target.name)
        scorer = Scorer([LatencyTarget(str(cfg.target.name), table.predict, mes, bool(table.is_estimated))],
                        acc.evaluator, cfg.deploy_num_classes, acc.resolution)
        refs = {n: dict(arch_id=space.reference(n).id, **scorer.metrics(space.reference(n)).as_dict())
                for n in space.reference_names}
        ref_ids = {r["arch_id"] for r in refs.values()}
        strategy_cfgs = [compose_config(base + [f"search={strat}"]) for strat in args.strategy.split(",")]

        def searched(budget=None):  # every strategy's archs (the best any found), references left out
            return [r for c in strategy_cfgs for r in run_once(c, space, table, mes, acc, args.seed, budget)
                    if r["arch_id"] not in ref_ids]

        records = searched()
        prov = acc.evaluator.provenance
        out["predictors"][name] = dict(path=_rel(acc.evaluator.path), digest=acc.evaluator.digest,
                                       n_pairs=prov.get("n_pairs"), heldout=prov.get("heldout"))
        out["tables"][name] = _rel(table_path)
        archs, pairs = [], {}

        def entry(label, arch_dict, rec):
            from search_spaces import Arch
            arch = Arch.from_dict(arch_dict)
            return dict(name=label, key=arch.id, arch=arch.to_dict(), latency_ms=rec["latency_ms"],
                        params_deploy=rec["params"], params=arch.params(10), macs=arch.macs(10),
                        predicted_top1=rec["accuracy"])

        for ref_name, ref in refs.items():
            arch = space.reference(ref_name)
            cands = records
            if args.budgeted:  # what a user runs for this reference: the search under its latency and size
                cands = records + searched(Budget({str(cfg.target.name): ref["latency_ms"]}, ref["params"]))
            p = pick_for(cands, ref["latency_ms"], ref["params"])
            if p is None:
                print(f"{name}: no arch found at or under {ref_name} ({ref['latency_ms']:.3f} ms, "
                      f"{ref['params'] / 1e6:.2f} M); raise --n-trials")
                pairs[ref_name] = None
                continue
            r_entry = entry(ref_name, arch.to_dict(), ref)
            p_entry = entry(f"pick_{ref_name}", json.loads(p["arch"]), p)
            for e in (r_entry, p_entry):
                have = next((a for a in archs if a["key"] == e["key"]), None)
                if have is None:
                    archs.append(e)
                elif e["name"] not in have["name"].split("+"):
                    have["name"] += "+" + e["name"]  # one arch picked for two references: trained once
            pairs[ref_name] = dict(reference=r_entry["key"], pick=p_entry["key"])
            print(f"{name}: {ref_name} {ref['latency_ms']:.3f} ms {ref['params'] / 1e6:.2f} M predicted "
                  f"{ref['accuracy']:.2f} % -> pick {p_entry['key']} {p['latency_ms']:.3f} ms "
                  f"{p['params'] / 1e6:.2f} M predicted {p['accuracy']:.2f} %")
        out["spaces"][name] = archs
        out["pairs"][name] = pairs
    write_json(Path(args.out), out)
    print(f"written {args.out}")
    return out


def _rel(path) -> str | None:
    if not path:
        return None
    p = Path(path)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ---- analyze (CPU) --------------------------------------------------------------------------------
def analyze(args) -> dict:
    import numpy as np
    from ranking_fidelity import _one_recipe
    chosen = json.loads(Path(args.archs).read_text())
    res = read_results(args.results)
    runs = [json.loads((Path(d) / "run.json").read_text()) for d in args.results if (Path(d) / "run.json").is_file()]
    out_all = {}
    for space in args.spaces.split(","):
        names = {c["key"]: c for c in chosen["spaces"][space]}
        recs = [r for r in res["standalone"] if r["space"] == space and r["status"] == "done" and not r.get("smoke")
                and r["key"] in names]
        recs, sa_id, notes = _one_recipe(recs, "stand-alone")
        split = "test" if recs and all(r.get("test_top1") is not None for r in recs) else "val"
        if split == "val":
            notes.append("the data has no test split: stand-alone numbers are on val")
        by_key: dict[str, dict[int, float]] = {}
        for r in recs:
            by_key.setdefault(r["key"], {})[r["seed"]] = r[f"{split}_top1"]  # a later record of a seed wins

        def stats(key):
            v = by_key.get(key, {})
            a = np.array([v[s] for s in sorted(v)], float)
            return dict(seeds=sorted(v), top1=[float(x) for x in a],
                        mean=float(a.mean()) if len(a) else None,
                        spread=[float(a.min()), float(a.max())] if len(a) else None,
                        std=float(a.std(ddof=1)) if len(a) > 1 else None)

        rows = []
        for ref_name, pr in chosen["pairs"][space].items():
            if pr is None:
                rows.append(dict(reference=ref_name, pick=None, note="the search found no arch under it"))
                continue
            ref_c, pick_c = names[pr["reference"]], names[pr["pick"]]
            rs, ps = stats(pr["reference"]), stats(pr["pick"])
            row = dict(reference=ref_name, reference_key=pr["reference"], pick_key=pr["pick"],
                       reference_latency_ms=ref_c["latency_ms"], pick_latency_ms=pick_c["latency_ms"],
                       reference_params=ref_c["params"], pick_params=pick_c["params"],
                       reference_params_deploy=ref_c.get("params_deploy"), pick_params_deploy=pick_c.get("params_deploy"),
                       reference_macs=ref_c["macs"], pick_macs=pick_c["macs"],
                       reference_predicted=ref_c.get("predicted_top1"), pick_predicted=pick_c.get("predicted_top1"),
                       reference_top1=rs, pick_top1=ps)
            if rs["mean"] is None or ps["mean"] is None or min(len(rs["seeds"]), len(ps["seeds"])) < args.min_seeds:
                row["verdict"] = "not measured" if rs["mean"] is None or ps["mean"] is None else \
                    f"fewer than {args.min_seeds} seeds"
                row["pick_at_least_as_accurate"] = None
            else:
                row["difference"] = ps["mean"] - rs["mean"]
                row["pick_at_least_as_accurate"] = ps["mean"] >= rs["mean"]
                # separated: every seed of one above every seed of the other
                row["verdict"] = ("pick better, beyond the seed spread" if ps["spread"][0] > rs["spread"][1] else
                                  "reference better, beyond the seed spread" if rs["spread"][0] > ps["spread"][1] else
                                  "within the seed spread")
            rows.append(row)
        rows.sort(key=lambda r: r.get("reference_latency_ms") or 0.0)
        measured = [r for r in rows if r.get("pick_at_least_as_accurate") is not None]
        goal = None if len(measured) < len(rows) else all(r["pick_at_least_as_accurate"] for r in measured)
        # the weaker reading the seed noise allows: no reference ahead of its pick beyond the seed spread
        beyond = None if len(measured) < len(rows) else not any(
            r["verdict"] == "reference better, beyond the seed spread" for r in measured)
        any_r = recs[0] if recs else {}
        out = dict(space=space, claim="every pick (the search's most accurate arch, by the predictor, at or under a "
                                      "reference's latency and size) is at least as accurate as its reference when "
                                      "both are trained from scratch with the same recipe",
                   goal_met=goal, no_reference_better_beyond_seed_spread=beyond,
                   method=(chosen.get("per_space") or {}).get(space, {}).get("method", chosen.get("method")),
                   split=split, data=any_r.get("data"), image_size=any_r.get("image_size"),
                   standalone_recipe=any_r.get("recipe"), standalone_recipe_id=sa_id, rows=rows, notes=notes,
                   gpu=sorted({r.get("device") for r in recs} | {run.get("device") for run in runs} - {None}),
                   gpu_minutes=round(sum(r.get("wall_s", 0) for r in runs if not r.get("smoke")) / 60, 2),
                   target=chosen.get("target"), predictor=chosen.get("predictors", {}).get(space),
                   results_dirs=[str(d) for d in args.results], archs_file=str(args.archs), out_dir=str(args.out))
        stem = Path(args.out) / f"picks_vs_references_{space}"
        write_json(stem.with_suffix(".json"), out)
        atomic_write(stem.with_suffix(".md"), markdown(out))
        print(markdown(out))
        out_all[space] = out
    return out_all


def _fmt(s: dict) -> str:
    if s["mean"] is None:
        return "not trained"
    if len(s["top1"]) == 1:
        return f"{s['mean']:.2f} (1 seed)"
    return f"{s['mean']:.2f} ({', '.join(f'{x:.2f}' for x in s['top1'])})"


def markdown(r: dict) -> str:
    goal = {None: "**not decided yet** (some pairs are not trained with enough seeds)",
            True: "**held**: every pick is at least as accurate as its reference (mean over seeds)",
            False: "**did NOT hold** for every reference"}[r["goal_met"]]
    L = [f"# Picks vs references: {r['space']} on {r['data']} at {r['image_size']} px", "", r["claim"] + ".", "",
         f"Goal {goal}." + {None: "", True: " No reference is more accurate than its pick beyond the seed spread.",
                             False: " Some reference is more accurate than its pick beyond the seed spread."}[
                                 r.get("no_reference_better_beyond_seed_spread")], "",
         f"How the picks were chosen: {r.get('method')}.", "",
         f"Latency: predicted by the `{r['target']}` table at the deployment resolution; params: the deployment arch "
         "with a 1000-class head (what the search compares) and with the 10-class head that was trained. "
         f"Stand-alone {r['split']} top-1: mean over seeds (each seed in brackets). GPU: {', '.join(r['gpu']) or 'n/a'}, "
         f"{r['gpu_minutes']} GPU-minutes held by the runs of these folders (references' and picks' alike).", "",
         "| reference | ref ms | ref M (1000 / 10 cls) | ref top-1 | pick | pick ms | pick M (1000 / 10 cls) | pick top-1 | "
         "pick - ref | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        if row.get("pick_key") is None:
            L.append(f"| {row['reference']} | | | | none | | | | | {row.get('note', '')} |")
            continue
        d = row.get("difference")
        L.append(f"| {row['reference']} | {row['reference_latency_ms']:.3f} | "
                 f"{(row['reference_params_deploy'] or 0) / 1e6:.2f} / {row['reference_params'] / 1e6:.2f} | "
                 f"{_fmt(row['reference_top1'])} | {row['pick_key']} | {row['pick_latency_ms']:.3f} | "
                 f"{(row['pick_params_deploy'] or 0) / 1e6:.2f} / {row['pick_params'] / 1e6:.2f} | {_fmt(row['pick_top1'])} | "
                 f"{'' if d is None else f'{d:+.2f}'} | {row['verdict']} |")
    p = r.get("predictor") or {}
    h = p.get("heldout") or {}
    L += ["", f"Picks chosen with the accuracy predictor `{p.get('path')}` ({p.get('n_pairs')} pairs, held-out "
              f"Kendall tau {h.get('kendall_tau') if h.get('kendall_tau') is None else round(h['kendall_tau'], 3)})."]
    rec = r.get("standalone_recipe") or {}
    L += [f"Stand-alone recipe (every arch alike, `hwnas.training.standalone`, id {r['standalone_recipe_id']}): "
          f"{json.dumps(rec, sort_keys=True)}."]
    if r["notes"]:
        L += ["", "Notes: " + "; ".join(r["notes"])]
    L += ["", "Reproduce: `python experiments/picks_vs_references.py analyze " + " ".join(r["results_dirs"])
          + f" --spaces {r['space']} --archs {r['archs_file']} --out {r.get('out_dir', RESULTS)}`"]
    return "\n".join(L) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("choose", help="search and choose the picks (CPU)")
    c.add_argument("--target", default="torch_cuda")
    c.add_argument("--spaces", default=",".join(SPACES))
    c.add_argument("--n-trials", type=int, default=600)
    c.add_argument("--strategy", default="tpe", help="comma-separated strategies (tpe, nsga2, random); the picks "
                   "are the best arch any of them evaluated (tpe: the one that beat random search in "
                   "search_vs_random.py, and what the committed archs file was chosen with)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--budgeted", action="store_true", help="also, per reference, the searches under its latency and "
                   "params (budget.latency_ms, budget.params), as a user targeting that reference runs them")
    c.add_argument("--predictor", default=None, help="predictor file (default: the one shipped per space)")
    c.add_argument("--out", default=str(ARCHS_FILE))
    a = sub.add_parser("analyze", help="compare the stand-alone accuracies (CPU)")
    a.add_argument("results", nargs="+", help="folders written by `ranking_fidelity.py gpu`")
    a.add_argument("--spaces", default=",".join(SPACES))
    a.add_argument("--archs", default=str(ARCHS_FILE))
    a.add_argument("--min-seeds", type=int, default=2)
    a.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    return {"choose": choose, "analyze": analyze}[args.cmd](args)


if __name__ == "__main__":
    main()
