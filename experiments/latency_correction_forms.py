"""Which correction reaches ±5 %? Correction forms compared on a table's own measurements.

    python experiments/latency_correction_forms.py [--table latency_tables/onnxruntime_cpu/amd-epyc.csv] [--write]

Uses only networks already measured beside the table (`<device>.networks.csv`: the fit networks
and the held-out `fidelity` networks, measured at the time the table was made). For each space:

1. `refit`: the correction refitted by `hwnas.latency.correction.fit_correction` on every fit
   network measured beside the table (the shipped EFv2 table holds 56, its correction used 34),
   against the correction stored in the table; the held-out networks are never among them;
2. forms (one scale; per kind, ridge 0.01/0.05/0.2; per kind and resolution), each fitted on the
   fit networks only and judged on the 100 held-out networks (never in any fit);
3. the same forms fitted on the fit networks plus 50 held-out networks and judged on the other 50
   (20 random splits): what more fit networks would buy.

`--write` stores the refitted correction (1) in the table and regenerates its fidelity files from
the stored held-out measurements (nothing is re-measured; `run_fidelity` finds every network
measured with the current code's fingerprint). Writes
experiments/results/latency_correction_forms_<target>.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from hwnas.latency import LatencyTable, get_backend
import hwnas.latency.correction as C
from hwnas.latency.keys import block_keys
from hwnas.latency.table import networks_path, read_networks
from shared import group


def design(table, archs, by, groups):
    idx = {g: i for i, g in enumerate(groups)}
    X = np.zeros((len(archs), len(groups)))
    for n, a in enumerate(archs):
        for k in block_keys(a):
            X[n, idx[group(k, by)]] += table.rows[k][table.statistic]
    return X


def metrics(p, y):
    rel = (p - y) / y
    return {"within_5pct": float(np.mean(np.abs(rel) <= 0.05)), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "mape_pct": float(100 * np.mean(np.abs(rel))), "mean_signed_pct": float(100 * np.mean(rel))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=ROOT / "latency_tables" / "onnxruntime_cpu" / "amd-epyc.csv")
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args(argv)

    table = LatencyTable.load(args.table)
    stat = table.statistic
    recs = read_networks(networks_path(table.path))
    out = {"table": str(args.table.relative_to(ROOT) if args.table.is_absolute() else args.table),
           "device": table.device, "statistic": stat, "spaces": {}}
    refits = {}
    for space in table.spaces:
        corr = table.correction(space)
        # the held-out set of the table's own fidelity run (later rechecks are judged on their own)
        fid_file = ROOT / ((table.provenance.get("fidelity") or {}).get(space) or {}).get("result_file", "-")
        own = {n["arch_id"] for n in json.loads(fid_file.read_text())["networks"]} if fid_file.is_file() else None
        held = [r for r in recs if r["space"] == space and r["role"] == "fidelity" and (own is None or r["arch_id"] in own)]
        held_ids = {r["arch_id"] for r in held}
        fit = [r for r in recs if r["space"] == space and r["role"] == "fit" and r["arch_id"] not in held_ids]
        y_h = np.array([r[stat] for r in held])
        res = {"fit_networks": len(fit), "fit_networks_in_stored_correction": len(corr.get("fit_arch_ids") or []),
               "held_out": len(held)}
        stored = np.array([table.predict(r["arch"]) for r in held])
        refit = C.fit_correction(table, fit)
        refits[space] = refit
        shadow = LatencyTable(table.rows, {**table.provenance, "correction": {space: refit}}, check=False)
        res["stored_correction"] = {"form": corr.get("form"), "b": corr.get("b"), **metrics(stored, y_h)}
        res["refit_on_all_fit_networks"] = {"form": refit["form"], "b": refit["b"], "loo_mape": refit["loo_mape"],
                                            **metrics(np.array([shadow.predict(r["arch"]) for r in held]), y_h)}
        forms = {}
        rng = np.random.default_rng(0)
        for by in ("kind", "kind_hw"):
            groups = sorted({group(k, by) for r in fit + held for k in block_keys(r["arch"])})
            Xf = design(table, [r["arch"] for r in fit], by, groups)
            yf = np.array([r[stat] for r in fit])
            Xh = design(table, [r["arch"] for r in held], by, groups)
            for form, ridges in (("scale", [C.RIDGE]), ("per_kind", [0.01, 0.05, 0.2])):
                for ridge in ridges:
                    old, C.RIDGE = C.RIDGE, ridge
                    try:
                        a, b = C._fit(Xf, yf, form)
                        name = f"{'one scale' if form == 'scale' else 'per ' + by}" + (f", ridge {ridge}" if form != "scale" else "")
                        if form == "scale" and by == "kind_hw":
                            continue
                        entry = {"fit_only": metrics(Xh @ a + b, y_h)}
                        splits = []
                        for _ in range(20):
                            perm = rng.permutation(len(y_h))
                            tr, te = perm[:50], perm[50:]
                            a2, b2 = C._fit(np.concatenate([Xf, Xh[tr]]), np.concatenate([yf, y_h[tr]]), form)
                            splits.append(metrics(Xh[te] @ a2 + b2, y_h[te]))
                        entry["fit_plus_50_held_out_judged_on_other_50"] = {
                            k: float(np.mean([s[k] for s in splits])) for k in splits[0]}
                        forms[name] = entry
                    finally:
                        C.RIDGE = old
        res["forms"] = forms
        out["spaces"][space] = res
        s, r = res["stored_correction"], res["refit_on_all_fit_networks"]
        print(f"{space}: stored correction {100 * s['within_5pct']:.0f}% within ±5% (MAPE {s['mape_pct']:.2f}%, "
              f"bias {s['mean_signed_pct']:+.2f}%); refitted on all {len(fit)} fit networks "
              f"{100 * r['within_5pct']:.0f}% [{r['form']}] (MAPE {r['mape_pct']:.2f}%, bias {r['mean_signed_pct']:+.2f}%)")
        for name, e in forms.items():
            print(f"   {name:28s} fit only: {100 * e['fit_only']['within_5pct']:5.1f}% within ±5%   "
                  f"+50 held-out in the fit: {100 * e['fit_plus_50_held_out_judged_on_other_50']['within_5pct']:5.1f}%")
    target = table.target
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"latency_correction_forms_{target}.json").write_text(json.dumps(out, indent=2) + "\n")
    if args.write:
        from hwnas.latency.config import target_settings
        from hwnas.latency.fidelity import run_fidelity
        import search_spaces
        for space, corr in refits.items():
            table.provenance["correction"][space] = corr
        table.invalidate()
        table.save()
        settings = target_settings(target)
        backend = get_backend(settings.pop("name"), **settings)
        for space in table.spaces:
            res = run_fidelity(backend, search_spaces.get_space(space), LatencyTable.load(args.table), n=100,
                               results_dir=args.results_dir, progress=False)
            h = res["held_out"]
            print(f"{space}: fidelity regenerated from the stored measurements: {100 * h['within_5pct']:.0f}% within "
                  f"±5%, {100 * h['within_10pct']:.0f}% within ±10%, tau {h['kendall_tau']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
