"""Latency-table fidelity: measure held-out random subnets end to end and compare with `predict`.

    python experiments/latency_fidelity.py --target onnxruntime_cpu                # both spaces
    python experiments/latency_fidelity.py --target torch_cuda --space nextvit --n 100
    python experiments/latency_fidelity.py --space efficientformerv2 --refit 60 --seed 1   # more fit networks, fresh held-out set

For each space: ≥ 100 random subnets disjoint from the table's correction-fit set are measured
on the target's backend (settings from hwnas/conf/target/<target>.yaml), resumably, into the
table's `.networks.csv`; writes experiments/results/latency_fidelity_<target>_<space>.{json,png}
(share within ±5 %/±10 %, MAPE, Kendall tau, per-network numbers) and records the summary in the
table's provenance. No Hydra import: this runs on the GPU machine too.

`--refit N` first measures N more random fit networks (seed offset 1), refits the correction on
all fit networks (every form, kept by leave-one-out error) and stores it in the table; `--seed S`
(S > 0) draws a held-out set disjoint from the fit set and from every earlier held-out set, so the
new correction is judged on networks it has never seen.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import search_spaces
from hwnas.latency import LatencyTable, default_table_path, get_backend
from hwnas.latency.config import target_settings
from hwnas.latency.fidelity import run_fidelity
from hwnas.latency.profiler import table_path_for

ROOT = Path(__file__).resolve().parents[1]


def refit(backend, space, table, n_more: int, progress: bool = True, fresh_only: bool = False) -> dict:
    """Measure `n_more` fit networks beyond the table's, refit the correction on all of them (or,
    `fresh_only`, on the new ones: a correction for the machine's state of this session)."""
    from hwnas.latency.correction import fit_correction
    from hwnas.latency.profiler import attach_canary, measure_networks
    from hwnas.latency.table import networks_path, read_networks
    attach_canary(backend, table)
    old_ids = set(table.correction(space.name).get("fit_arch_ids") or [])
    held = {r["arch_id"] for r in read_networks(networks_path(table.path)) if r["role"] == "fidelity"}
    extra = [a for a in space.sample_many(3 * n_more, seed=10_001) if a.id not in old_ids | held][:n_more]
    recs = [r for r in read_networks(networks_path(table.path))
            if r["space"] == space.name and r["role"] == "fit" and r["arch_id"] in old_ids and not fresh_only]
    recs += measure_networks(backend, extra, "fit", networks_path(table.path), progress, table.current_fingerprints())
    corr = fit_correction(table, recs)
    table.provenance.setdefault("correction", {})[space.name] = corr
    table.invalidate()
    table.save()
    print(f"{space.name}: correction refitted on {len(recs)} networks: {corr['form']}, LOO MAPE "
          f"{ {k: (round(100 * v, 2) if v is not None else None) for k, v in corr['loo_mape'].items()} } %", flush=True)
    return corr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="onnxruntime_cpu")
    ap.add_argument("--space", action="append", choices=search_spaces.list_spaces(),
                    help="repeatable; default: every space")
    ap.add_argument("--n", type=int, default=100, help="held-out subnets per space")
    ap.add_argument("--table", type=Path, help="table CSV (default: this device's table, else the shipped one)")
    ap.add_argument("--tables-dir", type=Path, help="folder holding <target>/<device>.csv")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "experiments" / "results")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--refit", type=int, default=0, help="measure this many more fit networks and refit")
    ap.add_argument("--refit-fresh", action="store_true",
                    help="with --refit: fit on the newly measured networks only (this session's machine state)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    settings = target_settings(args.target)
    backend = get_backend(settings.pop("name"), **settings)
    summary = {}
    for name in args.space or search_spaces.list_spaces():
        space = search_spaces.get_space(name)
        path = args.table or table_path_for(backend, args.tables_dir)
        if not path.exists() and args.table is None and args.tables_dir is None:
            path = default_table_path(args.target, name)
        table = LatencyTable.load(path, target=args.target, space=name)
        if args.refit:
            refit(backend, space, table, args.refit, progress=not args.no_progress, fresh_only=args.refit_fresh)
        res = run_fidelity(backend, space, table, n=args.n, results_dir=args.results_dir, seed=args.seed,
                           progress=not args.no_progress, exclude_earlier=args.seed > 0)
        summary[name] = res["held_out"]
        h = res["held_out"]
        print(f"{args.target} {name}: {100 * h['within_10pct']:.1f}% within ±10%, {100 * h['within_5pct']:.1f}% "
              f"within ±5%, MAPE {100 * h['mape']:.2f}%, Kendall tau {h['kendall_tau']:.3f} (n={h['n']})", flush=True)
    print(json.dumps(summary, indent=2))
    ok = all(s["within_10pct"] >= 0.95 and s["kendall_tau"] >= 0.9 for s in summary.values())
    print("acceptance (>=95% within ±10%, tau >= 0.9):", "met" if ok else "NOT met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
