"""Next-ViT's own ablations as measured slices of the space: Table 8 (shrink ratio r) and Table 2 (stage-3 pattern).

    python experiments/paper_ablations.py                                   # onnxruntime_cpu, this machine
    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/paper_ablations.py --target torch_cuda \\
        --tables-dir "$OUT/latency_tables" --out "$OUT"                     # GPU machine (torch + numpy only)

- **Table 8**: Next-ViT-S with r = 0.5, 0.75 (the paper's choice) and 1 in every NTB.
- **Table 2**: Next-ViT-S with the stage-3 pattern (NCB×N + NTB×1)×L at (N, L) = (1, 4), (2, 3)
  and (4, 2) (Next-ViT-S's own).

For each arch and target: the end-to-end latency measured on the target's backend (its deploy
form and timing rules, settings from hwnas/conf/target/<target>.yaml; on onnxruntime_cpu scaled to
the latency table's canary reference, so measured and predicted share one scale), `--rounds`
interleaved rounds whose median is reported with their spread; the latency table's prediction and
its held-out error (`provenance.fidelity`); params and MACs (analytic); accuracy where the
accuracy experiments (issue 11, Fashion-MNIST) measured the arch. The estimated Core ML table's
prediction is listed too, labelled ESTIMATED (no Apple device is reachable). Each trend is then
compared with the paper's finding (ARCHITECTURES.md §1.5: the tables' numbers are not available to
the project, only their direction; the paper measured TensorRT on a T4 and Core ML on an iPhone 12,
so only directions and orderings are compared).

Results: `<out>/paper_ablations.json` (every measurement of every target, rewritten atomically after
each one; a rerun skips what is there, `--resume FILE` starts from another run's file) and
`<out>/paper_ablations.md`. The repository's `experiments/results/paper_ablations.json` is read as
the starting point by default, so a GPU run adds its torch_cuda figures to the CPU ones and the two
files it writes replace the repository's. Time-boxed (`--deadline-s`). No Hydra/Optuna import.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import search_spaces
from hwnas._files import atomic_write

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
SPACE = "nextvit"

PAPER = {  # ARCHITECTURES.md §1.5 (the paper's text; its tables' numbers are not available)
    "table8_r": ("a smaller r lowers latency; r = 0.75 and r = 0.5 beat the pure transformer r = 1; r = 0.75 has the "
                 "best latency/accuracy trade-off (TensorRT on a T4, Core ML on an iPhone 12)"),
    "table2_pattern": ("at similar latency, N = 4 in stage 3 (repeated L times) gives the best trade-off; growing N "
                       "saturates"),
}
ACCURACY_FILES = ("ranking_fidelity_nextvit.json",)  # issue 11: stand-alone Fashion-MNIST top-1 by arch name


def ablation_archs() -> dict[str, list[tuple[str, search_spaces.Arch]]]:
    """The two ablations: (label, arch) in the paper's order; every arch validated by the space."""
    space = search_spaces.get_space(SPACE)
    s = space.reference("nextvit_s")
    out = {"table8_r": [], "table2_pattern": []}
    for r in (0.5, 0.75, 1.0):
        out["table8_r"].append((f"r={r:g}", space.coerce(search_spaces.Arch(
            SPACE, [dict(st, r=r) if "r" in st else dict(st) for st in s.stages], s.resolution))))
    for n, l in ((1, 4), (2, 3), (4, 2)):
        stages = [dict(st) for st in s.stages]
        stages[2] = dict(stages[2], n=n, l=l)
        out["table2_pattern"].append((f"(N,L)=({n},{l})", space.coerce(search_spaces.Arch(SPACE, stages, s.resolution))))
    return out


def known_accuracy(arch: search_spaces.Arch) -> dict | None:
    """Accuracy the repository's accuracy experiments measured for this arch (matched by reference
    name, since those ran at another resolution), else None."""
    space = search_spaces.get_space(SPACE)
    names = [n for n, a in space.references().items() if a.stages == arch.stages]
    for f in ACCURACY_FILES:
        p = RESULTS / f
        if not names or not p.exists():
            continue
        d = json.loads(p.read_text())
        for a in d.get("archs", []):
            if a.get("name") in names and a.get("standalone_test") is not None:
                return {"top1": a["standalone_test"], "data": d.get("data"), "image_size": d.get("image_size"),
                        "how": f"trained alone ({d.get('standalone_recipe', {}).get('epochs')} epochs), test split",
                        "source": f"experiments/results/{f}"}
    return None


def load_table(target: str, tables_dir: Path | None):
    """(table, None) or (None, why it cannot predict)."""
    from hwnas.latency import LatencyTable, LatencyTableError, default_table_path
    try:
        path = default_table_path(target, SPACE, tables_dir)
        return LatencyTable.load(path, target=target, space=SPACE), None
    except LatencyTableError as e:
        return None, str(e).splitlines()[0]


def predict(table, arch) -> dict:
    from hwnas.latency import LatencyTableError
    if table is None:
        return {"predicted_ms": None}
    fid = (table.provenance.get("fidelity") or {}).get(SPACE) or {}
    out = {"table": f"latency_tables/{table.target}/{table.path.name}", "estimated": table.is_estimated,
           "table_held_out_mape": fid.get("mape"), "table_held_out_n": fid.get("n"),
           "table_within_10pct": fid.get("within_10pct")}
    try:
        return {"predicted_ms": table.predict(arch), **out}
    except LatencyTableError as e:
        return {"predicted_ms": None, "not_predicted": str(e).splitlines()[0][:300], **out}


def measure(backend, arch) -> dict:
    from hwnas.latency.profiler import _build, build_device
    model = _build(arch, build_device(backend))
    m = backend.measure(model, (backend.batch, 3, arch.resolution, arch.resolution))
    return {k: m[k] for k in ("median_ms", "p10_ms", "spread", "runs", "fingerprint") if k in m}


def summarise(results: dict) -> dict:
    """Per target and ablation: each arch's median over rounds, and the comparison with the paper."""
    out = {}
    for target, res in results["targets"].items():
        stat = res["statistic"]
        res["rounds_done"] = min((len(r["rounds"]) for rs in res["ablations"].values() for r in rs), default=0)
        out[target] = {}
        for abl, rows in res["ablations"].items():
            lab = []
            for row in rows:
                vals = [m[stat] for m in row["rounds"]]
                med = statistics.median(vals) if vals else None
                row["measured_ms"] = med
                row["rounds_spread"] = (max(vals) - min(vals)) / med if len(vals) > 1 else None
                p = row.get("predicted_ms")
                row["prediction_error"] = (p - med) / med if p is not None and med else None
                lab.append(row)
            out[target][abl] = compare(abl, lab)
    results["comparison"] = out
    return results


def _order(rows, key) -> list[str] | None:
    if any(r.get(key) is None for r in rows):
        return None
    return [r["label"] for r in sorted(rows, key=lambda r: r[key])]


def _faster(x: float, y: float, noise: float) -> bool:
    """x is faster than y by more than the rounds' noise (relative)."""
    return x < y * (1 - noise)


def compare(abl: str, rows: list[dict]) -> dict:
    """The measured (and predicted) order against the paper's finding. A difference counts only where
    it exceeds the largest spread between rounds of any arch (`noise`)."""
    meas, pred = _order(rows, "measured_ms"), _order(rows, "predicted_ms")
    noise = max((r["rounds_spread"] or 0.0) for r in rows) if meas else None
    c = {"paper": PAPER[abl], "measured_order_fastest_first": meas, "predicted_order_fastest_first": pred,
         "coreml_estimated_order_fastest_first": _order(rows, "coreml_estimated_ms"), "max_rounds_spread": noise}
    if not meas:
        return c
    by = {r["label"]: r["measured_ms"] for r in rows}
    pby = {r["label"]: r["predicted_ms"] for r in rows} if pred else None
    said_pred = f"; the latency table predicts the order {pred}" if pred else ""
    if abl == "table8_r":
        a, b, d = by["r=0.5"], by["r=0.75"], by["r=1"]
        c["ratio_to_r0.75"] = {k: v / b for k, v in by.items()}
        if pby:
            c["predicted_ratio_to_r0.75"] = {k: v / pby["r=0.75"] for k, v in pby.items()}
        r1_slowest = _faster(a, d, noise) and _faster(b, d, noise)
        half = "faster" if _faster(a, b, noise) else "slower" if _faster(b, a, noise) else "within noise"
        c["r1_slowest_beyond_noise"] = r1_slowest
        c["r0.5_vs_r0.75"] = half
        if r1_slowest and half == "faster":
            v = "agrees: latency falls with r (r = 0.5 < 0.75 < 1, each beyond the rounds' noise)"
        elif r1_slowest:
            v = ("partly: r = 1 is the slowest, as in the paper, but r = 0.5 is "
                 + ("slower than" if half == "slower" else "within the rounds' noise of") + " r = 0.75")
        elif _faster(d, min(a, b), noise):
            v = "disagrees: r = 1 is the fastest"
        else:
            v = "undecided: the differences are within the rounds' noise"
        c["verdict"] = v + f" (noise {noise:.1%})" + said_pred
        c["accuracy"] = ("not measured: no accuracy exists for r = 0.5 or 1 (the Fashion-MNIST supernet of "
                         "issue 11 was trained before r became elastic at full width, and its inherited "
                         "accuracies did not rank archs: ranking_fidelity_nextvit.md); the trade-off half of "
                         "the paper's claim is untested")
    else:
        lo, hi = min(by.values()), max(by.values())
        c["max_over_min"] = hi / lo
        c["ratio_to_(4,2)"] = {k: v / by["(N,L)=(4,2)"] for k, v in by.items()}
        if pby:
            c["predicted_max_over_min"] = max(pby.values()) / min(pby.values())
        similar = hi / lo <= 1.10
        c["similar_latency_within_10pct"] = similar
        c["verdict"] = (f"the three patterns are {'within' if similar else 'NOT within'} 10 % of each other's measured "
                        f"latency (max/min {hi / lo:.3f}, noise {noise:.1%}"
                        + (f"; predicted max/min {c['predicted_max_over_min']:.3f}" if pby else "")
                        + f"), so the paper's premise (a comparison at similar latency) "
                        + ("holds" if similar else "does not hold") + " on this target" + said_pred)
        c["accuracy"] = ("not measured: only (4, 2) (= Next-ViT-S) has an accuracy (issue 11); which pattern is "
                         "best at similar latency is untested")
    return c


def write(out_dir: Path, results: dict) -> None:
    summarise(results)
    atomic_write(out_dir / "paper_ablations.json", json.dumps(results, indent=2) + "\n")
    atomic_write(out_dir / "paper_ablations.md", markdown(results))


def _f(v, fmt="{:.2f}"):
    return "—" if v is None else fmt.format(v)


def markdown(results: dict) -> str:
    L = ["# Next-ViT's ablations as measured slices of the space (issue 17)", "",
         "`experiments/paper_ablations.py`. Next-ViT Table 8 (Next-ViT-S with the NTB shrink ratio r in every NTB) and "
         "Table 2 (Next-ViT-S with the stage-3 pattern (NCB×N + NTB×1)×L). The paper's numbers are not available "
         "to the project (ARCHITECTURES.md §1.5), only its findings; it measured TensorRT on a T4 and Core ML on an "
         "iPhone 12, so only directions and orderings are compared. `measured` is the median over interleaved "
         "rounds of the target's statistic; `spread` is (max − min)/median over the rounds; `pred.` is the "
         "shipped latency table's prediction, `err` its error against the measurement, and the table's own "
         "held-out error (MAPE over n random subnets) is given per target.", ""]
    for target, res in results["targets"].items():
        L += [f"## {target}: {res['device']}", "",
              f"{res['method']}. Statistic `{res['statistic']}`; {res['rounds_done']} round(s). "
              f"Command: `{res['command']}`. Date {res['date']}.", ""]
        if res.get("note"):
            L += [f"Conditions: {res['note']}", ""]
        if res.get("table"):
            L += [f"Table: `{res['table']}`, held-out MAPE {_f(res.get('table_held_out_mape'), '{:.1%}')} "
                  f"(n = {res.get('table_held_out_n')}).", ""]
        if res.get("table_note"):
            L += [f"Table: {res['table_note']}", ""]
        for abl, rows in res["ablations"].items():
            L += [f"### {'Table 8: shrink ratio r' if abl == 'table8_r' else 'Table 2: stage-3 pattern (N, L)'}", "",
                  "| arch | M params | GMACs | measured ms | spread | pred. ms | err | Core ML est. ms | top-1 |",
                  "|---|---|---|---|---|---|---|---|---|"]
            for r in rows:
                acc = r.get("accuracy")
                L.append(f"| {r['label']} | {r['params'] / 1e6:.2f} | {r['macs'] / 1e9:.2f} | {_f(r.get('measured_ms'))} | "
                         f"{_f(r.get('rounds_spread'), '{:.1%}')} | {_f(r.get('predicted_ms'))} | "
                         f"{_f(r.get('prediction_error'), '{:+.1%}')} | {_f(r.get('coreml_estimated_ms'))} | "
                         f"{(str(acc['top1']) + ' (' + acc['data'] + ', ' + str(acc['image_size']) + ' px)') if acc else '—'} |")
            c = results["comparison"][target][abl]
            L += ["", f"- Paper: {c['paper']}.",
                  f"- Measured order (fastest first): {c['measured_order_fastest_first']}; predicted: "
                  f"{c['predicted_order_fastest_first']}; largest spread between rounds {_f(c['max_rounds_spread'], '{:.1%}')}.",
                  f"- Core ML (ESTIMATED by the cost model from 7 published latencies, not measured), fastest first: "
                  f"{c['coreml_estimated_order_fastest_first']}."]
            if "verdict" in c:
                L.append(f"- **Ours: {c['verdict']}.**")
            if "accuracy" in c:
                L.append(f"- Accuracy: {c['accuracy']}.")
            missing = [r["label"] for r in rows if r.get("not_predicted")]
            if missing:
                L.append(f"- Not predicted ({', '.join(missing)}): {rows[[r['label'] for r in rows].index(missing[0])]['not_predicted']}")
            L.append("")
    for target in ("onnxruntime_cpu", "torch_cuda"):
        if target not in results["targets"]:
            L += [f"## {target}: not measured yet", "",
                  "Run on the GPU machine (after `experiments/profile_gpu.py --space nextvit --resume . --out \"$OUT\"`, "
                  "which adds the NTB rows the table lacks): `PYTHONUNBUFFERED=1 PYTHONPATH=. python "
                  "experiments/paper_ablations.py --target torch_cuda --tables-dir \"$OUT/latency_tables\" --out \"$OUT\"`, "
                  "then copy `$OUT/paper_ablations.{json,md}` to `experiments/results/`." if target == "torch_cuda"
                  else "Run `python experiments/paper_ablations.py` on the CPU box.", ""]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="onnxruntime_cpu", choices=("onnxruntime_cpu", "torch_cuda", "tensorrt"))
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for paper_ablations.{json,md}")
    ap.add_argument("--resume", type=Path, default=None,
                    help="an earlier paper_ablations.json to start from (default: <out>'s, else the repository's)")
    ap.add_argument("--tables-dir", type=Path, default=None, help="folder holding <target>/<device>.csv (default: shipped)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds per arch")
    ap.add_argument("--deadline-s", type=float, default=540.0, help="stop measuring after this many seconds")
    ap.add_argument("--note", default=None, help="a line on the conditions (e.g. the machine's load), kept with "
                    "the target's results")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a target setting (smoke runs: --set repeats=5 --set canary=false)")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    t0 = time.monotonic()
    deadline = t0 + args.deadline_s

    from hwnas.latency import get_backend
    from hwnas.latency.config import target_settings
    from hwnas.latency.profiler import attach_canary, now_iso
    settings = target_settings(args.target)
    for kv in args.set:
        k, _, v = kv.partition("=")
        settings[k] = {"true": True, "false": False}.get(v, v) if not v.replace(".", "", 1).isdigit() else \
            (float(v) if "." in v else int(v))
    backend = get_backend(settings.pop("name"), **settings)
    table, why = load_table(args.target, args.tables_dir)
    coreml, _ = load_table("coreml", None)
    if table is not None and backend.canary:
        if table.provenance.get("device") == backend.device() and table.provenance.get("canary"):
            attach_canary(backend, table)  # measured on the table's scale: measured and predicted compare
        else:
            table, why = None, (f"{table.path} was measured on {table.provenance.get('device')}, not this "
                                f"{backend.device()}; not compared")

    src = args.resume or next((p for p in (args.out / "paper_ablations.json", RESULTS / "paper_ablations.json")
                               if p.exists()), None)
    results = json.loads(src.read_text()) if src else {"space": SPACE, "targets": {}}
    archs = ablation_archs()
    old = results["targets"].get(args.target)
    setup = {"device": backend.device(), "runtime": f"{backend.runtime} {backend.runtime_version()}",
             "statistic": backend.statistic, "deploy_form": backend.form.describe()}
    if old and any(old.get(k) != v for k, v in setup.items()):
        print(f"{args.target}: earlier results were taken with another setup; measuring afresh", flush=True)
        old = None
    fid = ((table.provenance.get("fidelity") or {}).get(SPACE) or {}) if table else {}
    res = {**setup, "method": backend.method(), "date": now_iso(), "rounds_done": 0,
           "command": f"python experiments/paper_ablations.py --target {args.target}"
                      + (" --tables-dir \"$OUT/latency_tables\" --out \"$OUT\"" if args.tables_dir else ""),
           "table": f"latency_tables/{args.target}/{table.path.name}" if table else None,
           "table_held_out_mape": fid.get("mape"), "table_held_out_n": fid.get("n"),
           "table_note": None if table else why, "note": args.note or (old or {}).get("note"), "ablations": {}}
    for abl, items in archs.items():
        prev = {r["arch_id"]: r for r in (old or {}).get("ablations", {}).get(abl, [])}
        rows = []
        for label, a in items:
            p = prev.get(a.id, {})
            rows.append({"label": label, "arch_id": a.id, "arch": a.to_dict(), "params": a.params(), "macs": a.macs(),
                         **predict(table, a), "coreml_estimated_ms": predict(coreml, a)["predicted_ms"],
                         "accuracy": known_accuracy(a), "rounds": p.get("rounds", [])})
        res["ablations"][abl] = rows
    results["targets"][args.target] = res
    args.out.mkdir(parents=True, exist_ok=True)
    write(args.out, results)

    status = "done"
    for rnd in range(args.rounds):
        for abl, rows in res["ablations"].items():
            for row, (label, arch) in zip(rows, archs[abl]):
                if len(row["rounds"]) > rnd:
                    continue
                if time.monotonic() > deadline:
                    status = "deadline"
                    break
                ts = time.perf_counter()
                m = measure(backend, arch)
                row["rounds"].append({**m, "date": now_iso()})
                write(args.out, results)
                print(json.dumps({"t_s": round(time.monotonic() - t0, 1), "target": args.target, "ablation": abl,
                                  "arch": label, "round": rnd, backend.statistic: round(m[backend.statistic], 4),
                                  "predicted_ms": row.get("predicted_ms"), "s": round(time.perf_counter() - ts, 1)}),
                      flush=True)
    write(args.out, results)
    for abl, c in results["comparison"][args.target].items():
        print(f"{args.target} {abl}: measured order {c['measured_order_fastest_first']}; {c.get('verdict', '')}", flush=True)
    print(f"status {status}: {args.out / 'paper_ablations.json'}", flush=True)
    return 0 if status == "done" else 3


if __name__ == "__main__":
    raise SystemExit(main())
