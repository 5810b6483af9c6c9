"""`verify=true`: build each pick, measure it end-to-end on the target's backend, compare.

Latency does not depend on the weights, so the pick is built freshly initialised
(`supernet.build_model`) and timed by the same backend that measured the latency table, in the
same deploy form (`backend.deploy`: what the table timed and what `hwnas.extract` ships). A
backend that cannot time here (Core ML off macOS, TensorRT where it is not installed) gives a row
that says so instead of a number. For a target whose device this machine has (`Target.device`), a
table measured on another device is named beside this machine in every row. One search or several
targets: one row per pick and target.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from search_spaces import Arch

from .objectives import latency_key


def backend_for(target: DictConfig):
    from hwnas.latency import get_backend
    cfg = OmegaConf.to_container(target, resolve=True) if isinstance(target, DictConfig) else dict(target)
    return get_backend(cfg["name"], **cfg)


def measure_arch(backend, arch: Arch, batch: int = 1) -> dict[str, Any]:
    import supernet
    return backend.measure(supernet.build_model(arch).eval(), (batch, 3, *arch.input_size))


def verify_picks(picks: dict, targets: list, budget: dict | None = None) -> list[dict]:
    """One row per pick and target: predicted and measured latency, and the pick's budget on that
    target: the reference's latency, or the search's `budget` (as the report holds it) where lower.
    `targets`: (target config, its latency table) pairs; each table's statistic (p10_ms on ONNX
    Runtime, median_ms on GPUs) is the one measured, like with like."""
    from .report import budget_limits
    names = [str(t.name) for t, _ in targets]
    limits, _ = budget_limits(budget, names)
    rows = []
    for target, table in targets:
        key = latency_key(str(target.name), names)
        rows += [dict(row, target=str(target.name))
                 for row in _verify_target(picks, key, target, table.statistic, table.provenance.get("device"),
                                           limits.get(key))]
    order = list(picks)
    rows.sort(key=lambda r: (order.index(r["name"]), names.index(r["target"])))
    return rows


def _verify_target(picks: dict, key: str, target: DictConfig, statistic: str, table_device: str | None,
                   limit_ms: float | None = None) -> list[dict]:
    """The rows of one target: each pick's latency column `key` against its measurement, and against
    its budget (the reference's latency, or `limit_ms` where lower)."""
    from hwnas.latency.backends import this_device
    rows = []
    try:
        backend = backend_for(target)
        note = None
        here = this_device(backend.name)
        if here and table_device and table_device != here:
            note = (f"measured on this machine ({here}); the table was measured on {table_device}: "
                    f"the error includes the difference between the two devices")
    except Exception as e:  # noqa: BLE001 -- any reason the backend cannot run here is reported
        backend, note = None, f"{type(e).__name__}: {e}"
    for name, entry in picks.items():
        p = entry["pick"]
        if p is None:
            continue
        budget_ms = min(entry["reference"][key], limit_ms) if limit_ms is not None else entry["reference"][key]
        row = dict(name=name, arch_id=p["arch_id"], predicted_ms=p[key], budget_ms=budget_ms,
                   measured_ms=None, statistic=statistic, note=note)
        if backend is not None:
            try:
                m = measure_arch(backend, Arch.from_dict(p["arch"]), int(target.get("batch", 1) or 1))
                row["measured_ms"] = float(m[statistic])
                row["median_ms"], row["p10_ms"] = m.get("median_ms"), m.get("p10_ms")
                row["fingerprint"] = m.get("fingerprint")
            except Exception as e:  # noqa: BLE001
                row["note"] = f"{type(e).__name__}: {e}"
        rows.append(row)
    return rows
