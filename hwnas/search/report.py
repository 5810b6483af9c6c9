"""What a search leaves in its run directory: trials.csv, pareto.csv, pareto.png, picks.yaml, report.md.

Everything here reads plain records (dicts) made from the study's completed trials, so a report
can be rewritten from a study alone. Files are written to a temporary name and renamed.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from hwnas.files import atomic_write

from .config import DIRECTIONS
from .pareto import non_dominated

COLUMNS = ["number", "arch_id", "accuracy", "latency_ms", "params", "macs", "mes", "feasible",
           "repaired", "greedy_step", "greedy_action", "arch"]


def records_from_trials(trials: Iterable) -> list[dict]:
    """One record per completed trial that carries an arch (in trial-number order)."""
    out = []
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        if "arch_id" not in a:
            continue
        out.append(dict(number=t.number, arch_id=a["arch_id"], accuracy=a["accuracy"],
                        latency_ms=a["latency_ms"], params=a["params"], macs=a["macs"], mes=a["mes"],
                        feasible=all(v <= 0 for v in t.constraints.values()),
                        repaired=bool(a.get("repaired", False)), greedy_step=a.get("greedy_step", ""),
                        greedy_action=a.get("greedy_action", ""), arch=a["arch"]))
    return out


def unique_archs(records: Sequence[dict]) -> list[dict]:
    """The first record of each arch id."""
    seen, out = set(), []
    for r in records:
        if r["arch_id"] not in seen:
            seen.add(r["arch_id"])
            out.append(r)
    return out


def _key(obj: str) -> str:
    return "latency_ms" if obj == "latency" else obj


def pareto_front(records: Sequence[dict], objectives: Sequence[str]) -> list[dict]:
    """The feasible, non-dominated unique archs, sorted by latency."""
    cand = [r for r in unique_archs(records) if r["feasible"]]
    pts = [[r[_key(o)] for o in objectives] for r in cand]
    front = [cand[i] for i in non_dominated(pts, [DIRECTIONS[o] for o in objectives])]
    return sorted(front, key=lambda r: (r["latency_ms"], -r["accuracy"]))


def pick_for(records: Sequence[dict], latency_ms: float, params: float) -> dict | None:
    """The most accurate arch at or under the latency and the size (ties: the faster one)."""
    ok = [r for r in unique_archs(records) if r["latency_ms"] <= latency_ms and r["params"] <= params]
    return max(ok, key=lambda r: (r["accuracy"], -r["latency_ms"], -r["params"])) if ok else None


def csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


@dataclass
class ReportContext:
    """Everything the report says about where its figures come from."""
    target: str
    space: str
    strategy: str
    objectives: list[str]
    resolution: int  # deployment resolution (latency, params, MES)
    eval_resolution: int | None  # evaluator resolution (accuracy)
    accuracy_label: str  # e.g. "top-1 % on digits val"
    num_classes: int
    table_path: str
    table_description: str
    table_estimated: bool
    mes_formula: str
    study_name: str
    storage: str
    budget: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)  # completed, infeasible, repaired, evaluations
    warnings: list = field(default_factory=list)  # about the latency table: another device, stale rows used
    # unreadable images left out (data.on_bad_image=skip): {"training": {path: reason}, "evaluation": {...}}
    skipped_images: dict = field(default_factory=dict)


def build_picks(records: Sequence[dict], references: dict[str, dict]) -> dict[str, dict]:
    """For each reference (its metrics in `references`): the reference and the best subnet under it."""
    out = {}
    for name, ref in references.items():
        p = pick_for(records, ref["latency_ms"], ref["params"])
        entry: dict[str, Any] = {"reference": {k: ref[k] for k in ("arch_id", "accuracy", "latency_ms",
                                                                   "params", "mes")}}
        if p is None:
            entry["pick"] = None
        else:
            entry["pick"] = {k: p[k] for k in ("arch_id", "accuracy", "latency_ms", "params", "mes")}
            entry["pick"]["trial"] = p["number"]
            entry["pick"]["arch"] = json.loads(p["arch"])
        out[name] = entry
    return out


def write_outputs(run_dir: Path, records: list[dict], objectives: list[str],
                  references: dict[str, dict], ctx: ReportContext,
                  greedy_path: list[dict] | None = None, verification: list[dict] | None = None) -> dict:
    """Write every output file; returns the picks."""
    run_dir = Path(run_dir)
    front = pareto_front(records, objectives)
    picks = build_picks(records, references)
    atomic_write(run_dir / "trials.csv", csv_text(records, COLUMNS))
    atomic_write(run_dir / "pareto.csv", csv_text(front, COLUMNS))
    atomic_write(run_dir / "picks.yaml", yaml.safe_dump(_plain(picks), sort_keys=False))
    if greedy_path is not None:
        atomic_write(run_dir / "greedy_path.csv", csv_text(greedy_path, list(greedy_path[0]) if greedy_path else ["step"]))
    plot_pareto(run_dir / "pareto.png", records, front, references, picks, ctx)
    atomic_write(run_dir / "report.md", report_markdown(records, front, references, picks, ctx,
                                                        greedy_path, verification))
    return picks


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item"):
        return x.item()
    return x


def _res_note(ctx: ReportContext) -> tuple[str, str]:
    acc_res = f"{ctx.eval_resolution}×{ctx.eval_resolution}" if ctx.eval_resolution else "its own resolution"
    dep_res = f"{ctx.resolution}×{ctx.resolution}"
    return acc_res, dep_res


def plot_pareto(path: Path, records: Sequence[dict], front: Sequence[dict], references: dict[str, dict],
                picks: dict[str, dict], ctx: ReportContext) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc_res, dep_res = _res_note(ctx)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), constrained_layout=True)
    for ax, key, scale, label in ((axes[0], "latency_ms", 1.0, f"latency (ms, {ctx.target}, {dep_res})"),
                                  (axes[1], "params", 1e-6, f"parameters (M, {ctx.num_classes}-class head)")):
        ax.scatter([r[key] * scale for r in records], [r["accuracy"] for r in records], s=10,
                   c="0.75", label="trials")
        fs = sorted(front, key=lambda r: r[key])
        ax.plot([r[key] * scale for r in fs], [r["accuracy"] for r in fs], "o-", ms=4, c="tab:blue",
                label="Pareto front")
        for name, ref in references.items():
            ax.scatter([ref[key] * scale], [ref["accuracy"]], marker="*", s=160, c="tab:red", zorder=5)
            ax.annotate(name.split("_")[-1].upper(), (ref[key] * scale, ref["accuracy"]),
                        textcoords="offset points", xytext=(5, 5), color="tab:red")
            p = picks[name]["pick"]
            if p is not None:
                ax.annotate("", (p[key] * scale, p["accuracy"]), (ref[key] * scale, ref["accuracy"]),
                            arrowprops=dict(arrowstyle="->", color="tab:green", lw=1))
                ax.scatter([p[key] * scale], [p["accuracy"]], marker="D", s=40, c="tab:green", zorder=6)
        ax.scatter([], [], marker="*", s=160, c="tab:red", label="references")
        ax.scatter([], [], marker="D", s=40, c="tab:green", label="picks")
        ax.set_xlabel(label)
        ax.set_ylabel(f"{ctx.accuracy_label} ({acc_res})")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    est = " — latency table ESTIMATED" if ctx.table_estimated else ""
    fig.suptitle(f"{ctx.space} on {ctx.target}: {ctx.strategy}{est}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def _fmt(r: dict | None, key: str) -> str:
    if r is None:
        return "—"
    v = r[key]
    return {"accuracy": f"{v:.2f}", "latency_ms": f"{v:.3f}", "params": f"{v / 1e6:.3f} M",
            "mes": f"{v:.1f}"}.get(key, str(v))


def _pick_name(p: dict | None, ref: dict) -> str:
    if p is None:
        return "none found"
    return f"{p['arch_id']} (the reference itself)" if p["arch_id"] == ref["arch_id"] else p["arch_id"]


def report_markdown(records, front, references, picks, ctx: ReportContext, greedy_path=None,
                    verification=None) -> str:
    acc_res, dep_res = _res_note(ctx)
    L = [f"# Search report: {ctx.space} on {ctx.target} ({ctx.strategy})", ""]
    for w in ctx.warnings:
        L += [f"> **WARNING — {w.split(':', 1)[0]}**:{w.split(':', 1)[1]}", ""]
    if ctx.table_estimated:
        L += [f"> **The latency table is ESTIMATED, not measured on the device**: {ctx.table_description}",
              "> Latency and MES below are predictions of that estimate; a measured table replaces it.", ""]
    L += ["## Where the figures come from", "",
          f"- **accuracy**: {ctx.accuracy_label}, at **{acc_res}** input (the evaluator's resolution).",
          f"- **latency**: predicted by `{ctx.table_path}` for `{ctx.target}`, the same arch at the "
          f"deployment resolution **{dep_res}**. {ctx.table_description}",
          f"- **params**: the deployment model at {dep_res} with a {ctx.num_classes}-class head.",
          f"- **MES**: {ctx.mes_formula} (latency and params as above).",
          f"- study `{ctx.study_name}` in `{ctx.storage}`; objectives: {', '.join(ctx.objectives)}"]
    L += _skipped_lines(ctx)
    if any(v is not None for v in ctx.budget.values()):
        L.append(f"- budget (constraints): {', '.join(f'{k} ≤ {v}' for k, v in ctx.budget.items() if v is not None)}")
    c = ctx.counts
    L += [f"- trials: {c.get('completed', len(records))} completed, {len(unique_archs(records))} distinct archs, "
          f"{c.get('infeasible', 0)} infeasible (pruned), {c.get('repaired', 0)} repaired; "
          f"Pareto front: {len(front)} archs", "",
          "## Picks vs references", "",
          "For each reference, the most accurate arch found at or under its latency and its size.", "",
          "| reference | accuracy | latency ms | params | MES | pick | accuracy | latency ms | params | MES | Δ accuracy |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, ref in references.items():
        p = picks[name]["pick"]
        delta = f"{p['accuracy'] - ref['accuracy']:+.2f}" if p else "—"
        L.append(f"| {name} | {_fmt(ref, 'accuracy')} | {_fmt(ref, 'latency_ms')} | {_fmt(ref, 'params')} | "
                 f"{_fmt(ref, 'mes')} | {_pick_name(p, ref)} | {_fmt(p, 'accuracy')} | "
                 f"{_fmt(p, 'latency_ms')} | {_fmt(p, 'params')} | {_fmt(p, 'mes')} | {delta} |")
    L += ["", "Archs of the picks: `picks.yaml`. All trials: `trials.csv`; the front: `pareto.csv`; "
          "plot: `pareto.png`.", "", "![Pareto front](pareto.png)", ""]
    if verification:
        stat = verification[0].get("statistic", "median_ms").removesuffix("_ms")
        L += ["## Verification on the target's backend", "",
              f"Measured end to end on the backend, the same statistic ({stat} of many runs) the table sums.", "",
              f"| pick | predicted ms | measured ms ({stat}) | error | budget ms | within budget |",
              "|---|---|---|---|---|---|"]
        for v in verification:
            if v.get("measured_ms") is None:
                L.append(f"| {v['name']} | {v['predicted_ms']:.3f} | not measured: {v['note']} | | | |")
            else:
                err = v["measured_ms"] / v["predicted_ms"] - 1
                ok = "yes" if v["measured_ms"] <= v["budget_ms"] else "**NO: budget violated**"
                L.append(f"| {v['name']} | {v['predicted_ms']:.3f} | {v['measured_ms']:.3f} | {err:+.1%} | "
                         f"{v['budget_ms']:.3f} | {ok} |")
        L += [""] + [f"Note: {n}" for n in dict.fromkeys(v["note"] for v in verification
                                                          if v.get("note") and v.get("measured_ms") is not None)]
        L.append("")
    if greedy_path:
        L += ["## mes_greedy path", "", "| step | action | accuracy | latency ms | params | MES | candidates |",
              "|---|---|---|---|---|---|---|"]
        for s in greedy_path:
            L.append(f"| {s['step']} | {s['action']} | {s['accuracy']:.2f} | {s['latency_ms']:.3f} | "
                     f"{s['params'] / 1e6:.3f} M | {s['mes']:.1f} | {s['candidates']} |")
        L.append("")
    return "\n".join(L)


def _skipped_lines(ctx: ReportContext) -> list[str]:
    """The report's line on unreadable images left out of the data (none: no line)."""
    parts = {k: v for k, v in (ctx.skipped_images or {}).items() if v}
    if not parts:
        return []
    files = sorted({p for v in parts.values() for p in v})
    where = "; ".join(f"{len(v)} in the supernet's {k}" if k == "training" else f"{len(v)} in this search's {k}"
                      for k, v in parts.items())
    return [f"- **unreadable images skipped** (data.on_bad_image=skip): {len(files)} file(s) ({where}): "
            + ", ".join(f"`{p}`" for p in files[:10]) + (" ..." if len(files) > 10 else "")]


def summary_text(picks: dict, references: dict, ctx: ReportContext, run_dir: Path, n_completed: int) -> str:
    acc_res, dep_res = _res_note(ctx)
    lines = ["", f"hwnas search: {ctx.space} on {ctx.target} ({ctx.strategy}), {n_completed} trials"]
    if ctx.table_estimated:
        lines.append("  latency table: ESTIMATED (not measured on the device) — see report.md")
    for w in ctx.warnings:
        lines.append(f"  WARNING: {w}")
    lines.append(f"  accuracy: {ctx.accuracy_label} at {acc_res}; latency/params at {dep_res}")
    skipped = sorted({p for v in (ctx.skipped_images or {}).values() for p in v})
    if skipped:
        lines.append(f"  data: {len(skipped)} unreadable image(s) skipped (data.on_bad_image=skip) — see report.md")
    lines.append(f"  {'reference':<22}{'acc':>7}{'ms':>8}{'M':>7}   {'pick':<13}{'acc':>7}{'ms':>8}{'M':>7}")
    for name, ref in references.items():
        p = picks[name]["pick"]
        right = (f"{'(itself)' if p['arch_id'] == ref['arch_id'] else p['arch_id']:<13}{p['accuracy']:>7.2f}{p['latency_ms']:>8.3f}{p['params'] / 1e6:>7.2f}"
                 if p else "none found")
        lines.append(f"  {name:<22}{ref['accuracy']:>7.2f}{ref['latency_ms']:>8.3f}"
                     f"{ref['params'] / 1e6:>7.2f}   {right}")
    lines.append(f"  report: {Path(run_dir) / 'report.md'}")
    return "\n".join(lines)
