"""How well a torch_inductor correction on top of torch_cuda's eager block rows fits the compiled whole networks
an adapt run has measured so far (issue 27; nothing is measured here): each network predicted by the correction
fitted on the others (leave-one-out), as `hwnas.latency.adapt.fit_adapted` fits it, next to the eager table as it
is. A first look at a cut run, before its held-out subnets exist; the held-out measurement is what counts.

    python experiments/archive/inductor_adapt_loo.py experiments/logs/inductor_adapt_call23/state.tgz --space efficientformerv2 \
        --out experiments/archive/results/inductor_adapt_loo_efficientformerv2_call23.json
"""
from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
from pathlib import Path

import numpy as np


def networks_of(state: Path) -> list[dict]:
    """The fit networks in an `inductor_adapt_call.sh` state tarball (or a `.networks.csv`)."""
    from hwnas.latency.table import read_networks
    if state.suffix == ".csv":
        return read_networks(state)
    with tempfile.TemporaryDirectory() as d, tarfile.open(state) as tar:
        names = [m for m in tar.getmembers() if m.name.endswith(".networks.csv")]
        if len(names) != 1:
            raise SystemExit(f"{state}: expected one .networks.csv, found {[m.name for m in names]}")
        tar.extract(names[0], d, filter="data")
        return read_networks(Path(d) / names[0].name)


def loo(space: str, nets: list[dict]) -> dict:
    from hwnas.latency import LatencyTable, default_table_path
    from hwnas.latency.adapt import fit_adapted
    from hwnas.latency.correction import fidelity_metrics
    source = LatencyTable.load(default_table_path("torch_cuda", space), target="torch_cuda", space=space)
    nets = [n for n in nets if n["role"] == "fit" and n["space"] == space]
    archs, y = [n["arch"] for n in nets], np.array([n[source.statistic] for n in nets])
    eager = np.array(source.predict_many(archs))
    pred = []
    for i in range(len(y)):
        keep = [j for j in range(len(y)) if j != i]
        corr = fit_adapted(source, space, [archs[j] for j in keep], y[keep])
        table = LatencyTable(source.rows, {**source.provenance, "correction": {space: corr}}, check=False)
        pred.append(table.predict(archs[i]))
    full = fit_adapted(source, space, archs, y)
    return {"space": space, "networks": len(y), "statistic": source.statistic,
            "source_table": "latency_tables/torch_cuda/nvidia-h200.csv",
            "compiled_over_eager_table": [float((y / eager).min()), float((y / eager).max())],
            "eager_table_as_is": fidelity_metrics(list(eager), list(y)),
            "leave_one_out": fidelity_metrics(pred, list(y)),
            "correction_on_all": {k: full[k] for k in ("form", "device_scale", "b", "loo_mape")},
            "per_network": [{"arch_id": n["arch_id"], "measured_ms": float(m), "eager_table_ms": float(e),
                             "loo_predicted_ms": float(p)} for n, m, e, p in zip(nets, y, eager, pred)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("state", type=Path, help="inductor_adapt_call.sh's state.tgz, or a .networks.csv")
    ap.add_argument("--space", default="efficientformerv2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    res = loo(args.space, networks_of(args.state))
    text = json.dumps(res, indent=1) + "\n"
    if args.out:
        from hwnas._files import atomic_write
        atomic_write(args.out, text)
    m, e = res["leave_one_out"], res["eager_table_as_is"]
    print(f"{res['networks']} compiled {args.space} networks, compiled / eager table "
          f"{res['compiled_over_eager_table'][0]:.2f}-{res['compiled_over_eager_table'][1]:.2f}; eager table as is: "
          f"tau {e['kendall_tau']:.3f}; leave-one-out correction: {100 * m['within_10pct']:.0f}% within ±10%, "
          f"{100 * m['within_5pct']:.0f}% within ±5%, MAPE {100 * m['mape']:.1f}%, tau {m['kendall_tau']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
