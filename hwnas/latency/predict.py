"""What the latency tables predict for one arch: every table found, each table's prediction or the
reason it has none. An export's `manifest.json` records it (`predicted_latency_ms`).

    predicted_latencies(arch)                 # {"onnxruntime_cpu/<device>.csv": {"ms": 12.3, ...}, ...}
    predicted_latencies(arch, [path, ...])    # those tables only
"""
from __future__ import annotations

import os
from pathlib import Path

from .table import PARTIAL, TABLES_DIR, LatencyTable


def shipped_tables(root: str | os.PathLike | None = None) -> list[Path]:
    """Every latency table under `<root>/<target>/` (the shipped ones by default)."""
    root = TABLES_DIR if root is None else root
    # A table is a `<device>.csv` with its `<device>.json` provenance beside it (the whole-network
    # measurements `<device>.networks.csv` that fit the correction are not tables, nor is the working
    # file `<device>.partial.csv` of a profile in progress or killed).
    return sorted(js.with_suffix(".csv") for js in Path(root).glob("*/*.json")
                  if not js.name.endswith(".networks.json") and not js.stem.endswith(PARTIAL)
                  and js.with_suffix(".csv").exists())


def table_key(path: str | os.PathLike) -> str:
    """How a table is named in a manifest's `predicted_latency_ms`: `<target>/<file>`."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}"


def predicted_latencies(arch, tables: list[Path] | None = None) -> dict:
    """`{"<target>/<file>": {"ms": ..., "estimated": bool, "table": description}}` for every table
    that covers the arch's space; a table that cannot predict it (missing rows, unreadable)
    records its error instead."""
    out: dict = {}
    tables = shipped_tables() if tables is None else tables
    for path in tables:
        key = table_key(path)
        try:
            table = LatencyTable.load(path)
            if table.spaces and arch.scope not in table.spaces and arch.space not in table.spaces:
                continue  # a table of another family (a table of this one but not of this input size or
                # task records why it cannot predict: its missing rows)
            entry = {"target": table.target, "estimated": table.is_estimated, "table": table.describe()}
            entry["ms"] = round(float(table.predict(arch)), 4)
        except Exception as e:  # recorded, not fatal: the export does not depend on a table
            entry = {"ms": None, "error": f"{type(e).__name__}: {e}"}
        out[key] = entry
    return out


__all__ = ["predicted_latencies", "shipped_tables", "table_key"]
