"""Does a Fashion-MNIST regime separate archs trained alone? Spread of the archs against the seed noise.

Reads the stand-alone records (`standalone.jsonl`) that `ranking_fidelity.py gpu` wrote for one or more
regimes and, per regime and space, reports:
- the spread of the archs: the standard deviation and the range of their mean test top-1;
- the seed noise of one arch: the pooled standard deviation over seeds (archs with two or more seeds);
- their ratio (issue 25's goal: the spread at least 3x the seed noise), read two ways: the sd of the archs'
  means over the pooled seed sd (the strict reading), and the range of the archs' means over one arch's
  range of seeds (the mean over the archs with the most seeds: like for like, "the archs spread over 3x
  what one arch's seeds spread over"); seed-vs-seed Kendall tau, and the
  tau of ranking by MACs (what a supernet has to beat);
- what decides the ranking: the Kendall tau of the archs' mean final training loss against their MACs
  (negative: larger archs fit the training images better, the regime is capacity-bound; positive: larger
  archs fit them worse, i.e. they are held back by optimisation, not by overfitting) and of their mean test
  top-1 against that loss;
- with `--predictor SPACE=FILE` (repeatable): the Kendall tau of each accuracy predictor's scores against
  the archs' mean stand-alone top-1 (what the search optimises against what training gives).

    R=experiments/results/accuracy_bench_raw
    python experiments/accuracy_bench.py $R/h100-call1-explore/{full2ep,l10k10ep,l5k20ep,l10k10ep64} \\
        $R/h100-call3-seeds $R/h100-call4-efsupernet-probe/probe \\
        --predictor efficientformerv2=hwnas/accuracy_predictors/efficientformerv2.json \\
        --predictor efficientformerv2=experiments/results/accuracy_bench/predictor_efficientformerv2_10k.json \\
        --predictor nextvit=hwnas/accuracy_predictors/nextvit.json
        # -> experiments/results/accuracy_bench/regimes.{json,md}

A regime is a stand-alone recipe id (epochs, batch, lr, data: training-set size, resolution); runs of one
recipe from several folders are pooled.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

RESULTS = Path(__file__).resolve().parent / "results" / "accuracy_bench"
GOAL_RATIO = 3.0


def regime_name(rec: dict, data: dict) -> str:
    r = rec["recipe"]
    n = data.get("limit_train") or "all"
    task = ", two items a sample (100 classes)" if data.get("items", 1) == 2 else ""
    zero = ", residual branches zero-initialised" if r.get("zero_init_residual") else ""
    return (f"{rec['image_size']} px{task}, {n} training images, {r['epochs']} epochs, batch {r['batch_size']}, "
            f"lr {r['lr']}{zero}")


def predictor_taus(predictors: list[tuple[str, Path]], space: str, by_key: dict, means: dict) -> dict:
    """File -> Kendall tau of the predictor's scores of the archs against their mean stand-alone top-1."""
    from hwnas.predictor import AccuracyPredictor
    from search_spaces import Arch
    keys = sorted(means)
    out = {}
    for sp, path in predictors:
        if sp != space or len(keys) < 3:
            continue
        pred = AccuracyPredictor.load(path)
        scores = pred.predict([Arch.from_dict(next(iter(by_key[k].values()))["arch"]) for k in keys])
        out[str(path)] = float(stats.kendalltau(list(scores), [means[k] for k in keys])[0])
    return out


def summarise(folders: list[Path], predictors: list[tuple[str, Path]] = ()) -> list[dict]:
    runs = defaultdict(lambda: defaultdict(dict))  # (recipe id, space) -> key -> seed -> record
    data = {}  # recipe id -> the data identity of the command that ran it
    for folder in folders:
        meta = json.loads((folder / "run.json").read_text())
        data[meta["standalone_recipe_id"]] = meta["data"]
        path = folder / "standalone.jsonl"
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("status") == "done" and not r.get("smoke"):
                runs[(r["recipe_id"], r["space"])][r["key"]][r["seed"]] = r
    out = []
    for (rid, space), by_key in sorted(runs.items()):
        any_rec = next(iter(next(iter(by_key.values())).values()))
        means = {k: float(np.mean([r["test_top1"] for r in s.values()])) for k, s in by_key.items()}
        multi = [[r["test_top1"] for r in s.values()] for s in by_key.values() if len(s) >= 2]
        seed_sd = float(np.sqrt(np.mean([np.var(v, ddof=1) for v in multi]))) if multi else None
        spread = float(np.std(list(means.values()), ddof=1)) if len(means) > 1 else None
        most = max((len(v) for v in multi), default=0)  # one arch's seed range: over the archs with the most seeds
        seed_range = float(np.mean([np.ptp(v) for v in multi if len(v) == most])) if multi else None
        spread_range = float(np.ptp(list(means.values()))) if means else None
        pairs = [(s[0]["test_top1"], s[1]["test_top1"]) for s in by_key.values() if 0 in s and 1 in s]
        macs = {k: next(iter(s.values()))["macs"] for k, s in by_key.items()}
        keys = sorted(means)
        loss = {k: float(np.mean([r["train_loss"] for r in s.values()])) for k, s in by_key.items()
                if all(r.get("train_loss") is not None for r in s.values())}
        lkeys = sorted(loss)
        row = dict(recipe_id=rid, space=space, regime=regime_name(any_rec, data.get(rid, {})), archs=len(means),
                   runs=sum(len(s) for s in by_key.values()), archs_with_seeds=len(multi),
                   spread_sd=spread, spread_range=spread_range,
                   seed_sd=seed_sd, ratio=spread / seed_sd if spread and seed_sd else None,
                   seeds_per_arch=most, seed_range=seed_range,
                   range_ratio=spread_range / seed_range if spread_range and seed_range else None,
                   seed_vs_seed_tau=float(stats.kendalltau(*zip(*pairs))[0]) if len(pairs) >= 3 else None,
                   macs_tau=float(stats.kendalltau([macs[k] for k in keys], [means[k] for k in keys])[0])
                   if len(keys) >= 3 else None,
                   loss_macs_tau=float(stats.kendalltau([macs[k] for k in lkeys], [loss[k] for k in lkeys])[0])
                   if len(lkeys) >= 3 else None,
                   top1_loss_tau=float(stats.kendalltau([loss[k] for k in lkeys], [means[k] for k in lkeys])[0])
                   if len(lkeys) >= 3 else None,
                   top1_range=[min(means.values()), max(means.values())],
                   per_arch={by_key[k][next(iter(by_key[k]))]["name"]: [round(r["test_top1"], 2)
                                                                      for r in by_key[k].values()] for k in keys})
        row["predictor_tau"] = predictor_taus(list(predictors), space, by_key, means)
        row["goal_met"] = row["ratio"] is not None and row["ratio"] >= GOAL_RATIO and row["archs_with_seeds"] >= 3
        row["goal_met_range"] = (row["range_ratio"] is not None and row["range_ratio"] >= GOAL_RATIO
                                 and row["archs_with_seeds"] >= 3)
        out.append(row)
    return out


def markdown(rows: list[dict], folders: list[Path], predictors: list[tuple[str, Path]] = ()) -> str:
    f = lambda v, d=2: "n/a" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = ["# Which Fashion-MNIST regime separates archs trained alone?", "",
             f"Spread of the archs' mean stand-alone test top-1 against one arch's seed noise (goal: ratio >= "
             f"{GOAL_RATIO:g} with at least 3 archs trained with several seeds). Every regime trains each arch "
             "alone with `hwnas.training.standalone` (CUDA graphs, label smoothing 0.1, cosine lr); the GPU and "
             "the command are in each folder's `run.json`.", "",
             "Two readings of the goal: **sd ratio** = sd of the archs' means / pooled seed sd (strict: the sd of "
             "means still holds seed noise / sqrt(seeds)); **range ratio** = range of the archs' means / one arch's "
             "range of seeds (mean over the archs with the most seeds, `seeds` below).", "",
             "What decides the ranking: **train loss vs MACs tau** (the archs' mean final training loss against their "
             "MACs: negative, larger archs fit the training images better; positive, they fit them worse, held back by "
             "optimisation rather than overfitting) and **top-1 vs train loss tau** (test top-1 against that loss).", "",
             "| space | regime | archs | runs | archs with >= 2 seeds | seeds | top-1 range | spread (sd) | seed sd | "
             "sd ratio | goal (sd) | seed range | range ratio | goal (range) | seed-vs-seed tau | MACs tau | "
             "train loss vs MACs tau | top-1 vs train loss tau |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        met = lambda ok: "met" if ok else "not met"  # noqa: E731
        lines.append(f"| {r['space']} | {r['regime']} | {r['archs']} | {r['runs']} | {r['archs_with_seeds']} | "
                     f"{r['seeds_per_arch']} | {r['top1_range'][0]:.2f}-{r['top1_range'][1]:.2f} | "
                     f"{f(r['spread_sd'])} | {f(r['seed_sd'])} | {f(r['ratio'])} | {met(r['goal_met'])} | "
                     f"{f(r['seed_range'])} | {f(r['range_ratio'])} | {met(r['goal_met_range'])} | "
                     f"{f(r['seed_vs_seed_tau'], 3)} | {f(r['macs_tau'], 3)} | {f(r['loss_macs_tau'], 3)} | "
                     f"{f(r['top1_loss_tau'], 3)} |")
    taus = [(r, path, t) for r in rows for path, t in r.get("predictor_tau", {}).items()]
    if taus:
        lines += ["", "Accuracy predictors against the archs trained alone (Kendall tau of the predictor's score vs "
                      "the archs' mean stand-alone test top-1):", "", "| space | regime | archs | predictor | tau |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['space']} | {r['regime']} | {r['archs']} | `{path}` | {t:.3f} |" for r, path, t in taus]
    lines += ["", "Per arch (test top-1 of each seed):", ""]
    for r in rows:
        lines.append(f"- {r['space']}, {r['regime']}: " + "; ".join(f"{k} {', '.join(map(str, v))}"
                                                                  for k, v in r["per_arch"].items()))
    lines += ["", "Reproduce: `python experiments/accuracy_bench.py " + " ".join(str(p) for p in folders)
              + "".join(f" --predictor {sp}={path}" for sp, path in predictors) + "`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="folders written by ranking_fidelity.py gpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--predictor", action="append", default=[], metavar="SPACE=FILE",
                   help="an accuracy predictor to rank the archs of SPACE with (repeatable)")
    args = p.parse_args(argv)
    predictors = []
    for item in args.predictor:
        space, eq, path = item.partition("=")
        if not eq or not Path(path).is_file():
            p.error(f"--predictor {item}: give SPACE=FILE with an existing predictor file")
        predictors.append((space, Path(path)))
    rows = summarise(args.folders, predictors)
    args.out.mkdir(parents=True, exist_ok=True)
    rel = [f.resolve().relative_to(Path.cwd().resolve()) if f.resolve().is_relative_to(Path.cwd().resolve()) else f
           for f in args.folders]
    (args.out / "regimes.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = markdown(rows, rel, predictors)
    (args.out / "regimes.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
