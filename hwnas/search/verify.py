"""`verify=true`: build each pick, measure it end-to-end on the target's backend, compare.

Latency does not depend on the weights, so the pick is built freshly initialised
(`supernet.build_model`) and timed by the same backend that measured the latency table, in the
same deploy form (`backend.deploy`: what the table timed and what `hwnas.extract` ships). A
backend that cannot time here (Core ML off macOS, TensorRT where it is not installed) gives a row
that says so instead of a number. For a target whose device this machine has (`Target.device`), a table measured on another device
is named beside this machine in every row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import search_spaces
from search_spaces import Arch


def backend_for(target: DictConfig):
    from hwnas.latency import get_backend
    cfg = OmegaConf.to_container(target, resolve=True) if isinstance(target, DictConfig) else dict(target)
    return get_backend(cfg["name"], **cfg)


def measure_arch(backend, arch: Arch, batch: int = 1) -> dict[str, Any]:
    import supernet
    return backend.measure(supernet.build_model(arch).eval(), (batch, 3, *arch.input_size))


def verify_picks(picks: dict, space: search_spaces.SearchSpace, target: DictConfig,
                 run_dir: Path, statistic: str = "median_ms", table_device: str | None = None) -> list[dict]:
    """One row per pick: predicted and measured latency, and the reference's latency (its budget).

    `statistic` is the one the table sums (p10_ms on ONNX Runtime, median_ms on GPUs), so the
    measurement is compared like with like.
    """
    rows = []
    try:
        from hwnas.latency.backends import this_device
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
        row = dict(name=name, arch_id=p["arch_id"], predicted_ms=p["latency_ms"],
                   budget_ms=entry["reference"]["latency_ms"], measured_ms=None, statistic=statistic,
                   note=note)
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


def verify_picks_multi(picks: dict, space: search_spaces.SearchSpace, targets: list, run_dir: Path) -> list[dict]:
    """A search over several targets: each cross-target pick measured on every target's backend
    (`targets`: (target config, its latency table) pairs); one row per pick and target, its budget
    the reference's latency on that target."""
    rows = []
    names = [str(t.name) for t, _ in targets]
    for target, table in targets:
        key = f"latency_ms.{target.name}"
        flat = {n: {"pick": None if e["pick"] is None else {**e["pick"], "latency_ms": e["pick"][key]},
                    "reference": {**e["reference"], "latency_ms": e["reference"][key]}}
                for n, e in picks.items()}
        for row in verify_picks(flat, space, target, run_dir, statistic=table.statistic,
                                table_device=table.provenance.get("device")):
            rows.append(dict(row, target=str(target.name)))
    order = list(picks)
    rows.sort(key=lambda r: (order.index(r["name"]), names.index(r["target"])))
    return rows
