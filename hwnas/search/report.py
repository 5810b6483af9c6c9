"""What a search leaves in its run directory: trials.csv, pareto.csv, pareto.png, picks.yaml, report.md.

Everything here reads plain records (dicts) made from the study's completed trials, so a report
can be rewritten from a study alone. Files are written to a temporary name and renamed.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from hwnas._files import atomic_write

from .objectives import latency_key, mes_key, objective_key
from .pareto import non_dominated
from .strategies import directions

COLUMNS = ["number", "arch_id", "accuracy", "latency_ms", "params", "macs", "mes", "feasible",
           "repaired", "greedy_step", "greedy_action", "arch"]


def metric_columns(targets: Sequence[str] | None = None) -> list[str]:
    """The figures of a record: accuracy, latency per target, params, macs, MES (the worst across
    targets) and, with several targets, MES per target."""
    t = list(targets or ["_"])
    if len(t) == 1:
        return ["accuracy", "latency_ms", "params", "macs", "mes"]
    return ["accuracy", *(latency_key(x, t) for x in t), "params", "macs", "mes", *(mes_key(x, t) for x in t)]


def columns(targets: Sequence[str] | None = None) -> list[str]:
    """trials.csv / pareto.csv columns (one target: `COLUMNS`, unchanged since before several targets)."""
    return ["number", "arch_id", *metric_columns(targets), "feasible", "repaired", "greedy_step",
            "greedy_action", "arch"]


def latency_columns(targets: Sequence[str] | None = None) -> list[str]:
    t = list(targets or ["_"])
    return [latency_key(x, t) for x in t]


def records_from_trials(trials: Iterable, targets: Sequence[str] | None = None) -> list[dict]:
    """One record per completed trial that carries an arch (in trial-number order)."""
    out = []
    metrics = metric_columns(targets)
    for t in sorted(trials, key=lambda t: t.number):
        a = t.user_attrs
        if "arch_id" not in a:
            continue
        out.append(dict(number=t.number, arch_id=a["arch_id"], **{k: a[k] for k in metrics},
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


def pareto_front(records: Sequence[dict], objectives: Sequence[str]) -> list[dict]:
    """The feasible, non-dominated unique archs, sorted by latency (the first target's)."""
    cand = [r for r in unique_archs(records) if r["feasible"]]
    pts = [[r[objective_key(o)] for o in objectives] for r in cand]
    front = [cand[i] for i in non_dominated(pts, directions(list(objectives)))]
    lat = "latency_ms" if not cand or "latency_ms" in cand[0] else next(k for k in cand[0] if k.startswith("latency_ms."))
    return sorted(front, key=lambda r: (r[lat], -r["accuracy"]))


def pick_for(records: Sequence[dict], latency_ms: float | dict, params: float) -> dict | None:
    """The most accurate arch at or under the latency and the size (ties: the faster one).

    `latency_ms`: a number (one target), or {column: ms} -- every latency column given must hold.
    """
    limits = {"latency_ms": latency_ms} if not isinstance(latency_ms, dict) else dict(latency_ms)
    ok = [r for r in unique_archs(records)
          if all(r[k] <= v for k, v in limits.items()) and r["params"] <= params]
    return max(ok, key=lambda r: (r["accuracy"], -sum(r[k] for k in limits), -r["params"])) if ok else None


def csv_text(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


@dataclass
class TargetReport:
    """What the report says about one target's latency figures."""
    name: str
    table_path: str
    table_description: str
    table_estimated: bool
    mes_formula: str
    warnings: list = field(default_factory=list)  # about the latency table: another device, stale rows used


@dataclass
class ReportContext:
    """Everything the report says about where its figures come from; one `TargetReport` per target
    (a search over one target is a search over a list of one)."""
    targets: list  # TargetReport per target
    space: str
    strategy: str
    objectives: list[str]
    resolution: Any  # deployment input size (latency, params, MES): an int or (H, W)
    eval_resolution: int | None  # evaluator resolution (accuracy)
    accuracy_label: str  # e.g. "top-1 % on digits val"
    num_classes: int
    study_name: str
    storage: str
    # the search's constraints, as given: {"latency_ms": ms | {target: ms} | None, "params_m": M | None}
    budget: dict = field(default_factory=dict)
    # where the budget came from: "given" (budget.*: the picks must meet it too) or "references"
    # (mes_greedy with none given: the smallest reference's latency and size, the path's stopping rule)
    budget_from: str = "given"
    counts: dict = field(default_factory=dict)  # completed, invalid (pruned), repaired, evaluations
    task: str = "classify"  # what is deployed and timed: classify | backbone (no head)
    # unreadable images left out (data.on_bad_image=skip): {"training": {path: reason}, "evaluation": {...}}
    skipped_images: dict = field(default_factory=dict)
    # one line where the accuracy source hardly ranks archs (a predictor with a low held-out tau); None: it ranks
    accuracy_caution: str | None = None
    # one line where the search covers part of the space only (a supernet of train.consistent_only); None: all of it
    archs_note: str | None = None

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    @property
    def multi(self) -> bool:
        return len(self.targets) > 1

    @property
    def input_size(self) -> tuple[int, int]:
        r = self.resolution
        return tuple(r) if isinstance(r, (tuple, list)) else (r, r)

    @property
    def deployed(self) -> str:
        """What latency and params are of, in words."""
        if self.task == "backbone":
            return "backbone (stem and stages, no head: the features a detector or segmenter consumes)"
        return f"classifier with a {self.num_classes}-class head"

    @property
    def given_budget(self) -> dict | None:
        """The budget every pick must meet: the one given (`budget.*`), not mes_greedy's stopping rule."""
        return self.budget if self.budget_from == "given" and _budget_words(self.budget) else None

    def who(self, target: TargetReport, template: str) -> str:
        """`template` with `{}` filled by the target's name where there are several targets (one
        target's report names it once, in its title)."""
        return template.format(target.name) if self.multi else ""


def _pick_entry(p: dict, keys: Sequence[str]) -> dict:
    entry = {k: p[k] for k in keys}
    entry["trial"] = p["number"]
    entry["arch"] = json.loads(p["arch"])
    return entry


def budget_limits(budget: dict | None, targets: Sequence[str]) -> tuple[dict[str, float], float]:
    """A report's `budget` as limits on record columns: ({latency column: ms}, params)."""
    budget = budget or {}
    names = list(targets)
    lat = budget.get("latency_ms")
    if lat is None:
        lat = {}
    elif not isinstance(lat, dict):
        lat = {names[0]: lat}
    params_m = budget.get("params_m")
    return ({latency_key(t, names): float(ms) for t, ms in lat.items()},
            math.inf if params_m is None else params_m * 1e6)


def build_picks(records: Sequence[dict], references: dict[str, dict],
                targets: Sequence[str] | None = None, budget: dict | None = None) -> dict[str, dict]:
    """For each reference (its metrics in `references`): the reference and the best subnet under it.

    `pick` is the best subnet at or under the reference's latency on every target at once (and its
    size); with several targets, `per_target[t]` is the best at or under its latency on t alone.
    A `budget` (the report's, as given) holds for every pick as well: a pick is what the user may
    deploy, so none is over it, whatever the reference's own latency.
    """
    names = list(targets or ["_"])
    keys = ["arch_id", *(k for k in metric_columns(names) if k != "macs")]
    b_lat, b_params = budget_limits(budget, names)
    params_cap = lambda ref: min(ref["params"], b_params)  # noqa: E731
    out = {}
    for name, ref in references.items():
        lat = {latency_key(t, names): ref[latency_key(t, names)] for t in names}
        p = pick_for(records, {k: min(v, b_lat.get(k, math.inf)) for k, v in lat.items()}, params_cap(ref))
        out[name] = {"reference": {k: ref[k] for k in keys}, "pick": None if p is None else _pick_entry(p, keys)}
        if len(names) > 1:  # the best on each target alone (and within every target's budget)
            per = {t: pick_for(records, {**b_lat, k: min(v, b_lat.get(k, math.inf))}, params_cap(ref))
                   for t, (k, v) in zip(names, lat.items())}
            out[name]["per_target"] = {t: None if q is None else _pick_entry(q, keys) for t, q in per.items()}
    return out


def write_outputs(run_dir: Path, records: list[dict], objectives: list[str],
                  references: dict[str, dict], ctx: ReportContext,
                  greedy_path: list[dict] | None = None, verification: list[dict] | None = None) -> dict:
    """Write every output file; returns the picks."""
    run_dir = Path(run_dir)
    front = pareto_front(records, objectives)
    picks = build_picks(records, references, ctx.target_names, ctx.given_budget)
    cols = columns(ctx.target_names)
    atomic_write(run_dir / "trials.csv", csv_text(records, cols))
    atomic_write(run_dir / "pareto.csv", csv_text(front, cols))
    atomic_write(run_dir / "picks.yaml", yaml.safe_dump(_plain(picks), sort_keys=False))
    if greedy_path is not None:
        atomic_write(run_dir / "greedy_path.csv", csv_text(greedy_path, list(greedy_path[0]) if greedy_path else ["step"]))
    plot_pareto(run_dir / "pareto.png", records, front, references, picks, ctx)
    atomic_write(run_dir / "report.md", report_markdown(records, front, references, picks, ctx, greedy_path,
                                                        verification))
    return picks


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item"):
        return x.item()
    return x


def _predicted(ctx: ReportContext) -> bool:
    """The accuracy is an accuracy predictor's (its label names the data and resolution it stands for)."""
    return ctx.accuracy_label.startswith("predicted")


def _res_note(ctx: ReportContext) -> tuple[str, str]:
    acc_res = f"{ctx.eval_resolution}×{ctx.eval_resolution}" if ctx.eval_resolution else "its own resolution"
    dep_res = "{}×{}".format(*ctx.input_size)
    return acc_res, dep_res


def _draw_references(ax, key: str, scale: float, references: dict, picks: dict, picks_label: str) -> None:
    """Each reference (a red star) and an arrow to its pick (a green diamond) on one panel."""
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
    ax.scatter([], [], marker="D", s=40, c="tab:green", label=picks_label)


def plot_pareto(path: Path, records: Sequence[dict], front: Sequence[dict], references: dict[str, dict],
                picks: dict[str, dict], ctx: ReportContext) -> None:
    """One panel per target (accuracy vs that target's latency), then accuracy vs params: all trials,
    the front (non-dominated across every objective), the references (stars) and arrows from each
    reference to its pick (at or under it on every target)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc_res, dep_res = _res_note(ctx)
    names = ctx.target_names
    what = "backbone" if ctx.task == "backbone" else f"{ctx.num_classes}-class head"
    panels = [(latency_key(t.name, names), 1.0, f"latency (ms, {t.name}, {ctx.task} {dep_res})"
               + ctx.who(t, " — ESTIMATED" if t.table_estimated else "")) for t in ctx.targets]
    panels.append(("params", 1e-6, f"parameters (M, {what})"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5), constrained_layout=True)
    for ax, (key, scale, label) in zip(axes, panels):
        ax.scatter([r[key] * scale for r in records], [r["accuracy"] for r in records], s=10,
                   c="0.75", label="trials")
        fs = sorted(front, key=lambda r: r[key])
        ax.plot([r[key] * scale for r in fs], [r["accuracy"] for r in fs], "o-", ms=4, c="tab:blue",
                label="Pareto front" + (" (all objectives)" if ctx.multi else ""))
        _draw_references(ax, key, scale, references, picks, "picks" + (" (every target at once)" if ctx.multi else ""))
        ax.set_xlabel(label)
        ax.set_ylabel(f"{ctx.accuracy_label} ({acc_res})")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower right")
    estimated = [t.name for t in ctx.targets if t.table_estimated]
    est = (" — latency table ESTIMATED" + (f" ({', '.join(estimated)})" if ctx.multi else "")) if estimated else ""
    fig.suptitle(f"{ctx.space} {ctx.task} at {dep_res} on {', '.join(names)}: {ctx.strategy}{est}")
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


def _verification_row(v: dict, lead: str) -> str:
    """One row of a verification table: `lead` (the pick, and its target where there are several),
    predicted and measured ms, error, budget and whether it holds."""
    if v.get("measured_ms") is None:
        return f"| {lead} | {v['predicted_ms']:.3f} | not measured: {v['note']} | | | |"
    err = v["measured_ms"] / v["predicted_ms"] - 1
    ok = "yes" if v["measured_ms"] <= v["budget_ms"] else "**NO: budget violated**"
    return (f"| {lead} | {v['predicted_ms']:.3f} | {v['measured_ms']:.3f} | {err:+.1%} | "
            f"{v['budget_ms']:.3f} | {ok} |")


def _lat_cells(r: dict | None, names: Sequence[str]) -> list[str]:
    return [("—" if r is None else f"{r[latency_key(t, names)]:.3f}") for t in names]


def _lat_head(names: Sequence[str]) -> str:
    """The latency columns' header: `latency ms`, or one `<target> ms` per target."""
    return "latency ms" if len(names) == 1 else " | ".join(f"{_short(t)} ms" for t in names)


def _budget_words(budget: dict) -> str:
    """The budget in words ('' for none): `latency ≤ 1.0 ms, params ≤ 8 M`."""
    parts = []
    for k, v in budget.items():
        if isinstance(v, dict):  # several targets: {target: ms}
            parts += [f"latency on {t} ≤ {ms:g} ms" for t, ms in v.items()]
        elif v is not None:
            parts.append(f"latency ≤ {v:g} ms" if k == "latency_ms" else f"params ≤ {v:g} M" if k == "params_m"
                         else f"{k} ≤ {v:g}")
    return ", ".join(parts)


def _within_budget(records: Sequence[dict], ctx: ReportContext) -> tuple[int, int, dict | None]:
    """(distinct archs, how many of them meet the budget, the fastest arch of all) -- by the budget's
    limits on each arch's figures, so the count holds whatever constraints a trial once stored."""
    archs = unique_archs(records)
    lat, params = budget_limits(ctx.budget, ctx.target_names)
    ok = [r for r in archs if all(r[k] <= v for k, v in lat.items()) and r["params"] <= params]
    col = next(iter(lat), latency_key(ctx.target_names[0], ctx.target_names))
    return len(archs), len(ok), min(archs, key=lambda r: r[col]) if archs else None


def _budget_line(records: Sequence[dict], ctx: ReportContext) -> list[str]:
    words = _budget_words(ctx.budget)
    if not words:
        return []
    n, ok, _ = _within_budget(records, ctx)
    src = ("as given (`budget.*`); every pick below meets it too" if ctx.budget_from == "given" else
           "none given, so mes_greedy slims until the smallest reference's latency and size hold")
    return [f"- budget (constraints): {words} ({src}); **{ok} of {n}** distinct archs found meet it"]


def report_markdown(records, front, references, picks, ctx: ReportContext, greedy_path=None,
                    verification=None) -> str:
    """report.md: where the figures come from (task, input, accuracy, each target's latency table
    and MES, skipped images), the picks against the references, and with several targets the best
    pick per target and what meeting every target at once costs in accuracy."""
    acc_res, dep_res = _res_note(ctx)
    names = ctx.target_names
    lat_head = _lat_head(names)
    L = [f"# Search report: {ctx.space} {ctx.task} at {dep_res} on {', '.join(names)} ({ctx.strategy})", ""]
    for t in ctx.targets:
        for w in t.warnings:
            L += [f"> **WARNING — {w.split(':', 1)[0]}{ctx.who(t, ' ({})')}**:{w.split(':', 1)[1]}", ""]
    for t in ctx.targets:
        if t.table_estimated:
            L += [f"> **The {ctx.who(t, '{} ')}latency table is ESTIMATED, not measured on the device**: "
                  f"{t.table_description}",
                  f"> Latency and MES {ctx.who(t, 'on {} ')}below are predictions of that estimate; a measured table "
                  "replaces it.", ""]
    L += ["## Where the figures come from", "",
          f"- **task**: `{ctx.task}` -- latency and params are those of the {ctx.deployed}, "
          f"at input **{dep_res}**.",
          (f"- **accuracy**: {ctx.accuracy_label}, predicted from the arch alone (no image is evaluated)"
           if _predicted(ctx) else
           f"- **accuracy**: {ctx.accuracy_label}, at **{acc_res}** input (the evaluator's resolution)")
          + (", of the arch as a classifier (the supernet's proxy for the quality of its features)."
             if ctx.task == "backbone" else ".")]
    if ctx.accuracy_caution:
        L += [f"- **WARNING**: {ctx.accuracy_caution}."]
    if ctx.archs_note:
        L += [f"- **archs searched**: {ctx.archs_note}."]
    L += [f"- **latency**: predicted by `{t.table_path}` for `{t.name}`, the same arch as a "
          f"{ctx.task} at input **{dep_res}**. {t.table_description}" for t in ctx.targets]
    L.append(f"- **params**: the deployment model ({ctx.deployed}) at {dep_res}.")
    L += [f"- **MES**{ctx.who(t, ' on `{}`')}: {t.mes_formula} (latency and params as above)." for t in ctx.targets]
    if ctx.multi:
        L.append("- `mes` is the worst (lowest) of the targets' MES (`mes.<target>`).")
    L.append(f"- study `{ctx.study_name}` in `{ctx.storage}`; objectives: {', '.join(ctx.objectives)}")
    L += _skipped_lines(ctx)
    L += _budget_line(records, ctx)
    c = ctx.counts
    within = " and within the budget" if ctx.given_budget else ""
    L += [f"- trials: {c.get('completed', len(records))} completed, {len(unique_archs(records))} distinct archs, "
          f"{c.get('invalid', 0)} invalid (pruned: no repair made their parameters an arch), "
          f"{c.get('repaired', 0)} repaired; Pareto front{' (within the budget)' if _budget_words(ctx.budget) else ''}: "
          f"{len(front)} archs", "",
          "## Picks vs references", "",
          (f"For each reference, the most accurate arch found at or under its latency on **every** target at once "
           f"and under its size{within} (`pick` in `picks.yaml`; `python -m hwnas.extract run=DIR pick=NAME` exports it)."
           if ctx.multi else
           f"For each reference, the most accurate arch found at or under its latency and its size{within}."), "",
          f"| reference | accuracy | {lat_head} | params | MES | pick | accuracy | {lat_head} | params | MES | Δ accuracy |",
          "|---|---|" + "---|" * len(names) + "---|---|---|---|" + "---|" * len(names) + "---|---|---|"]
    for name, ref in references.items():
        p = picks[name]["pick"]
        delta = f"{p['accuracy'] - ref['accuracy']:+.2f}" if p else "—"
        L.append(f"| {name} | {_fmt(ref, 'accuracy')} | {' | '.join(_lat_cells(ref, names))} | {_fmt(ref, 'params')} | "
                 f"{_fmt(ref, 'mes')} | {_pick_name(p, ref)} | {_fmt(p, 'accuracy')} | "
                 f"{' | '.join(_lat_cells(p, names))} | {_fmt(p, 'params')} | {_fmt(p, 'mes')} | {delta} |")
    if ctx.multi:
        L += _per_target_lines(references, picks, names)
    L += ["", "Archs of the picks: `picks.yaml`. All trials: `trials.csv`; the front: `pareto.csv`; "
          "plot" + (" (one panel per target)" if ctx.multi else "") + ": `pareto.png`.", "",
          "![Pareto front](pareto.png)", ""]
    if verification:
        stat = "/".join(dict.fromkeys(v.get("statistic", "median_ms").removesuffix("_ms") for v in verification))
        L += [f"## Verification on {'each' if ctx.multi else 'the'} target's backend", "",
              (f"Measured end to end on each target's backend, the statistic its table sums ({stat} of many runs)."
               if ctx.multi else
               f"Measured end to end on the backend, the same statistic ({stat} of many runs) the table sums."), "",
              f"| pick |{' target |' if ctx.multi else ''} predicted ms | measured ms ({stat}) | error | budget ms | "
              "within budget |", "|---" * (6 + ctx.multi) + "|"]
        L += [_verification_row(v, v["name"] + (f" | {v['target']}" if ctx.multi else "")) for v in verification]
        L += [""] + [f"Note: {n}" for n in dict.fromkeys(v["note"] for v in verification
                                                          if v.get("note") and v.get("measured_ms") is not None)]
        L.append("")
    if greedy_path:
        L += ["## mes_greedy path" + (" (MES: the worst across targets)" if ctx.multi else ""), "",
              f"| step | action | accuracy | {lat_head} | params | MES | candidates |",
              "|---|---|---" + "|---" * len(names) + "|---|---|---|"]
        for s in greedy_path:
            L.append(f"| {s['step']} | {s['action']} | {s['accuracy']:.2f} | " + " | ".join(_lat_cells(s, names))
                     + f" | {s['params'] / 1e6:.3f} M | {s['mes']:.1f} | {s['candidates']} |")
        L.append("")
    return "\n".join(L)


def _per_target_lines(references: dict, picks: dict, names: list[str]) -> list[str]:
    """Several targets: the best pick for each target alone, and what meeting every target at once costs."""
    lat_head = _lat_head(names)
    L = ["", "## Best per target, and what the cross-target constraint costs", "",
         "For each reference and target, the most accurate arch at or under the reference's latency on "
         "that target alone (and its size): `per_target` in `picks.yaml`. *cost* is how much accuracy the "
         "pick that meets every target at once gives up against it; a per-target pick that is slower than "
         "the reference on another target is marked there with ✗.", "",
         f"| reference | best for | arch | accuracy | cost of every-target pick | {lat_head} |",
         "|---|---|---|---|---" + "|---" * len(names) + "|"]
    costs: dict[str, dict[str, float]] = {}
    for name, ref in references.items():
        p = picks[name]["pick"]
        for t in names:
            q = picks[name]["per_target"][t]
            if q is None:
                L.append(f"| {name} | {t} | none found | — | — |" + " — |" * len(names))
                continue
            cost = q["accuracy"] - p["accuracy"] if p is not None else None
            if cost is not None:
                costs.setdefault(name, {})[t] = cost
            cells = []
            for u in names:
                k = latency_key(u, names)
                cells.append(f"{q[k]:.3f}{'' if q[k] <= ref[k] else ' ✗'}")
            L.append(f"| {name} | {t} | {_pick_name(q, ref)} | {q['accuracy']:.2f} | "
                     f"{'—' if cost is None else f'{cost:+.2f}'} | " + " | ".join(cells) + " |")
    summary = []
    for name in references:
        if picks[name]["pick"] is None:
            summary.append(f"- **{name}**: no arch found meets it on every target at once.")
        elif costs.get(name):
            c = costs[name]
            worst = max(c, key=c.get)
            if c[worst] <= 0:
                summary.append(f"- **{name}**: nothing: the pick that meets every target at once is as "
                               "accurate as the best pick for each target alone.")
            else:
                others = ", ".join(f"{t} {v:.2f}" for t, v in c.items() if t != worst)
                summary.append(f"- **{name}**: {c[worst]:.2f} accuracy points against the best pick for "
                               f"{worst} alone ({others}{' for the others' if others else ''}).")
    return L + ["", "What the cross-target constraint costs in accuracy:", "", *summary]


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


def summary_text(picks: dict, references: dict, ctx: ReportContext, run_dir: Path, n_completed: int,
                 records: Sequence[dict] | None = None) -> str:
    """What the app prints at the end: the setting, the warnings, the budget (with `records`, the
    trials' records: how many archs meet it) and each reference's pick."""
    acc_res, dep_res = _res_note(ctx)
    names = ctx.target_names
    lines = ["", f"hwnas search: {ctx.space} {ctx.task} at {dep_res} on {', '.join(names)} ({ctx.strategy}), "
                 f"{n_completed} trials"]
    for t in ctx.targets:
        if t.table_estimated:
            lines.append(f"  {ctx.who(t, '{} ')}latency table: ESTIMATED (not measured on the device) — see report.md")
        for w in t.warnings:
            lines.append(f"  WARNING{ctx.who(t, ' ({})')}: {w}")
    lines.append(f"  accuracy: {ctx.accuracy_label}{'' if _predicted(ctx) else f' at {acc_res}'}; latency/params "
                 f"of the {ctx.task} at {dep_res}")
    if ctx.accuracy_caution:
        lines.append(f"  WARNING: {ctx.accuracy_caution}")
    if ctx.archs_note:
        lines.append(f"  archs: {ctx.archs_note}")
    skipped = sorted({p for v in (ctx.skipped_images or {}).values() for p in v})
    if skipped:
        lines.append(f"  data: {len(skipped)} unreadable image(s) skipped (data.on_bad_image=skip) — see report.md")
    words = _budget_words(ctx.budget)
    if words:
        line = f"  budget: {words}" + ("" if ctx.given_budget else
                                       " (none given: the smallest reference's, mes_greedy's stopping rule)")
        if records is not None:
            n, ok, fastest = _within_budget(records, ctx)
            line += f"; {ok} of {n} distinct archs found meet it"
            if ok == 0 and fastest:
                line += f" (the fastest found: {_ms_cells(fastest, names).strip()} ms, {fastest['params'] / 1e6:.2f} M)"
        lines.append(line)
    if ctx.multi:
        lines.append(f"  picks at or under each reference on every target at once (ms: {', '.join(names)}):")
    ms = "".join(f"{'ms':>8}" for _ in names)
    lines.append(f"  {'reference':<22}{'acc':>7}{ms}{'M':>7}   {'pick':<13}{'acc':>7}{ms}{'M':>7}")
    for name, ref in references.items():
        p = picks[name]["pick"]
        right = (f"{'(itself)' if p['arch_id'] == ref['arch_id'] else p['arch_id']:<13}{p['accuracy']:>7.2f}"
                 f"{_ms_cells(p, names)}{p['params'] / 1e6:>7.2f}" if p else
                 "none within the budget" if ctx.given_budget else "none found")
        lines.append(f"  {name:<22}{ref['accuracy']:>7.2f}{_ms_cells(ref, names)}{ref['params'] / 1e6:>7.2f}   {right}")
    lines.append(f"  report: {Path(run_dir) / 'report.md'}")
    return "\n".join(lines)


def _ms_cells(r: dict, names: Sequence[str]) -> str:
    return "".join(f"{r[latency_key(t, names)]:>8.3f}" for t in names)


def _short(target: str) -> str:
    """The target's short name in a table header (`Target.label`)."""
    from hwnas.latency.target import find_target
    return getattr(find_target(target), "label", "") or target
