"""How good is a table: measure held-out random subnets end to end and compare with `predict`.

The held-out set (`profiler.held_out_set`) is disjoint from the correction-fit set. Results go to
`<results_dir>/latency_fidelity_<target>_<space>[_<task>_<H>x<W>].json` (+ a scatter PNG when
matplotlib is installed), and a summary into the table's provenance (`fidelity[scope]`).
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np

from hwnas._files import atomic_path

from .backends import Backend
from .correction import fidelity_metrics
from .profiler import attach_canary, held_out_set, measure_networks, now_iso
from .table import (LatencyTable, LatencyTableError, atomic_write_text, describe_scope, networks_path,
                    profile_command)


def scope_slug(scope: str) -> str:
    """A file-name form of a scope: `nextvit`, `nextvit_backbone_512x512`."""
    return scope.replace(":", "_").replace("@", "_")


def scatter_png(path: Path, predicted, measured, title: str) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    p, m = np.asarray(predicted), np.asarray(measured)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=110)
    lo, hi = 0.9 * min(p.min(), m.min()), 1.1 * max(p.max(), m.max())
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1, label="y = x")
    ax.fill_between(xs, 0.9 * xs, 1.1 * xs, color="tab:green", alpha=0.15, label="±10 %")
    ax.fill_between(xs, 0.95 * xs, 1.05 * xs, color="tab:green", alpha=0.25, label="±5 %")
    ax.scatter(m, p, s=12, color="tab:blue", zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("measured end to end (ms)")
    ax.set_ylabel("predicted by the table (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # the temporary name keeps .png: savefig picks the format by it
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path


def run_fidelity(backend: Backend, space, table: LatencyTable, n: int = 100, results_dir: str | Path = "experiments/results",
                 seed: int = 0, progress: bool = True, exclude_earlier: bool = False,
                 deadline: float | None = None) -> dict:
    """Measure `n` held-out subnets, compare with `table.predict`, write the result files.
    `exclude_earlier`: the held-out set also avoids every network measured for an earlier fidelity
    run (a fresh set, e.g. after a refit)."""
    from .table import read_networks
    t0 = time.perf_counter()
    scope = space.scope
    fit_ids = table.correction(scope).get("fit_arch_ids")
    if not fit_ids:
        raise LatencyTableError(f"{table.path} has no fitted correction for {describe_scope(scope)}; run "
                                f"`{profile_command(backend.name, scope)}` to the end first.")
    exclude = set(fit_ids)
    if exclude_earlier:
        exclude |= {r["arch_id"] for r in read_networks(networks_path(table.path)) if r["space"] == scope}
    held_out = held_out_set(space, n, exclude=exclude, seed=seed)
    attach_canary(backend, table)
    recs = measure_networks(backend, held_out, "fidelity", networks_path(table.path), progress,
                            table.current_fingerprints(), deadline=deadline, table=table)
    measured = np.array([r[table.statistic] for r in recs])
    predicted = np.array(table.predict_many(held_out))
    raw = np.array([table.block_sum(a) for a in held_out])
    metrics = fidelity_metrics(predicted, measured)
    metrics_raw = fidelity_metrics(raw, measured)
    results_dir = Path(results_dir)
    stem = f"latency_fidelity_{backend.name}_{scope_slug(scope)}" + (f"_seed{seed}" if seed else "")
    try:
        from .table import REPO_ROOT
        result_file = str((results_dir / f"{stem}.json").resolve().relative_to(REPO_ROOT))
    except ValueError:  # e.g. profile_gpu.py --out DIR: name it as it will sit in the repository
        result_file = (f"experiments/results/{stem}.json" if results_dir.parts[-2:] == ("experiments", "results")
                       else str(results_dir / f"{stem}.json"))
    png = scatter_png(results_dir / f"{stem}.png", predicted, measured,
                      f"{describe_scope(scope)} on {backend.name} ({table.provenance.get('device')})\n"
                      f"{100 * metrics['within_10pct']:.0f}% within ±10%, MAPE {100 * metrics['mape']:.1f}%, "
                      f"tau {metrics['kendall_tau']:.3f}")
    result = {
        "target": backend.name, "space": space.name, "scope": scope, "task": space.task,
        "input_size": list(space.input_size), "table": f"latency_tables/{backend.name}/{table.path.name}", "date": now_iso(),
        "deploy_form": backend.form.describe(), "seed": seed,
        "machine": {"device": table.provenance.get("device"), "host": platform.node(),
                    "runtime": f"{table.provenance.get('runtime')} {table.provenance.get('runtime_version')}"},
        "statistic": table.statistic, "correction": table.correction(scope),
        "held_out": metrics, "held_out_without_correction": metrics_raw,
        "seconds": round(time.perf_counter() - t0, 1),
        "profiling": (table.provenance.get("profiling") or {}).get(scope),  # how long the table took
        "networks": [{"arch_id": a.id, "measured_ms": float(m), "predicted_ms": float(p), "block_sum_ms": float(s)}
                     for a, m, p, s in zip(held_out, measured, predicted, raw)],
        "scatter_png": png.name if png else None,
    }
    atomic_write_text(results_dir / f"{stem}.json", json.dumps(result, indent=2) + "\n")
    summary = {**{k: metrics[k] for k in ("n", "within_5pct", "within_10pct", "mape", "kendall_tau")},
               "result_file": result_file, "date": result["date"], "seed": seed}
    if exclude_earlier:  # a later, fresh held-out set: recorded beside the table's own fidelity
        table.provenance.setdefault("fidelity_rechecks", {}).setdefault(scope, {})[f"seed{seed}"] = summary
    else:
        table.provenance.setdefault("fidelity", {})[scope] = summary
    table.save()
    return result
