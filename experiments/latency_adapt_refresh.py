"""Would re-measuring a few blocks lift an adapted table's ranking? An offline simulation on the committed
measurements (issue 28); nothing is measured.

    PYTHONPATH=. python experiments/latency_adapt_refresh.py

EfficientFormerV2's adapt from the AMD EPYC `onnxruntime_cpu` table to an Intel Xeon misses Kendall τ 0.95
in four of five rounds (0.925-0.936), while a full profile of the same machine reaches 0.946-0.951: the
device change is not one scale per block kind. Where a full profile of the adapt's machine is committed
(`experiments/results/latency_adapt_full_tables/<device>/<space>/`), this script asks what an adapt that
also re-measured the k blocks that weigh most would have reached:

- the blocks are ranked by their share of the predicted time of a pool of networks (the space's references
  and 300 random subnets, seed 0; source rows times the source's own per-kind correction): what a few
  re-measured blocks can move most;
- an adapted table of k re-measured blocks: those k rows from the full profile (this machine), every other
  row the source's times the per-kind median ratio (this machine / source) of the re-measured rows of its
  kind (the overall median where a kind has none);
- its correction is fitted on the adapt run's N networks only, as the library does (one scale, or per kind
  at ridge 0.05, the lower leave-one-out error), and judged on the adapt run's 50 held-out subnets.

k = 0 is the adapt as committed (checked against its result file); k = all is a full profile's blocks with
the adapt's N networks. A second table adds more fitted networks instead: the full profile's own fit
networks (measured on the same machine, in its canary units, converted to the adapt run's by the ratio of
the two canary references, as `latency_adapt.py --score-full-table` does), the first m of them with the
adapt's N, on the source's rows (k = 0) and on the full profile's (k = all). Measuring cost of k blocks: k times the full profile's seconds per block. The full
profile ran minutes from the held-out networks (other canary reference, other drift): its rows stand in
for what the adapt run would have measured.

Writes experiments/results/latency_adapt_refresh.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

import hwnas.latency.correction as C  # noqa: E402
import search_spaces  # noqa: E402
from hwnas.latency import LatencyTable  # noqa: E402
from hwnas.latency.keys import block_keys  # noqa: E402
from shared import GOAL, LIBRARY_FORMS, design, fit_form, load_result, write_results  # noqa: E402
from search_spaces import Arch  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
FULL = RESULTS / "latency_adapt_full_tables"
KS = (0, 4, 8, 16, 24, 32, 48, 64, 96, None)  # None: every block
MORE = (0, 6, 12, 24, None)  # full-profile fit networks added to the adapt's (None: all of them)


def pairs() -> list[tuple[Path, Path]]:
    """(adapt result, full table of the same machine) for every committed onnxruntime_cpu adapt that has one."""
    out = []
    for res in sorted(RESULTS.glob("latency_adapt_onnxruntime_cpu_*_*.json")):
        space, device = res.stem[len("latency_adapt_onnxruntime_cpu_"):].split("_", 1)
        machine = device[:-1] if device.endswith("vm2") else device  # vm2: the same VM 20 minutes later
        tables = sorted((FULL / machine / space / "onnxruntime_cpu").glob("*.csv")) if (FULL / machine).is_dir() else []
        tables = [t for t in tables if not t.name.endswith((".networks.csv", ".partial.csv"))]
        if tables:
            out.append((res, tables[0]))
    return out


def ranked_blocks(source: LatencyTable, space: str) -> list[str]:
    """Block keys by their share of the pool's predicted time, largest first."""
    sp = search_spaces.get_space(space)
    pool = list(sp.references().values()) + sp.sample_many(300, seed=0)
    corr = source.correction(space)
    a_src, a_def = corr.get("a", {}), corr.get("a_default", 1.0)
    weight: dict[str, float] = {}
    for arch in pool:
        for k in block_keys(arch):
            weight[k] = weight.get(k, 0.0) + source.rows[k][source.statistic] * a_src.get(C.kind_of(k), a_def)
    return sorted(weight, key=lambda k: -weight[k])


def refreshed(source: LatencyTable, full: LatencyTable, keys: list[str]) -> LatencyTable:
    """The source with `keys` re-measured (the full profile's rows) and the rest scaled per kind."""
    stat = source.statistic
    t = copy.deepcopy(source)
    if not keys:
        return t
    ratio = {k: full.rows[k][stat] / source.rows[k][stat] for k in keys}
    overall = float(np.median(list(ratio.values())))
    by_kind: dict[str, list[float]] = {}
    for k, r in ratio.items():
        by_kind.setdefault(C.kind_of(k), []).append(r)
    q = {kind: float(np.median(v)) for kind, v in by_kind.items()}
    for k, row in t.rows.items():
        if k in ratio:
            row[stat] = full.rows[k][stat]
        elif k in full.rows:
            row[stat] = source.rows[k][stat] * q.get(C.kind_of(k), overall)
    return t


def simulate(result_file: Path, full_file: Path) -> dict:
    res, source, fit_archs, yf, held, held_archs, yh = load_result(result_file)
    space, stat = res["scope"], source.statistic
    full = LatencyTable.load(full_file, target=res["target"], space=space)
    order = ranked_blocks(source, space)
    prof = full.provenance.get("profiling", {}).get(space, {})
    per_block_s = prof.get("block_seconds", float("nan")) / max(1, prof.get("n_measured") or len(order))
    # the full profile's fit networks, in the adapt run's canary units; none of the held-out subnets among them
    ref_full = full.provenance["canary_ref"]["p10_ms"]
    ref_adapt = res["adapt"]["canary_ref"]["p10_ms"]
    with open(full_file.with_suffix("").with_suffix(".networks.csv")) as f:
        extra = [r for r in csv.DictReader(f) if r["space"] == space and r["role"] == "fit"]
    extra = [r for r in extra if r["arch_id"] not in {n["arch_id"] for n in held}]
    extra_archs = [Arch.from_dict(json.loads(r["arch"])) for r in extra]
    y_extra = np.array([float(r[stat]) * ref_adapt / ref_full for r in extra])
    per_net_s = res["adapted_table_provenance"]["adapted"]["scopes"][space]["seconds"] / len(yf)
    kinds = sorted({C.kind_of(k) for a in fit_archs + held_archs + extra_archs for k in block_keys(a)})

    def judged(table, archs, y) -> tuple[str, dict]:
        fits = {}
        for name, (form, ridges) in LIBRARY_FORMS.items():
            fits[name] = fit_form(design(table, space, archs, "kind", kinds, False), y,
                                  design(table, space, held_archs, "kind", kinds, False), form, ridges)
        lib = min(fits, key=lambda n: fits[n]["loo_mape"])
        return lib, C.fidelity_metrics(fits[lib]["pred"], yh)

    rows = []
    for k in KS:
        keys = order if k is None else order[:k]
        lib, m = judged(refreshed(source, full, keys), fit_archs, yf)
        rows.append({"blocks": len(keys), "of": len(order), "measuring_s": round(len(keys) * per_block_s, 1),
                     "form": lib, "held_out": m, "goal_met": all(m[g] >= v for g, v in GOAL.items())})
    more = []
    for blocks in (0, None):
        table = refreshed(source, full, order if blocks is None else [])
        for n in MORE:
            n = len(extra) if n is None else min(n, len(extra))
            lib, m = judged(table, fit_archs + extra_archs[:n], np.concatenate([yf, y_extra[:n]]))
            more.append({"blocks": len(order) if blocks is None else 0, "networks": len(yf) + n,
                         "measuring_s": round(n * per_net_s + (len(order) * per_block_s if blocks is None else 0), 1),
                         "form": lib, "held_out": m, "goal_met": all(m[g] >= v for g, v in GOAL.items())})
    committed = res["held_out"]["adapted"]
    return {"result_file": result_file.name, "full_table": str(full_file.relative_to(ROOT)), "space": space,
            "machine": res["machine"]["device"], "adapt_networks": len(yf), "adapt_measuring_s":
            res["adapted_table_provenance"]["adapted"]["scopes"][space]["seconds"],
            "seconds_per_block": round(per_block_s, 3), "k0_matches_committed":
            abs(rows[0]["held_out"]["kendall_tau"] - committed["kendall_tau"]) < 1e-9, "rows": rows,
            "canary_ref_p10_ms": {"full_table": ref_full, "adapt": ref_adapt}, "more_networks": more}


def markdown(out: list[dict]) -> str:
    lines = ["# Re-measuring a few blocks while adapting: an offline simulation (issue 28)", "",
             "Generated by `PYTHONPATH=. python experiments/latency_adapt_refresh.py` from committed measurements; "
             "nothing measured (the method is in the script's docstring). Each cell: Kendall τ · within ±10 % · "
             "within ±5 % on the adapt run's 50 held-out subnets; ✓ where the goal holds (τ ≥ 0.95, ≥ 95 %, "
             "≥ 80 %). Blocks re-measured: the k that weigh most in the space's networks; seconds: k times the full "
             "profile's seconds per block, on top of the adapt's own measuring.", ""]
    for r in out:
        lines += [f"## {r['space']}: `{r['result_file']}` with `{r['full_table']}`", "",
                  f"{r['machine']}; {r['adapt_networks']} adapt networks measured in {r['adapt_measuring_s']} s; "
                  f"{r['seconds_per_block']} s a block; k = 0 reproduces the committed adapt: "
                  f"{'yes' if r['k0_matches_committed'] else 'NO'}.", "",
                  "| blocks re-measured | + seconds | form (lower LOO) | τ · ±10 % · ±5 % | goal |", "|---|---|---|---|---|"]
        for row in r["rows"]:
            m = row["held_out"]
            lines.append(f"| {row['blocks']} of {row['of']} | {row['measuring_s']} | {row['form']} | "
                         f"{m['kendall_tau']:.3f} · {100 * m['within_10pct']:.0f} % · {100 * m['within_5pct']:.0f} % | "
                         f"{'✓' if row['goal_met'] else ''} |")
        lines += ["", "More fitted networks instead (the full profile's, converted to the adapt's canary units); + seconds: "
                  "the added networks at the adapt's seconds per network, plus the blocks where re-measured:", "",
                  "| blocks re-measured | networks fitted | + seconds | form (lower LOO) | τ · ±10 % · ±5 % | goal |",
                  "|---|---|---|---|---|---|"]
        for row in r["more_networks"]:
            m = row["held_out"]
            lines.append(f"| {row['blocks']} | {row['networks']} | {row['measuring_s']} | {row['form']} | "
                         f"{m['kendall_tau']:.3f} · {100 * m['within_10pct']:.0f} % · {100 * m['within_5pct']:.0f} % | "
                         f"{'✓' if row['goal_met'] else ''} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    write_results(args.out / "latency_adapt_refresh", [simulate(r, f) for r, f in pairs()], markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
