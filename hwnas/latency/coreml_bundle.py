"""Core ML profiling split across two machines: a Linux box converts, a Mac times.

`build_bundle` writes a self-contained folder: one `.mlpackage` per block (and per whole network
of the correction-fit set, and MobileNetV2 for the MES unit), `manifest.csv`, `bundle.json` and
`run_bundle.py`, a runner that needs only coremltools and numpy on the Mac and writes
`results.csv` (resumable). `import_results` merges that CSV into a measured coreml table and
fits the correction, exactly as the other targets do.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Sequence

from search_spaces import Arch

from hwnas._progress import progress_bar

from .backends import Backend, fingerprint_deployed, slug
from .correction import fit_correction
from .profiler import fit_set, mark_complete, now_iso, specs_for
from .table import (TABLES_DIR, LatencyTable, LatencyTableError, atomic_write_text, networks_path, provenance_path,
                    read_provenance, read_rows, write_networks)

MANIFEST_COLUMNS = ("kind", "role", "name", "file", "input_shape", "arch", "fingerprint")
RESULT_COLUMNS = ("kind", "role", "name", "median_ms", "p10_ms", "spread", "runs")
RUNNER = Path(__file__).with_name("run_bundle.py")


def _file_name(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()[:16] + ".mlpackage"


def build_bundle(bundle_dir: str | Path, space, backend: Backend, archs: Sequence[Arch] | None = None,
                 n_fit: int = 30, fit_seed: int = 0, progress: bool = True, limit: int | None = None) -> Path:
    """Convert every block (and the fit networks) into `bundle_dir`; rerunning skips what exists."""
    import supernet
    from hwnas.convert.coreml import convert_coreml
    from .reference_models import mobilenet_v2

    bundle = Path(bundle_dir)
    (bundle / "models").mkdir(parents=True, exist_ok=True)
    specs = specs_for(space, archs)
    entries = [("block", "", s.key, (backend.batch, *supernet.block_input_shape(s, 1)[1:]), s, None) for s in specs]
    if limit is not None:
        entries = entries[:limit]
    if n_fit > 0 and limit is None:
        fit = fit_set(space, n_fit, seed=fit_seed)
        entries += [("network", "fit", a.id, (backend.batch, 3, *a.input_size), None, a) for a in fit]
    entries.append(("network", "mes_unit", "mobilenet_v2", (backend.batch, 3, 224, 224), None, None))
    old = {}
    if (bundle / "manifest.csv").exists():
        old = {r["name"]: r for r in csv.DictReader(open(bundle / "manifest.csv", newline=""))}
    rows = []
    for kind, role, name, shape, spec, arch in progress_bar(entries, len(entries), "coreml conversion", progress):
        path = bundle / "models" / _file_name(name)
        fp = (old.get(name) or {}).get("fingerprint")
        if not path.exists() or not fp:
            if spec is not None:
                model = supernet.build_block(spec)
            elif arch is not None:
                model = supernet.build_model(arch)
            else:
                model = mobilenet_v2()
            model = backend.deploy(model)
            fp = fingerprint_deployed(model, backend.form.example_input(shape), backend.form)
            convert_coreml(model, shape, path, precision=backend.precision)
        rows.append((kind, role, name, f"models/{path.name}", "x".join(map(str, shape)),
                     arch.to_json() if arch is not None else "", fp))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(MANIFEST_COLUMNS)
    w.writerows(rows)
    atomic_write_text(bundle / "manifest.csv", buf.getvalue())
    info = {**backend.info(), "fingerprint": backend.fingerprint_info(), "space": space.name, "scope": space.scope,
            "created": now_iso(),
            "note": "device/runtime fields describe the converting machine; run_bundle.py records the Mac's"}
    atomic_write_text(bundle / "bundle.json", json.dumps(info, indent=2) + "\n")
    shutil.copyfile(RUNNER, bundle / "run_bundle.py")
    return bundle


def import_results(results_csv: str | Path, space, backend: Backend, out: Path | None = None,
                   tables_dir: str | Path | None = None) -> LatencyTable:
    """Merge a Mac's `results.csv` (and the `results.json` beside it) into the coreml table."""
    results_csv = Path(results_csv)
    bundle = results_csv.parent
    try:
        info = json.loads((results_csv.with_suffix(".json")).read_text())
        manifest = {r["name"]: r for r in csv.DictReader(open(bundle / "manifest.csv", newline=""))}
        results = list(csv.DictReader(open(results_csv, newline="")))
    except (OSError, ValueError) as e:
        raise LatencyTableError(f"cannot import {results_csv}: {e}. Pass the results.csv that run_bundle.py "
                                f"wrote inside the bundle folder (manifest.csv and results.json beside it).") from None
    if not results or tuple(results[0].keys()) != RESULT_COLUMNS:
        raise LatencyTableError(f"{results_csv} is empty or not a run_bundle.py result (columns {RESULT_COLUMNS})")
    device = info.get("device", "mac")
    path = out or Path(tables_dir or TABLES_DIR) / "coreml" / f"{slug(device)}.csv"
    prov = {**backend.info(), "fingerprint": backend.fingerprint_info(), "device": device, "device_slug": slug(device),
            "runtime_version": info.get("coremltools", ""), "os": info.get("os", ""),
            "method": info.get("method", backend.method()), "source": "measured", "date": now_iso()}
    if path.exists():
        table = LatencyTable(read_rows(path), read_provenance(provenance_path(path)), path)
        table.provenance.update({k: v for k, v in prov.items() if k not in ("correction", "fidelity")})
    else:
        table = LatencyTable({}, {**prov, "spaces": [], "correction": {}, "fidelity": {}, "profiling": {}}, path)
    table.provenance["spaces"] = sorted(set(table.spaces) | {space.scope})
    fit_records = []
    for r in results:
        stats = {"median_ms": float(r["median_ms"]), "p10_ms": float(r["p10_ms"]),
                 "spread": float(r["spread"]), "runs": int(r["runs"]),
                 "fingerprint": (manifest.get(r["name"]) or {}).get("fingerprint") or None}
        if r["kind"] == "block":
            table.rows[r["name"]] = stats
        elif r["role"] == "mes_unit":
            table.provenance["mes_unit_latency_ms"] = stats[table.statistic]
            table.provenance["mes_unit"] = {"model": "MobileNetV2 x1.0", "resolution": 224, "source": "measured",
                                            **{k: v for k, v in stats.items() if k != "fingerprint"}}
        elif r["role"] == "fit":
            arch = Arch.from_dict(json.loads(manifest[r["name"]]["arch"]))
            fit_records.append({"space": arch.scope, "role": "fit", "arch_id": arch.id, **stats, "arch": arch})
    table.save()
    if fit_records:
        missing = [k for rec in fit_records for k in table.missing(rec["arch"])]
        if not missing:
            write_networks(networks_path(path), fit_records)
            table.provenance["correction"][space.scope] = fit_correction(table, fit_records, positive_for=[space.min_arch()])
            table.invalidate()
    mark_complete(table, space)
    table.save()
    return table
