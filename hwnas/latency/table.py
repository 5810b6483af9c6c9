"""`LatencyTable`: per-block latencies of one target plus a correction fitted on whole networks.

On disk a table is files side by side: `<device>.csv` (one row per `BlockSpec.key`:
`key,median_ms,p10_ms,spread,runs,fingerprint`), `<device>.json` (the provenance: runtime and
version, device, precision, batch, threads, the rows' warm-up/repeats, date, `source: measured|estimated`,
which statistic predictions sum, the deploy form and fingerprint scheme, the per-scope
correction, completeness and fidelity, how the networks of each scope and role were timed, the
digest of the rows it describes) and `<device>.networks.csv` (the whole networks measured
to fit the correction and to prove it, each with its fingerprint). One file can hold the rows of
several spaces and settings. Block keys hold shapes, so rows of every input size sit side by side;
what is fitted and proven is kept per *scope* (`search_spaces.scope`): a space's classifiers at
224x224 are the space's name (`nextvit`), any other task or input size `<space>:<task>@<H>x<W>`
(`nextvit:backbone@512x512`: backbones, no head, at 512x512).

    predict(arch) = Σ_blocks a_kind · stat(block) + b      (stat = p10_ms or median_ms)

with `a_kind`, `b` fitted per scope on whole networks measured on the same target
(`hwnas.latency.correction`). Without a correction, a = 1 and b = 0.

Every row carries the fingerprint of the graph that was timed (`hwnas.latency.fingerprint`). A
loaded table checks each row an arch uses against the current code the first time it is used
(and, for a space, the fit networks of its correction), through a disk cache, so `predict` stays a
dict lookup and a sum; a row that no longer matches raises `StaleRowsError` naming the rows and
the profile command (`allow_stale=True` uses them anyway, and `stale_used` says which).
"""
from __future__ import annotations

import csv
import hashlib
import importlib.resources
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from search_spaces import Arch, parse_scope

from hwnas._files import atomic_write


from .errors import LatencyTableError
from .keys import block_keys

COLUMNS = ("key", "median_ms", "p10_ms", "spread", "runs", "fingerprint")
LEGACY_COLUMNS = COLUMNS[:5]  # tables written before fingerprints: readable, every row stale
NET_COLUMNS = ("space", "role", "arch_id", "median_ms", "p10_ms", "spread", "runs", "arch", "fingerprint")
PARTIAL = ".partial"  # <device>.partial.csv: a profile in progress (never chosen by default_table_path)
STATISTICS = ("p10_ms", "median_ms")
#: no block or network takes longer than this on any target: a larger number is a unit slip or garbage
MAX_MS = 1e6


def check_ms(value: float, what: str) -> None:
    """A measured latency: a finite number of ms in (0, MAX_MS] (ValueError naming `what` otherwise)."""
    if not (0 < value <= MAX_MS):  # also False for NaN
        raise ValueError(f"{what}={value!r} is no latency (a number of ms in (0, {MAX_MS:g}])")
REPO_ROOT = Path(__file__).resolve().parents[2]
# The shipped tables: the `latency_tables` data package (the repository's latency_tables/ in a
# checkout or an editable install, site-packages/latency_tables in a wheel).
TABLES_DIR = Path(str(importlib.resources.files("latency_tables")))


class MissingRowsError(LatencyTableError):
    """An arch needs block rows the table does not have."""

    def __init__(self, keys: list[str], table: "LatencyTable", space: str):
        self.keys = keys
        shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
        super().__init__(
            f"latency table {table.path or '(in memory)'} (target {table.target!r}) has no row for "
            f"{len(keys)} block(s) of this {describe_scope(space)} arch: {shown}. Fill them with "
            f"`{profile_command(table.target, space)}` on the target device.")


class StaleRowsError(LatencyTableError):
    """Rows (or the correction's fit networks) whose timed graph is not what the current code deploys."""

    def __init__(self, keys: list[str], table: "LatencyTable", space: str, what: str = "row(s)",
                 detail: str = ""):
        self.keys = keys
        shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
        fp = table.provenance.get("fingerprint") or {}
        hint = ""
        if not fp:
            hint = (" The table has no fingerprints at all (it was made before hwnas recorded them), so "
                    "nothing proves its rows time what the code deploys now.")
        else:
            import torch
            if fp.get("torch") and fp["torch"].split("+")[0] != torch.__version__.split("+")[0]:
                hint = (f" Its fingerprints were computed with torch {fp['torch']}, this is torch "
                        f"{torch.__version__}.")
        super().__init__(
            f"latency table {table.path or '(in memory)'} (target {table.target!r}, measured on "
            f"{table.provenance.get('device', '?')}) has {len(keys)} {what} of {space} that no longer describe "
            f"what the current code deploys{detail}: {shown}.{hint} Re-measure them with "
            f"`{profile_command(table.target, space)}` on that device (only stale rows and networks are "
            f"measured again), or set `target.allow_stale=true` to use the table anyway (the search report "
            f"says so).")


def profile_command(target: str, space: str) -> str:
    """The command that measures the rows of a scope (`nextvit`, `nextvit:backbone@512x512`, ...)."""
    name, task, size = parse_scope(space)
    extra = "" if task is None else f" task={task} input=[{size[0]},{size[1]}]"
    return f"python -m hwnas.profile +target={target} space={name}{extra}"


#: the networks an adapt measures when hwnas suggests one: 24, not 12 (experiments/results/latency_adapt_refresh.md:
#: on three EfficientFormerV2 Xeon runs, 24 fitted networks reached >= 80 % of held-out subnets within +-5 % where
#: 12 reached 74-80 %, at 15-29 s more of measuring; Kendall tau did not move, nor did Next-ViT's figures)
ADAPT_NETWORKS = 24


def adapt_command(target: str, space: str, n: int = ADAPT_NETWORKS) -> str:
    """The command that adapts a table of the target to this machine's device (`hwnas.latency.adapt`), with
    the settings the target suggests for it (`Target.adapt_settings`)."""
    from .target import get_target
    return " ".join([f"{profile_command(target, space)} adapt={n}", *get_target(target).adapt_settings])


#: where `hwnas.profile` writes a table when neither `out=` nor `tables_dir=` is given: a folder of the
#: user's, beside Hydra's run folders (relative to the working directory), so that a rerun resumes
USER_TABLES_DIR = "outputs/latency_tables"


def search_hint(target: str, table: Path, out: Path | None) -> str:
    """How a search uses the table this profile wrote (the default search reads the shipped tables)."""
    table = Path(table).resolve()
    how = f"target.table={table}" if out else f"target.tables_dir={table.parent.parent}"
    return f"to search with this table: python -m hwnas.search +target={target} {how}"


def describe_scope(space: str) -> str:
    """`nextvit` -> 'nextvit'; `nextvit:backbone@512x512` -> 'nextvit backbone (512x512)'."""
    name, task, size = parse_scope(space)
    return name if task is None else f"{name} {task} ({size[0]}x{size[1]})"


def is_complete(prov: Mapping[str, Any], space: str) -> bool:
    """Whether a table's provenance says it covers every block of `space` and has its correction."""
    return bool((prov.get("complete") or {}).get(space))


def table_candidates(target: str, space_name: str, tables_dir: str | os.PathLike | None = None) -> list[dict]:
    """Every table under `<tables_dir>/<target>/` that lists the space (in-progress `.partial` files
    excluded), with what `default_table_path` ranks them by."""
    folder = (Path(tables_dir) if tables_dir is not None else TABLES_DIR) / target
    out = []
    for js in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if js.name.endswith(".networks.json") or PARTIAL in js.name:
            continue
        try:
            prov = json.loads(js.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(prov, dict) and space_name in prov.get("spaces", []) and js.with_suffix(".csv").exists():
            out.append({"path": js.with_suffix(".csv"), "complete": is_complete(prov, space_name),
                        "corrected": bool((prov.get("correction") or {}).get(space_name)),
                        "measured": prov.get("source") == "measured", "device": prov.get("device", ""),
                        "date": str(prov.get("date", "")), "adapted": bool(prov.get("adapted"))})
    return out


def default_table_path(target: str, space_name: str, tables_dir: str | os.PathLike | None = None,
                       this_device: str | None = None) -> Path:
    """The table to use for (target, space): `choose_table(...)["path"]`."""
    return choose_table(target, space_name, tables_dir, this_device)["path"]


def choose_table(target: str, space_name: str, tables_dir: str | os.PathLike | None = None,
                 this_device: str | None = None) -> dict:
    """The table to use for (target, space), and why (`{"path", "reason"}`): among the tables under
    `latency_tables/<target>/` whose provenance lists the space, complete ones (every block measured
    and the correction fitted; a profile in progress or killed never wins); then measured over
    estimated, then one of `this_device` (the device this machine has for the target: its CPU or
    GPU), then a full profile over an adapted table (`hwnas.latency.adapt`: so an adapted table
    never replaces a complete profile of the same device, yet wins over another device's), then
    the newest. Only when no table is complete: one whose profile finished (its correction fitted)
    for fewer blocks than the space has -- the space grew since, or it was made for some archs --
    ranked the same way; predicting an arch with a block it lacks raises `MissingRowsError` (the
    search skips such archs and says so)."""
    cands = table_candidates(target, space_name, tables_dir)
    complete = [c for c in cands if c["complete"]] or [c for c in cands if c["corrected"]]
    if not complete:
        folder = (Path(tables_dir) if tables_dir is not None else TABLES_DIR) / target
        extra = ""
        if cands:
            extra = (f" Incomplete tables (a profile that did not finish: no correction fitted yet): "
                     f"{', '.join(str(c['path']) for c in cands)}; finish one by re-running the profile "
                     f"command, or pass its path as target.table=PATH.")
        raise LatencyTableError(
            f"no {'complete ' if cands else ''}latency table for target {target!r} and {describe_scope(space_name)} "
            f"under {folder}.{extra} "
            f"Make one with `{profile_command(target, space_name)}`, or pass its path.")
    def here(c):
        return this_device is not None and c["device"] == this_device

    best = max(complete, key=lambda c: (c["measured"], here(c), not c["adapted"], c["date"]))
    kind = ("an adapted table (the source table's rows, this device's correction)" if best["adapted"]
            else "an estimated table" if not best["measured"] else "a full profile")
    if here(best):
        why = f"{kind} of this machine's device ({this_device})"
        if best["adapted"]:
            why += "; no complete full profile of this device exists (one would be preferred)"
    elif this_device is not None:
        why = f"{kind} of {best['device']}: no table of this machine's device ({this_device}) exists"
    else:
        why = f"{kind} of {best['device']}" + (" (the newest of several)" if len(complete) > 1 else "")
    if not best["complete"]:
        why += "; it does not cover every block of the space (no complete table exists)"
    return {"path": best["path"], "reason": why, "adapted": best["adapted"], "device": best["device"]}


def provenance_path(csv_path: str | os.PathLike) -> Path:
    return Path(csv_path).with_suffix(".json")


def atomic_write_text(path: Path, text: str) -> None:
    """`text` to `path`, whole or not at all, flushed to the disk (`hwnas._files.atomic_write`)."""
    atomic_write(path, text)


def rows_digest(data: str | bytes) -> str:
    """The digest a provenance records of its rows CSV (`rows_sha256`): the SHA-256 of the file's bytes."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def check_rows_belong(path: Path, prov: Mapping[str, Any]) -> None:
    """Refuse rows that are not those the provenance describes: a run stopped between writing a table's
    two files (`LatencyTable.save`). A provenance without a digest (tables written before it) is taken
    as it is."""
    want = prov.get("rows_sha256")
    if want is None or want == rows_digest(Path(path).read_bytes()):
        return
    scope = (prov.get("spaces") or ["S"])[0]
    adapted = ((prov.get("adapted") or {}).get("scopes") or {}).get(scope)
    cmd = (profile_command(prov["target"], scope) + (f" adapt={adapted.get('asked', 'N')}" if adapted else "")
           + f" out={path}")
    raise LatencyTableError(
        f"latency table {path} does not hold the rows its provenance {provenance_path(path).name} describes (a run "
        f"stopped between writing the two); rerun the command that wrote it (e.g. `{cmd}`): it finishes from its "
        f".partial files when they are there and writes both again; or restore both files from their copy.")


def rows_to_csv(rows: Mapping[str, Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for key, r in rows.items():
        w.writerow([key, f"{r['median_ms']:.6g}", f"{r['p10_ms']:.6g}", f"{r['spread']:.4g}", int(r["runs"]),
                    r.get("fingerprint") or ""])
    return buf.getvalue()


def read_rows(path: str | os.PathLike) -> dict[str, dict]:
    """The rows of a table CSV; a missing or corrupt file raises `LatencyTableError`."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.csv") if p.with_suffix(".json").is_file())[:4]
        raise LatencyTableError(f"latency table {path} is a folder, not a table file: give its <device>.csv"
                                + (f" (here: {', '.join(found)})" if found else "")
                                + ", or name a folder of <target>/<device>.csv tables with target.tables_dir=DIR")
    if not path.exists():
        raise LatencyTableError(f"latency table {path} does not exist. Make one with "
                                f"`python -m hwnas.profile +target=T space=S` or pass an existing path.")
    rows: dict[str, dict] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or tuple(header) not in (COLUMNS, LEGACY_COLUMNS):
                raise ValueError(f"header is {header!r}, expected {','.join(COLUMNS)}")
            width = len(header)
            for lineno, rec in enumerate(reader, start=2):
                if len(rec) != width:
                    raise ValueError(f"line {lineno} has {len(rec)} fields, expected {width}")
                key = rec[0]
                if key in rows:
                    raise ValueError(f"line {lineno}: duplicate key {key}")
                r = dict(median_ms=float(rec[1]), p10_ms=float(rec[2]), spread=float(rec[3]), runs=int(rec[4]),
                         fingerprint=(rec[5] or None) if width > 5 else None)
                for col in ("median_ms", "p10_ms"):
                    check_ms(r[col], f"line {lineno} (key {key}): {col}")
                if not (0 <= r["spread"] < math.inf and r["runs"] >= 0):
                    raise ValueError(f"line {lineno} (key {key}): spread={r['spread']!r}, runs={r['runs']!r}: "
                                     "spread must be a finite number >= 0, runs >= 0")
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
    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    unit = prov.get("mes_unit_latency_ms")
    if unit is not None and not (number(unit) and unit > 0):
        raise LatencyTableError(f"provenance file {path}: mes_unit_latency_ms={unit!r} is no latency (a number of "
                                "ms > 0: MobileNetV2 x1.0 on that target); restore the file from git or re-run the "
                                "profile command.")
    # a table without a correction for a space is used as raw sums of rows: the search says so (NO CORRECTION)
    corrections = prov.get("correction") or {}
    for space, corr in corrections.items():
        if not isinstance(corr, dict) or not isinstance(corr.get("a", {}), dict):
            raise LatencyTableError(f"provenance file {path}: the {space} correction is not a mapping of factors "
                                    f"and an offset; re-fit it with `{profile_command(prov['target'], space)}` or "
                                    "restore the file from git.")
        # predict = Σ a_kind · Σ(blocks of kind) + b: a factor near 1 and an offset in ms
        bad = [f"a[{k}]={a!r}" for k, a in (corr.get("a") or {}).items() if not (number(a) and 0 < a <= 100)]
        a_default = corr.get("a_default", 1.0)
        if not (number(a_default) and 0 < a_default <= 100):
            bad.append(f"a_default={a_default!r}")
        b = corr.get("b", 0.0)
        if not (number(b) and abs(b) <= MAX_MS):
            bad.append(f"b={b!r}")
        if bad:
            raise LatencyTableError(f"provenance file {path}: the {space} correction has {', '.join(bad)} (a factor "
                                    f"in (0, 100], an offset of at most {MAX_MS:g} ms); re-fit it with "
                                    f"`{profile_command(prov['target'], space)}` or restore the file from git.")
    return prov


def networks_path(table_path: str | os.PathLike) -> Path:
    table_path = Path(table_path)
    return table_path.with_name(table_path.stem + ".networks.csv")


def read_networks(path: Path) -> list[dict]:
    """The whole-network records beside a table (none when the file is absent)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if tuple(reader.fieldnames or ()) not in (NET_COLUMNS, NET_COLUMNS[:-1]):
                raise ValueError(f"header {reader.fieldnames}")
            for rec in reader:
                for col in ("median_ms", "p10_ms"):
                    check_ms(float(rec[col]), f"line {reader.line_num} (arch {rec['arch_id']}): {col}")
                out.append({"space": rec["space"], "role": rec["role"], "arch_id": rec["arch_id"],
                            "median_ms": float(rec["median_ms"]), "p10_ms": float(rec["p10_ms"]),
                            "spread": float(rec["spread"]), "runs": int(rec["runs"]),
                            "arch": Arch.from_dict(json.loads(rec["arch"])),
                            "fingerprint": rec.get("fingerprint") or None})
    except (ValueError, KeyError, csv.Error) as e:
        raise LatencyTableError(f"whole-network file {path} is corrupt ({e}); delete it to re-measure.") from None
    return out


def write_networks(path: Path, records: Iterable[dict]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(NET_COLUMNS)
    for r in records:
        w.writerow([r["space"], r["role"], r["arch_id"], f"{r['median_ms']:.6g}", f"{r['p10_ms']:.6g}",
                    f"{r['spread']:.4g}", r["runs"], r["arch"].to_json(), r.get("fingerprint") or ""])
    atomic_write_text(Path(path), buf.getvalue())


class _SpaceModel:
    """One space's prediction model: per-key corrected values and the constant term."""

    __slots__ = ("values", "b")

    def __init__(self, values: dict[str, float], b: float):
        self.values = values
        self.b = b


class LatencyTable:
    """Block latencies of one target. Load with `LatencyTable.load(path)`.

    `check` (default: whenever the provenance names a fingerprint scheme, and always for a table
    read from disk) compares each row with the current code's deploy form before it is used;
    `allow_stale=True` turns a stale row from an error into an entry of `stale_used`.
    """

    def __init__(self, rows: Mapping[str, Mapping[str, Any]], provenance: Mapping[str, Any],
                 path: str | os.PathLike | None = None, check: bool | None = None, allow_stale: bool = False):
        self.rows = {k: dict(v) for k, v in rows.items()}
        self.provenance = dict(provenance)
        self.path = Path(path) if path is not None else None
        self.statistic = self.provenance.get("statistic", "p10_ms")
        if self.statistic not in STATISTICS:
            raise LatencyTableError(f"table {self.path}: statistic {self.statistic!r} is not one of {STATISTICS}")
        self.check = bool(self.provenance.get("fingerprint")) if check is None else bool(check)
        self.allow_stale = bool(allow_stale)
        self.stale_used: dict[str, list[str]] = {}  # space -> stale keys used because allow_stale (and "fit networks")
        self._models: dict[str, _SpaceModel] = {}
        self._fresh: set[str] = set()  # keys whose fingerprint matched the current code
        self._cache = None
        self._row_cache = None

    # ---- loading and saving -------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, target: str | None = None, space: str | None = None,
             allow_stale: bool = False) -> "LatencyTable":
        """Read `path` (.csv; its .json beside it). `target`/`space`, when given, must match the table."""
        path = Path(path)
        if path.suffix == ".json":
            path = path.with_suffix(".csv")
        rows = read_rows(path)
        prov = read_provenance(provenance_path(path))
        check_rows_belong(path, prov)
        table = cls(rows, prov, path, check=True, allow_stale=allow_stale)
        if target is not None and table.target != target:
            raise LatencyTableError(f"{path} is a table for target {table.target!r}, not {target!r}; "
                                    f"use `default_table_path({target!r}, space)` or profile that target.")
        if space is not None and space not in table.spaces:
            what = f"space {space!r}" if ":" not in space else f"{describe_scope(space)} (scope {space!r})"
            raise LatencyTableError(f"{path} has no rows for {what} (it covers {table.spaces}); "
                                    f"run `{profile_command(table.target, space)}`.")
        return table

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the provenance, then the CSV, each atomically. The provenance records the digest of
        the rows written after it (`rows_sha256`), so a run stopped between the two leaves a table
        `load` refuses, naming the command that writes both again -- never rows under a provenance
        (correction, completeness) that is not theirs, whichever of the two was new."""
        path = Path(path) if path is not None else self.path
        if path is None:
            raise LatencyTableError("save(): this table has no path; pass one")
        rows = rows_to_csv(self.rows)
        self.provenance["rows_sha256"] = rows_digest(rows)
        # allow_nan=False: a NaN would make the provenance unreadable to strict JSON parsers
        atomic_write_text(provenance_path(path),
                          json.dumps(self.provenance, indent=2, sort_keys=True, allow_nan=False) + "\n")
        atomic_write_text(path, rows)
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

    @property
    def device(self) -> str:
        return str(self.provenance.get("device", "?"))

    def describe(self) -> str:
        """One line saying what the table is and how far to trust it."""
        p = self.provenance
        what = (f"{p['target']} on {p.get('device', '?')} ({p.get('runtime', '?')} {p.get('runtime_version', '')}, "
                f"{p.get('precision', '?')}, batch {p.get('batch', '?')})")
        fid = p.get("fidelity") or {}
        parts = []
        for space, f in sorted(fid.items()):
            parts.append(f"{describe_scope(space)}: {100 * f['within_10pct']:.0f}% of {f['n']} held-out subnets within ±10%"
                         + (f" ({100 * f['within_5pct']:.0f}% within ±5%)" if "within_5pct" in f else "")
                         + f", tau {f['kendall_tau']:.2f}")
        for space, checks in sorted((p.get("fidelity_rechecks") or {}).items()):
            last = max(checks.values(), key=lambda c: c.get("date", ""))
            parts.append(f"{space} re-checked {last.get('date', '?')[:10]} on {last['n']} fresh subnets: "
                         f"{100 * last['within_10pct']:.0f}% within ±10%, {100 * last['within_5pct']:.0f}% within ±5%")
        quality = "; ".join(parts) if parts else "fidelity not measured"
        if self.is_estimated:
            cm = p.get("cost_model", {})
            how = (f"a cost model fitted to {len(cm['published_ms'])} published latencies, leave-one-out "
                   f"error {100 * cm['loo_mape']:.1f}%" if "loo_mape" in cm else p.get("method", "see provenance"))
            return (f"ESTIMATED latency table (not measured on a device) for {p['target']} on "
                    f"{p.get('device', '?')}, {p.get('precision', '?')}, batch {p.get('batch', '?')}: {how}")
        adapted = p.get("adapted") or {}
        if adapted:
            frm = adapted.get("from") or {}
            nets = ", ".join(f"{describe_scope(sc)}: {r.get('networks', '?')}"
                             for sc, r in sorted((adapted.get("scopes") or {}).items()))
            rows = adapted.get("rows")
            of = f"{rows['target']} table " if rows else ""
            timed = f"whole networks timed as {p['target']} ships them" if rows else "whole networks measured"
            return (f"ADAPTED latency table for {what}: block rows of the {of}{frm.get('table')} (measured on "
                    f"{frm.get('device')}), correction fitted on {timed} on {p.get('device', '?')} "
                    f"({nets}); {quality}")
        return f"measured latency table for {what}, {self.statistic} of many runs; {quality}"

    def invalidate(self) -> None:
        """Forget the precomputed prediction models and checks (after rows or corrections change)."""
        self._models.clear()
        self._fresh.clear()

    # ---- fingerprints -----------------------------------------------------------------------
    def deploy_form(self):
        """The deploy form the table's networks were timed in, what ships (from its provenance); its
        rows too, except in a table adapted from another target's (`rows_form`)."""
        from .deploy import deploy_form
        settings = dict((self.provenance.get("fingerprint") or {}).get("form") or {})
        if not settings:
            settings = {k: self.provenance.get(k) for k in ("batch", "precision")}
        return deploy_form(self.target, **settings)

    @property
    def rows_target(self) -> str:
        """The target whose deploy form the block rows were timed in: this table's, or for a table adapted
        across targets (`hwnas.latency.adapt`, e.g. torch_inductor from torch_cuda) the source's."""
        return ((self.provenance.get("adapted") or {}).get("rows") or {}).get("target") or self.target

    def rows_form(self):
        """The deploy form the block rows were timed in (`deploy_form` but in a cross-target adapted table)."""
        rows = (self.provenance.get("adapted") or {}).get("rows")
        if not rows:
            return self.deploy_form()
        from .deploy import deploy_form
        return deploy_form(rows["target"], **rows["fingerprint"]["form"])

    def current_fingerprints(self):
        """The current code's fingerprints of this table's deploy form (`FingerprintCache`): what its
        whole networks are checked against."""
        if self._cache is None:
            from .fingerprint import cache_for
            self._cache = cache_for(self.deploy_form())
        return self._cache

    def row_fingerprints(self):
        """The current code's fingerprints of the form the rows were timed in (`rows_form`)."""
        if self.rows_target == self.target:
            return self.current_fingerprints()
        if self._row_cache is None:
            from .fingerprint import cache_for
            self._row_cache = cache_for(self.rows_form())
        return self._row_cache

    def stale_keys(self, keys: Iterable[str]) -> list[str]:
        """Those of `keys` (rows of this table) whose fingerprint is absent or differs from the code's."""
        cache = self.row_fingerprints()
        out = [k for k in dict.fromkeys(keys)
               if k in self.rows and (not self.rows[k].get("fingerprint") or self.rows[k]["fingerprint"] != cache.get(k))]
        cache.flush()
        return out

    def stale_networks(self, space: str, roles: Iterable[str] = ("fit",)) -> list[str]:
        """Arch ids of the whole networks of `space` beside the table (`<device>.networks.csv`) whose
        fingerprint is absent or differs from the current code's; with role "fit", also the
        correction's fit networks that have no record at all."""
        if self.path is None:
            return []
        cache = self.current_fingerprints()
        roles = set(roles)
        recs = [r for r in read_networks(networks_path(self.path)) if r["space"] == space and r["role"] in roles]
        out = [r["arch_id"] for r in recs
               if not r.get("fingerprint") or r["fingerprint"] != cache.network(block_keys(r["arch"]))]
        if "fit" in roles:
            have = {r["arch_id"] for r in recs if r["role"] == "fit"}
            out += [i for i in self.correction(space).get("fit_arch_ids") or [] if i not in have]
        cache.flush()
        return out

    def _admit(self, space: str, keys: Iterable[str]) -> None:
        """Put the values of `keys` into the space's prediction model, checking them first."""
        m = self._models.get(space) or self._model(space)
        todo = [k for k in dict.fromkeys(keys) if k not in m.values]
        missing = [k for k in todo if k not in self.rows]
        if missing:
            raise MissingRowsError(missing, self, space)
        if self.check:
            stale = self.stale_keys([k for k in todo if k not in self._fresh])
            if stale and not self.allow_stale:
                raise StaleRowsError(stale, self, space)
            if stale:
                used = self.stale_used.setdefault(space, [])
                used += [k for k in stale if k not in used]
            self._fresh.update(k for k in todo if k not in stale)
            self._check_correction(space)
        corr = self.correction(space)
        a, a_default = corr.get("a", {}), corr.get("a_default", 1.0)
        for k in todo:
            m.values[k] = a.get(k.split("(", 1)[0], a_default) * self.rows[k][self.statistic]

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
            # Precompute a_kind · stat per key once, so predict() is a dict lookup and a sum. A checked
            # table admits each key once, after its fingerprint matched (predict's slow path).
            values = {} if self.check else {k: a.get(k.split("(", 1)[0], a_default) * r[stat]
                                            for k, r in self.rows.items()}
            m = self._models[space] = _SpaceModel(values, float(corr.get("b", 0.0)))
        return m

    def _check_correction(self, space: str) -> None:
        """The correction is only as current as the whole networks it was fitted on (checked once)."""
        corr = self.correction(space)
        if not (self.check and corr.get("fit_arch_ids")) or f"networks:{space}" in self._fresh:
            return
        stale = self.stale_networks(space)
        if stale and not self.allow_stale:
            raise StaleRowsError(stale, self, space, what="correction fit network(s)",
                                 detail=f" (its correction was fitted on {len(corr['fit_arch_ids'])} whole "
                                        f"networks, these measured with other code)")
        if stale:
            self.stale_used.setdefault(space, []).append(f"{len(stale)} correction fit network(s)")
        self._fresh.add(f"networks:{space}")

    def block_sum(self, arch: Arch) -> float:
        """Σ of the raw block statistic (no correction)."""
        keys = block_keys(arch)
        self._admit(arch.scope, keys)
        return sum(self.rows[k][self.statistic] for k in keys)

    def predict(self, arch: Arch) -> float:
        """Predicted latency of `arch` in ms: the sum of its rows plus the correction fitted for its
        scope (its space, task and input size)."""
        scope = arch.scope
        m = self._models.get(scope) or self._model(scope)
        values = m.values
        try:
            return sum([values[k] for k in block_keys(arch)]) + m.b
        except KeyError:  # a key not used before: check it (missing, stale), then sum
            self._admit(scope, block_keys(arch))
            return sum([values[k] for k in block_keys(arch)]) + m.b

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
