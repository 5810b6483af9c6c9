"""Search vs random, with statistics: NSGA-II, TPE and mes_greedy each against random search, over seeds.

Per space, every strategy runs `--seeds` times (seed 0, 1, ...) at the same trial budget, with `evaluator=predictor` as accuracy (the
accuracy predictor shipped for the space, or `--predictor FILE`) and a measured latency table
(`--target torch_cuda`: measured on an H200). Each run's first `--n-trials` evaluated archs give one
hypervolume of (accuracy↑, latency↓, params↓); per strategy the mean ± std over seeds, and a one-sided
Mann-Whitney U test of "this strategy's hypervolume is larger than random search's" (scipy).

The hypervolume is measured with the predictor's accuracies: it is only as good as the predictor,
whose held-out Kendall tau against measured inherited accuracy is stated beside it.

    python experiments/search_vs_random.py                       # both spaces, torch_cuda table
    python experiments/search_vs_random.py --space nextvit --seeds 5 --n-trials 100

The runs use the search's own strategies, objective, seeding and budget (`hwnas.search.strategies`) on
in-memory Optuna studies (SQLite's per-trial cost would dominate; `python -m hwnas.search` with the same
seed evaluates the same archs).
Writes experiments/results/search_vs_random_<space>.{json,md} (atomically). CPU only, a few minutes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from hwnas._files import atomic_write
from hwnas.latency.backends import cpu_name
from hwnas.search import hypervolume
from hwnas.search.app import build_evaluator, compose_config, searched_space

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("nsga2", "tpe", "mes_greedy", "random")
DIRS = ["maximize", "minimize", "minimize"]


def strategy_overrides(name: str, n_trials: int, greedy_candidates: int) -> list[str]:
    if name == "mes_greedy":  # seeded draw of the actions per step: seeds differ
        return ["search=mes_greedy", f"search.candidates_per_step={greedy_candidates}"]
    # every Optuna strategy starts from the same min arch (no reference among the trials)
    return [f"search={name}", f"search.n_trials={n_trials}", "search.seed_archs=[min]"]


def run_once(cfg, space, table, mes, accuracy, seed: int, budget=None) -> list[dict]:
    """One search, as `python -m hwnas.search` runs it (the same strategies, objective, seeding and
    budget: `hwnas.search.strategies`), on an in-memory Optuna study: SQLite's per-trial cost would be
    most of the time here. Returns its completed trials in evaluation order. `budget` (a
    `hwnas.search.strategies.Budget`) constrains the Optuna strategies as `budget.*=` does the app's."""
    import optuna
    from hwnas.search.objectives import LatencyTarget, Scorer, expand_objectives
    from hwnas.search.report import records_from_trials
    from hwnas.search.strategies import Budget, directions, make_sampler, mes_greedy, run_optuna
    name = str(cfg.target.name)
    strategy = OmegaConf.to_container(cfg.search, resolve=True)
    strategy["objectives"] = expand_objectives(list(strategy["objectives"]), [name])
    scorer = Scorer([LatencyTarget(name, table.predict, mes, bool(table.is_estimated))], accuracy.evaluator,
                    cfg.deploy_num_classes, accuracy.resolution)
    study = optuna.create_study(directions=directions(strategy["objectives"]), sampler=make_sampler(strategy, seed))
    if strategy["name"] == "mes_greedy":  # the app's default budget: under every reference's latency and size
        refs = [scorer.cost(space.reference(n)) for n in space.reference_names]
        mes_greedy(study, space, scorer, strategy, Budget({name: min(c.latency[name] for c in refs)},
                                                          min(c.params for c in refs)), seed=seed, progress=False)
    else:
        run_optuna(study, space, scorer, strategy, budget or Budget(), stale_after_s=3600.0, progress=False,
                   seed_archs=[space.min_arch()] if "min" in strategy["seed_archs"] else [])
    return records_from_trials((t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"), [name])


def hv(records: list[dict], ref: list[float], box: float, dims: int = 3) -> float:
    pts = [[r["accuracy"], r["latency_ms"], r["params"]][:dims] for r in records]
    return hypervolume(pts, ref[:dims], DIRS[:dims]) / box


def mann_whitney(a: list[float], b: list[float]) -> dict:
    from scipy.stats import mannwhitneyu
    res = mannwhitneyu(a, b, alternative="greater", method="exact")
    return dict(u=float(res.statistic), p_value=float(res.pvalue), alternative="strategy > random")


def run_space(args, space_name: str) -> dict:
    base = [f"+target={args.target}", f"space={space_name}", "evaluator=predictor", "progress=false"]
    if args.predictor:
        base.append(f"evaluator.path={args.predictor}")
    cfg0 = compose_config(base + ["search=random"])
    from hwnas.config import get_space_from_cfg
    space = get_space_from_cfg(cfg0.space)
    accuracy = build_evaluator(cfg0, space)
    space = searched_space(space, accuracy)  # as the app: a consistent-only predictor -> the consistent archs
    pred = accuracy.evaluator
    from hwnas.mes import MES
    from hwnas.search.app import load_table
    table, table_path = load_table(cfg0.target, space)
    mes = MES.for_target(OmegaConf.to_container(cfg0.target.get("mes") or {}, resolve=True), table.provenance,
                         cfg0.target.name)
    runs: dict[str, list[dict]] = {s: [] for s in args.strategies}
    for strat in args.strategies:
        cfg = compose_config(base + strategy_overrides(strat, args.n_trials, args.greedy_candidates))
        for seed in range(args.seeds):
            t = time.time()
            recs = run_once(cfg, space, table, mes, accuracy, seed)[:args.n_trials]  # the same budget for all
            runs[strat].append(dict(seed=seed, records=recs, seconds=round(time.time() - t, 1)))
            print(f"{space_name} {strat} seed {seed}: {len(recs)} archs ({time.time() - t:.1f} s)", flush=True)
    # one reference point and box for every run of the space: the worst accuracy any run saw, the max arch's
    # latency and size (every arch of the space is inside)
    everything = [r for v in runs.values() for run_ in v for r in run_["records"]]
    acc_lo = min(r["accuracy"] for r in everything)
    acc_hi = max(r["accuracy"] for r in everything)
    mx = space.max_arch()
    lat_max = max(max(r["latency_ms"] for r in everything), float(table.predict(mx)))
    par_max = float(max(max(r["params"] for r in everything), mx.params(cfg0.deploy_num_classes)))
    ref = [acc_lo - 1e-6, lat_max * 1.01, par_max * 1.01]
    box3 = (acc_hi - ref[0]) * ref[1] * ref[2]
    box2 = (acc_hi - ref[0]) * ref[1]
    per = {}
    for strat, rs in runs.items():
        for r in rs:
            r["hypervolume"] = hv(r["records"], ref, box3)
            r["hypervolume_acc_latency"] = hv(r["records"], ref, box2, dims=2)
        v3 = [r["hypervolume"] for r in rs]
        v2 = [r["hypervolume_acc_latency"] for r in rs]
        per[strat] = dict(hypervolume=v3, mean=float(np.mean(v3)), std=float(np.std(v3, ddof=1)) if len(v3) > 1 else 0.0,
                          hv_acc_latency=v2, mean_acc_latency=float(np.mean(v2)),
                          std_acc_latency=float(np.std(v2, ddof=1)) if len(v2) > 1 else 0.0,
                          archs_per_run=[len(r["records"]) for r in rs],
                          seconds=[r["seconds"] for r in rs])
    tests = {}
    if "random" in per:
        for strat in per:
            if strat != "random":
                tests[strat] = dict(hypervolume=mann_whitney(per[strat]["hypervolume"], per["random"]["hypervolume"]),
                                    acc_latency=mann_whitney(per[strat]["hv_acc_latency"],
                                                             per["random"]["hv_acc_latency"]))
    prov = pred.provenance if hasattr(pred, "provenance") else {}
    return dict(
        claim="hypervolume of (accuracy, latency, params) after the same number of evaluated archs: each strategy "
              "vs random search, over seeds, one-sided Mann-Whitney U",
        space=space_name, consistent_archs_only=bool(space.consistent), target=args.target, table=_rel(table_path),
        table_provenance={k: table.provenance.get(k) for k in ("device", "runtime", "precision", "batch", "date")},
        n_trials=args.n_trials, seeds=args.seeds, greedy_candidates_per_step=args.greedy_candidates,
        accuracy=accuracy.label, predictor=dict(path=getattr(pred, "path", None), digest=getattr(pred, "digest", None),
                                                n_pairs=prov.get("n_pairs"), heldout=prov.get("heldout"),
                                                chosen=prov.get("chosen"), sources=prov.get("sources"),
                                                recipe_ids=prov.get("recipe_ids"), top1_range=prov.get("top1_range")),
        reference_point=dict(accuracy=ref[0], latency_ms=ref[1], params=ref[2]),
        normalisation=f"divided by (max accuracy seen {acc_hi:.3f} - reference accuracy) x reference latency x "
                      "reference params (x params dropped for the 2-D accuracy-latency figure)",
        strategies=per, tests_vs_random=tests, alpha=0.05,
        machine=cpu_name(), command="python experiments/search_vs_random.py " + " ".join(sys.argv[1:]))


def _p(p: float) -> str:
    return f"{p:.4f}" if p >= 1e-3 else f"{p:.1e}"


def _rel(path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def markdown(r: dict) -> str:
    p = r["predictor"]
    h = p.get("heldout") or {}
    tau = "n/a" if h.get("kendall_tau") is None else f"{h['kendall_tau']:.3f}"
    mae = "n/a" if h.get("mae") is None else f"{h['mae']:.3f}"
    lo, hi = p.get("top1_range") or [float("nan")] * 2
    L = [f"# Search vs random: {r['space']} on {r['target']}", "",
         f"Accuracy: {r['accuracy']}. Latency: `{r['table']}` (measured on {r['table_provenance'].get('device')}). "
         f"Params: deployment model (1000-class head). Machine (this CPU run): {r['machine']}.", "",
         f"Command: `{r['command']}`", "",
         f"**The hypervolume is measured with the predictor's accuracies, not with measured ones: it is only as good "
         f"as the predictor** ({p.get('chosen')}, fitted on {p.get('n_pairs')} (arch, inherited top-1) pairs "
         f"spanning {lo:.2f}-{hi:.2f} %; held-out Kendall tau {tau}, MAE {mae} points). "
         "A strategy that beats random here finds archs the predictor scores high; whether they are more accurate "
         "is for the stand-alone training of picks (picks_vs_references) to say.", ""]
    if h.get("kendall_tau") is None or h["kendall_tau"] < 0.5:
        L += [f"**With a held-out tau of {tau}, this predictor does not rank archs: the hypervolumes below say "
              "nothing about accuracy.** They compare how each strategy explores latency and size under a "
              "meaningless score.", ""]
    if r.get("consistent_archs_only"):
        L += [f"Archs searched: {r['space']}'s structurally consistent archs only (the predictor's pairs come from a "
              "supernet trained on those alone, train.consistent_only), as `python -m hwnas.search` searches them.", ""]
    L += [
         f"Budget: the first {r['n_trials']} evaluated archs of each run; {r['seeds']} seeds per strategy. "
         f"Optuna strategies start from the space's min arch (`search.seed_archs=[min]`); mes_greedy evaluates "
         f"{r['greedy_candidates_per_step']} random slimming actions per step (seeded) and stops under the smallest "
         "reference's latency and size, so it may evaluate fewer archs than the budget.", "",
         f"Reference point: accuracy {r['reference_point']['accuracy']:.3f}, latency "
         f"{r['reference_point']['latency_ms']:.3f} ms, params {r['reference_point']['params'] / 1e6:.2f} M; "
         f"{r['normalisation']}.", "",
         "| strategy | HV (acc, lat, params) mean ± std | HV (acc, lat) mean ± std | archs per run | "
         "p (> random, 3-D) | p (> random, 2-D) |", "|---|---|---|---|---|---|"]
    for s, v in r["strategies"].items():
        t = r["tests_vs_random"].get(s)
        p3 = "" if t is None else _p(t["hypervolume"]["p_value"])
        p2 = "" if t is None else _p(t["acc_latency"]["p_value"])
        L.append(f"| {s} | {v['mean']:.4f} ± {v['std']:.4f} | {v['mean_acc_latency']:.4f} ± "
                 f"{v['std_acc_latency']:.4f} | {min(v['archs_per_run'])}-{max(v['archs_per_run'])} | {p3} | {p2} |")
    L += ["", "What the tests support (one-sided Mann-Whitney U, exact, alpha 0.05):", ""]
    for s, t in r["tests_vs_random"].items():
        p3, p2 = t["hypervolume"]["p_value"], t["acc_latency"]["p_value"]
        k = len(r["tests_vs_random"])
        verdict = ("beats random, also after a Bonferroni correction for the " + str(k) + " comparisons"
                   if p3 < r["alpha"] / k else "beats random (but not after a Bonferroni correction)"
                   if p3 < r["alpha"] else "is NOT shown to beat random")
        L.append(f"- {s} {verdict} on the 3-D hypervolume (p = {_p(p3)}); on accuracy-latency alone p = {_p(p2)}.")
    L += ["", "Per-seed hypervolumes (3-D): " + "; ".join(
        f"{s}: " + ", ".join(f"{x:.4f}" for x in v["hypervolume"]) for s, v in r["strategies"].items()) + "."]
    return "\n".join(L) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="nextvit,efficientformerv2", help="comma-separated")
    ap.add_argument("--target", default="torch_cuda")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--n-trials", type=int, default=100)
    ap.add_argument("--greedy-candidates", type=int, default=4, help="mes_greedy slimming actions per step")
    ap.add_argument("--predictor", default=None, help="predictor file (default: the one shipped for the space)")
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results"))
    args = ap.parse_args(argv)
    args.strategies = args.strategies.split(",")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {}
    for space_name in args.space.split(","):
        r = run_space(args, space_name)
        stem = out_dir / f"search_vs_random_{space_name}"
        atomic_write(stem.with_suffix(".json"), json.dumps(r, indent=1) + "\n")
        atomic_write(stem.with_suffix(".md"), markdown(r))
        print(markdown(r))
        results[space_name] = r
    return results


if __name__ == "__main__":
    main()
