"""The profiling loop: measure blocks into a table, measure whole networks, fit the correction.

Everything a run writes is resumable and atomic: the table CSV is rewritten (temporary file, then
rename) after every measured block, the whole-network CSV after every network, so a killed run
loses at most the block it was timing and a rerun skips every key already on disk.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Sequence

import search_spaces
from search_spaces import Arch, BlockSpec

from hwnas.progress import progress_bar

from .backends import Backend
from .correction import fit_correction
from .table import (TABLES_DIR, LatencyTable, LatencyTableError, atomic_write_text, provenance_path,
                    read_provenance, read_rows)

NET_COLUMNS = ("space", "role", "arch_id", "median_ms", "p10_ms", "spread", "runs", "arch")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def table_path_for(backend: Backend, tables_dir: str | os.PathLike | None = None) -> Path:
    return Path(tables_dir or TABLES_DIR) / backend.name / f"{backend.device_slug()}.csv"


def _build(spec_or_arch, device: str):
    import torch
    import supernet
    with torch.device(device):  # initialise on the GPU when timing there: seconds saved per net
        if isinstance(spec_or_arch, BlockSpec):
            return supernet.build_block(spec_or_arch)
        return supernet.build_model(spec_or_arch)


def build_device(backend: Backend) -> str:
    return "cuda" if backend.name in ("torch_cuda",) else "cpu"


def open_table(backend: Backend, path: Path, space: str) -> LatencyTable:
    """The table at `path` (rows kept: resume), or a new one; refuses a table of another setup."""
    info = backend.info()
    if path.exists():
        table = LatencyTable(read_rows(path), read_provenance(provenance_path(path)), path)
        for k in ("target", "precision", "batch", "threads", "device", "clock", "canary"):
            if table.provenance.get(k) != info[k]:
                raise LatencyTableError(
                    f"{path} was measured with {k}={table.provenance.get(k)!r}, this run uses {info[k]!r}; "
                    f"profile into another folder (tables_dir=...) or delete the table.")
    else:
        table = LatencyTable({}, {**info, "source": "measured", "spaces": [], "date": now_iso(),
                                  "correction": {}, "fidelity": {}, "profiling": {}}, path)
    attach_canary(backend, table)
    if space not in table.provenance["spaces"]:
        table.provenance["spaces"] = sorted(set(table.provenance["spaces"]) | {space})
    return table


def attach_canary(backend: Backend, table: LatencyTable) -> None:
    """Give the backend the table's canary reference (calibrating it on a new table), so every
    number of one table, whenever measured, is scaled to the same reference state."""
    if not backend.canary:
        return
    ref = (table.provenance.get("canary_ref") or {}).get("p10_ms")
    if ref is None:
        ref = backend.calibrate_canary()
        table.provenance["canary_ref"] = {
            "p10_ms": ref, "model": "MobileNetV2 x1.0", "input_shape": [1, 3, 128, 128], "date": now_iso(),
            "calibration": "canary p10, each run following one MobileNetV2 x1.0 224px run (Backend.calibrate_canary)"}
    backend.canary_ref_ms = ref


def profile_blocks(backend: Backend, table: LatencyTable, specs: Sequence[BlockSpec], space: str,
                   progress: bool = True, limit: int | None = None,
                   on_row: Callable[[str, dict], None] | None = None) -> dict:
    """Measure every spec whose key is not in `table` yet, saving the table after each one.

    Returns {"measured": n, "skipped": n, "seconds": s} for this call; the space's cumulative
    profiling time is kept in `provenance["profiling"][space]`.
    """
    import supernet
    todo = [s for s in specs if s.key not in table.rows]
    if limit is not None:
        todo = todo[:limit]
    prof = table.provenance.setdefault("profiling", {}).setdefault(space, {"block_seconds": 0.0})
    prof["n_blocks"] = len(specs)
    table.save()  # the provenance exists from the first row on
    t_start = time.perf_counter()
    device = build_device(backend)
    for spec in progress_bar(todo, len(todo), f"{backend.name} blocks ({space})", progress):
        t0 = time.perf_counter()
        block = _build(spec, device)
        row = backend.measure(block, supernet.block_input_shape(spec, backend.batch))
        table.rows[spec.key] = row
        prof["block_seconds"] = round(prof["block_seconds"] + time.perf_counter() - t0, 2)
        table.provenance["date"] = now_iso()
        table.save()
        if on_row is not None:
            on_row(spec.key, row)
    prof["n_measured"] = sum(s.key in table.rows for s in specs)
    table.save()
    return {"measured": len(todo), "skipped": len(specs) - len(todo), "seconds": time.perf_counter() - t_start}


# ---- whole networks ----------------------------------------------------------------------------
def networks_path(table_path: Path) -> Path:
    return table_path.with_name(table_path.stem + ".networks.csv")


def read_networks(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) != NET_COLUMNS:
                raise ValueError(f"header {reader.fieldnames}")
            for rec in reader:
                out.append({"space": rec["space"], "role": rec["role"], "arch_id": rec["arch_id"],
                            "median_ms": float(rec["median_ms"]), "p10_ms": float(rec["p10_ms"]),
                            "spread": float(rec["spread"]), "runs": int(rec["runs"]),
                            "arch": Arch.from_dict(json.loads(rec["arch"]))})
    except (ValueError, KeyError, csv.Error) as e:
        raise LatencyTableError(f"whole-network file {path} is corrupt ({e}); delete it to re-measure.") from None
    return out


def write_networks(path: Path, records: Iterable[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(NET_COLUMNS)
    for r in records:
        w.writerow([r["space"], r["role"], r["arch_id"], f"{r['median_ms']:.6g}", f"{r['p10_ms']:.6g}",
                    f"{r['spread']:.4g}", r["runs"], r["arch"].to_json()])
    atomic_write_text(path, buf.getvalue())


def measure_networks(backend: Backend, archs: Sequence[Arch], role: str, path: Path,
                     progress: bool = True) -> list[dict]:
    """Measure each arch end to end (skipping those already in `path` under `role`); returns the
    records of `archs` in their order."""
    records = read_networks(path)
    done = {(r["space"], r["role"], r["arch_id"]): r for r in records}
    todo = [a for a in archs if (a.space, role, a.id) not in done]
    device = build_device(backend)
    desc = f"{backend.name} {role} networks ({archs[0].space if archs else ''})"
    for arch in progress_bar(todo, len(todo), desc, progress):
        model = _build(arch, device)
        shape = (backend.batch, 3, arch.resolution, arch.resolution)
        r = {"space": arch.space, "role": role, "arch_id": arch.id, **backend.measure(model, shape), "arch": arch}
        del model
        records.append(r)
        done[(arch.space, role, arch.id)] = r
        write_networks(path, records)
    return [done[(a.space, role, a.id)] for a in archs]


def fit_set(space: search_spaces.SearchSpace, n_fit: int, seed: int = 0,
            archs: Sequence[Arch] | None = None) -> list[Arch]:
    """The correction-fit networks: `archs` (default: the references) plus `n_fit` random subnets."""
    base = list(archs) if archs else list(space.references().values())
    fit = base + space.sample_many(n_fit, seed=10_000 + seed)
    return list(dict.fromkeys(fit))


def held_out_set(space: search_spaces.SearchSpace, n: int, exclude: Iterable[str] = (), seed: int = 0) -> list[Arch]:
    """`n` distinct random subnets whose ids are not in `exclude` (the fit set's ids)."""
    taken = set(exclude)
    out: list[Arch] = []
    i = 0
    while len(out) < n:
        for a in space.sample_many(n, seed=20_000 + 1000 * seed + i):
            if a.id not in taken and len(out) < n:
                out.append(a)
                taken.add(a.id)
        i += 1
    return out


def specs_for(space: search_spaces.SearchSpace, archs: Sequence[Arch] | None = None) -> list[BlockSpec]:
    if not archs:
        return space.all_blocks()
    return list({b.key: b for a in archs for b in a.blocks()}.values())


def measure_mes_unit(backend: Backend, resolution: int = 224) -> dict:
    """MobileNetV2 x1.0 on this backend: the latency unit of the Mobile Efficiency Score."""
    import torch
    from .reference_models import mobilenet_v2
    with torch.device(build_device(backend)):
        model = mobilenet_v2()
    r = backend.measure(model, (backend.batch, 3, resolution, resolution))
    return {"mes_unit_latency_ms": r[backend.statistic],
            "mes_unit": {"model": "MobileNetV2 x1.0 (hwnas.latency.reference_models)",
                         "resolution": resolution, "source": "measured", **r}}


def run_profile(backend: Backend, space: search_spaces.SearchSpace, table_path: Path | None = None,
                archs: Sequence[Arch] | None = None, n_fit: int = 30, progress: bool = True,
                limit: int | None = None, fit_seed: int = 0) -> LatencyTable:
    """The whole profile step for one space: blocks, then whole networks, then the correction."""
    table_path = Path(table_path) if table_path else table_path_for(backend)
    table = open_table(backend, table_path, space.name)
    t0 = time.perf_counter()
    fit_archs = fit_set(space, n_fit, seed=fit_seed, archs=archs) if n_fit > 0 else []
    # Only some archs: their blocks and those of the fit networks, so the correction can be fitted.
    specs = specs_for(space, list(archs) + fit_archs if archs else None)
    profile_blocks(backend, table, specs, space.name, progress=progress, limit=limit)
    if limit is not None and any(s.key not in table.rows for s in specs):
        return table  # a partial run (tests, smoke runs): no networks, no correction yet
    if fit_archs:  # n_fit=0: blocks only, no correction
        t_net = time.perf_counter()
        recs = measure_networks(backend, fit_archs, "fit", networks_path(table_path), progress)
        table.provenance["profiling"][space.name]["network_seconds_this_run"] = round(time.perf_counter() - t_net, 2)
        table.provenance.setdefault("correction", {})[space.name] = fit_correction(table, recs)
    if "mes_unit_latency_ms" not in table.provenance:
        table.provenance.update(measure_mes_unit(backend))
    table.provenance["profiling"][space.name]["last_run_seconds"] = round(time.perf_counter() - t0, 2)
    table.provenance["date"] = now_iso()
    table._models.clear()
    table.save()
    return table
