"""`LatencyTable`: per-block latencies of one target plus a correction fitted on whole networks.

On disk a table is two files side by side: `<device>.csv` (one row per `BlockSpec.key`:
`key,median_ms,p10_ms,spread,runs`) and `<device>.json` (the provenance: runtime and version,
device, precision, batch, threads, warm-up/repeats, date, `source: measured|estimated`, which
statistic predictions sum, the per-space correction and fidelity). One file can hold the rows of
several spaces; corrections and fidelity are kept per space.

    predict(arch) = Σ_blocks a_kind · stat(block) + b      (stat = p10_ms or median_ms)

with `a_kind`, `b` fitted per space on whole networks measured on the same target
(`hwnas.latency.correction`). Without a correction, a = 1 and b = 0.
"""
from __future__ import annotations

import csv
import importlib.resources
import io
import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from search_spaces import Arch

from hwnas.errors import HwnasError

from .keys import block_keys

COLUMNS = ("key", "median_ms", "p10_ms", "spread", "runs")
STATISTICS = ("p10_ms", "median_ms")
REPO_ROOT = Path(__file__).resolve().parents[2]
# The shipped tables: the `latency_tables` data package (the repository's latency_tables/ in a
# checkout or an editable install, site-packages/latency_tables in a wheel).
TABLES_DIR = Path(str(importlib.resources.files("latency_tables")))


class LatencyTableError(HwnasError):
    """A latency table that cannot be used as asked; the message says why and what to run."""


class MissingRowsError(LatencyTableError):
    """An arch needs block rows the table does not have."""

    def __init__(self, keys: list[str], table: "LatencyTable", space: str):
        self.keys = keys
        shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
        super().__init__(
            f"latency table {table.path or '(in memory)'} (target {table.target!r}) has no row for "
            f"{len(keys)} block(s) of this {space} arch: {shown}. Fill them with "
            f"`python -m hwnas.profile +target={table.target} space={space}` on the target device.")


def profile_command(target: str, space: str) -> str:
    return f"python -m hwnas.profile +target={target} space={space}"


def default_table_path(target: str, space_name: str, tables_dir: str | os.PathLike | None = None) -> Path:
    """The shipped table for (target, space): the one `.csv` under `latency_tables/<target>/` whose
    provenance lists the space. Several candidates: the measured one with the newest date wins."""
    folder = Path(tables_dir) if tables_dir is not None else TABLES_DIR
    folder = folder / target
    candidates = []
    for js in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if js.name.endswith(".networks.json"):
            continue
        try:
            prov = json.loads(js.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if space_name in prov.get("spaces", []) and js.with_suffix(".csv").exists():
            candidates.append((prov.get("source") == "measured", str(prov.get("date", "")), js.with_suffix(".csv")))
    if not candidates:
        raise LatencyTableError(
            f"no latency table for target {target!r} and space {space_name!r} under {folder}. "
            f"Make one with `{profile_command(target, space_name)}`, or pass its path.")
    return max(candidates)[2]


def provenance_path(csv_path: str | os.PathLike) -> Path:
    return Path(csv_path).with_suffix(".json")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rows_to_csv(rows: Mapping[str, Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for key, r in rows.items():
        w.writerow([key, f"{r['median_ms']:.6g}", f"{r['p10_ms']:.6g}", f"{r['spread']:.4g}", int(r["runs"])])
    return buf.getvalue()


def read_rows(path: str | os.PathLike) -> dict[str, dict]:
    """The rows of a table CSV; a missing or corrupt file raises `LatencyTableError`."""
    path = Path(path)
    if not path.exists():
        raise LatencyTableError(f"latency table {path} does not exist. Make one with "
                                f"`python -m hwnas.profile +target=T space=S` or pass an existing path.")
    rows: dict[str, dict] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(header) != COLUMNS:
                raise ValueError(f"header is {header!r}, expected {','.join(COLUMNS)}")
            for lineno, rec in enumerate(reader, start=2):
                if len(rec) != len(COLUMNS):
                    raise ValueError(f"line {lineno} has {len(rec)} fields, expected {len(COLUMNS)}")
                key = rec[0]
                if key in rows:
                    raise ValueError(f"line {lineno}: duplicate key {key}")
                r = dict(median_ms=float(rec[1]), p10_ms=float(rec[2]), spread=float(rec[3]), runs=int(rec[4]))
                if not (r["median_ms"] >= 0 and r["p10_ms"] >= 0):
                    raise ValueError(f"line {lineno}: negative or NaN latency")
                rows[key] = r
    except (ValueError, UnicodeDecodeError, csv.Error) as e:
        raise LatencyTableError(f"latency table {path} is corrupt ({e}). Delete it and re-run the "
                                f"profile command, or restore it from git.") from None
    return rows


def read_provenance(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.exists():
        raise LatencyTableError(f"provenance file {path} is missing (every table CSV has a .json beside it, "
                                f"written by `python -m hwnas.profile`).")
    try:
        prov = json.loads(path.read_text())
        if not isinstance(prov, dict):
            raise ValueError("not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise LatencyTableError(f"provenance file {path} is corrupt ({e}). Restore it from git or re-run "
                                f"the profile command.") from None
    for k in ("target", "source"):
        if k not in prov:
            raise LatencyTableError(f"provenance file {path} has no {k!r} field; it was not written by hwnas.profile.")
    return prov


class _SpaceModel:
    """One space's prediction model: per-key corrected values and the constant term."""

    __slots__ = ("values", "b")

    def __init__(self, values: dict[str, float], b: float):
        self.values = values
        self.b = b


class LatencyTable:
    """Block latencies of one target. Load with `LatencyTable.load(path)`."""

    def __init__(self, rows: Mapping[str, Mapping[str, Any]], provenance: Mapping[str, Any],
                 path: str | os.PathLike | None = None):
        self.rows = {k: dict(v) for k, v in rows.items()}
        self.provenance = dict(provenance)
        self.path = Path(path) if path is not None else None
        self.statistic = self.provenance.get("statistic", "p10_ms")
        if self.statistic not in STATISTICS:
            raise LatencyTableError(f"table {self.path}: statistic {self.statistic!r} is not one of {STATISTICS}")
        self._models: dict[str, _SpaceModel] = {}

    # ---- loading and saving -------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, target: str | None = None, space: str | None = None) -> "LatencyTable":
        """Read `path` (.csv; its .json beside it). `target`/`space`, when given, must match the table."""
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".csv")
        rows = read_rows(path)
        table = cls(rows, read_provenance(provenance_path(path)), path)
        if target is not None and table.target != target:
            raise LatencyTableError(f"{path} is a table for target {table.target!r}, not {target!r}; "
                                    f"use `default_table_path({target!r}, space)` or profile that target.")
        if space is not None and space not in table.spaces:
            raise LatencyTableError(f"{path} has no rows for space {space!r} (it covers {table.spaces}); "
                                    f"run `{profile_command(table.target, space)}`.")
        return table

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the CSV and its provenance, each atomically (rows first, so a table is never
        described by a provenance newer than its rows)."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise LatencyTableError("save(): this table has no path; pass one")
        atomic_write_text(path, rows_to_csv(self.rows))
        # allow_nan=False: a NaN would make the provenance unreadable to strict JSON parsers
        atomic_write_text(provenance_path(path),
                          json.dumps(self.provenance, indent=2, sort_keys=True, allow_nan=False) + "\n")
        self.path = path
        return path

    # ---- description ----------------------------------------------------------------------
    @property
    def target(self) -> str:
        return self.provenance["target"]

    @property
    def spaces(self) -> list[str]:
        return list(self.provenance.get("spaces", []))

    @property
    def is_estimated(self) -> bool:
        return self.provenance.get("source") == "estimated"

    def describe(self) -> str:
        """One line saying what the table is and how far to trust it."""
        p = self.provenance
        what = (f"{p['target']} on {p.get('device', '?')} ({p.get('runtime', '?')} {p.get('runtime_version', '')}, "
                f"{p.get('precision', '?')}, batch {p.get('batch', '?')})")
        fid = p.get("fidelity") or {}
        parts = []
        for space, f in sorted(fid.items()):
            parts.append(f"{space}: {100 * f['within_10pct']:.0f}% of {f['n']} held-out subnets within ±10%, "
                         f"tau {f['kendall_tau']:.2f}")
        quality = "; ".join(parts) if parts else "fidelity not measured"
        if self.is_estimated:
            cm = p.get("cost_model", {})
            how = (f"a cost model fitted to {len(cm['published_ms'])} published latencies, leave-one-out "
                   f"error {100 * cm['loo_mape']:.1f}%" if "loo_mape" in cm else p.get("method", "see provenance"))
            return (f"ESTIMATED latency table (not measured on a device) for {p['target']} on "
                    f"{p.get('device', '?')}, {p.get('precision', '?')}, batch {p.get('batch', '?')}: {how}")
        return f"measured latency table for {what}, {self.statistic} of many runs; {quality}"

    # ---- prediction -----------------------------------------------------------------------
    def correction(self, space: str) -> dict:
        return (self.provenance.get("correction") or {}).get(space) or {"form": "none", "a": {}, "b": 0.0}

    def _model(self, space: str) -> _SpaceModel:
        m = self._models.get(space)
        if m is None:
            corr = self.correction(space)
            a = corr.get("a", {})
            a_default = corr.get("a_default", 1.0)
            stat = self.statistic
            # Precompute a_kind · stat per key once, so predict() is a dict lookup and a sum.
            values = {k: a.get(k.split("(", 1)[0], a_default) * r[stat] for k, r in self.rows.items()}
            m = self._models[space] = _SpaceModel(values, float(corr.get("b", 0.0)))
        return m

    def block_sum(self, arch: Arch) -> float:
        """Σ of the raw block statistic (no correction)."""
        keys = block_keys(arch)
        try:
            return sum(self.rows[k][self.statistic] for k in keys)
        except KeyError:
            raise MissingRowsError(self.missing(arch), self, arch.space) from None

    def predict(self, arch: Arch) -> float:
        """Predicted latency of `arch` in ms: the sum of its rows plus the fitted correction."""
        m = self._models.get(arch.space) or self._model(arch.space)
        values = m.values
        try:
            return sum([values[k] for k in block_keys(arch)]) + m.b
        except KeyError:
            raise MissingRowsError(self.missing(arch), self, arch.space) from None

    def predict_many(self, archs: Iterable[Arch]) -> list[float]:
        return [self.predict(a) for a in archs]

    def missing(self, arch: Arch) -> list[str]:
        """Keys of `arch`'s blocks this table has no row for (each once, in execution order)."""
        out = []
        for k in block_keys(arch):
            if k not in self.rows and k not in out:
                out.append(k)
        return out

    def __repr__(self) -> str:
        return f"LatencyTable({self.path}, target={self.target!r}, rows={len(self.rows)})"
