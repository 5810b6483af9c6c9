"""The profiling loop: measure blocks into a table, measure whole networks, fit the correction.

A profile works in its own file, `<device>.partial.csv` (+ `.json`, `.networks.csv`), seeded from
the complete table at `<device>.csv` when there is one, and replaces that table only when it is
done: every block of the space measured, the fit networks measured and the correction fitted.
A killed profile therefore never leaves a half-made table where a search would pick it up
(`default_table_path` ignores `.partial` files and incomplete tables), and a rerun resumes from its
partial file. Everything written is atomic (temporary file, then rename): the working CSV after
every block, the whole-network CSV after every network, so a kill loses at most what was being
timed. Rows and networks whose fingerprint no longer matches the code are measured again.
A table keeps one way of timing (`check_timing`): its rows are timed with the provenance's settings
and each scope's networks of a role with those of `network_timing`, so a run with other settings
that would time anything beside them stops before it does.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

import search_spaces
from search_spaces import Arch, BlockSpec

from hwnas._progress import progress_bar

from .backends import Backend
from .correction import fit_correction
from .keys import block_keys
from .table import (NET_COLUMNS, PARTIAL, TABLES_DIR, LatencyTable, LatencyTableError,  # noqa: F401
                    atomic_write_text, describe_scope, networks_path, provenance_path, read_networks, read_provenance,
                    read_rows, write_networks)


log = logging.getLogger("hwnas.profile")  # the profile app's log: what its steps say to the user


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def table_path_for(backend: Backend, tables_dir: str | os.PathLike | None = None) -> Path:
    return Path(tables_dir or TABLES_DIR) / backend.name / f"{backend.device_slug()}.csv"


def partial_path(table_path: Path) -> Path:
    """Where a profile of `table_path` works until it is done."""
    table_path = Path(table_path)
    return table_path.with_name(table_path.stem + PARTIAL + table_path.suffix)


def _build(spec_or_arch, device: str):
    import torch
    import supernet
    with torch.device(device):  # initialise on the GPU when timing there: seconds saved per net
        if isinstance(spec_or_arch, BlockSpec):
            return supernet.build_block(spec_or_arch)
        return supernet.build_model(spec_or_arch)


def build_device(backend: Backend) -> str:
    """Where a block or network is built before `backend` deploys and times it (`Target.build_device`)."""
    from .target import get_target
    return get_target(backend.name).build_device


SETUP_KEYS = ("target", "precision", "batch", "threads", "device", "clock", "canary")
#: what decides a timing loop's figures (`Backend._time_loop`, `_cuda_time_loop`: `warmup` untimed runs, then
#: the stopping rule of `Backend._runs`): of every block row, of the MES unit, of whole networks timed one by one
LOOP_KEYS = ("warmup", "repeats", "min_runs", "max_seconds")
#: what decides a round-robin pass's (`Backend.time_round_robin`: `warmup` runs, then `rounds` rounds of a fixed
#: number of runs): of whole networks timed with `target.rounds`
ROUND_ROBIN_KEYS = ("warmup", "rounds")


class TimingSettingsError(LatencyTableError):
    """A table would get measurements timed otherwise than those it keeps."""


def timing_of(settings: Mapping[str, Any], networks: bool = False) -> dict:
    """Of `settings` (a backend's `info()`, or a table's provenance), those that decide what is measured: of a
    block row, or (`networks`) of a whole network, timed one by one or (`rounds` > 0) round-robin."""
    keys = LOOP_KEYS if not networks else ROUND_ROBIN_KEYS if settings.get("rounds") else (*LOOP_KEYS, "rounds")
    return {k: settings.get(k) for k in keys}


def check_timing(backend: Backend, table: LatencyTable, what: str, kept: dict | None, networks: bool = False) -> dict:
    """The settings `backend` times `what` with (`timing_of`), checked against `kept`: those the table's
    measurements of `what` were timed with (None: it keeps none). One table keeps one way of timing each
    thing, as its provenance says: a resumed profile or adapt with other settings would mix rows timed one
    way with rows timed another under a provenance naming one, so it is refused, naming each setting that
    differs. Settings that decide neither (`repeats` for round-robin networks, `rounds` for blocks) may."""
    info = backend.info()
    mine = timing_of(info, networks)
    decided = {k: v for k, v in (kept or {}).items() if v is not None}  # None: not recorded, nothing to hold to
    differ = [k for k, v in decided.items() if k in mine and mine[k] != v]
    if differ:
        raise TimingSettingsError(
            f"{table.path} keeps {what} timed with {_settings(decided, differ)}; this run times with "
            f"{_settings(info, differ)}, and one table keeps one way of timing: rerun with "
            f"{' '.join(f'target.{k}={decided[k]}' for k in differ)}, or write another table (out=PATH or "
            f"tables_dir=DIR) to time them so.")
    return mine


def _settings(values: Mapping[str, Any], keys: Iterable[str]) -> str:
    return ", ".join(f"{k}={values.get(k)!r}" for k in keys)


def kept_timing(table: LatencyTable, scope: str, role: str = "fit") -> dict:
    """How `table`'s `role` networks of `scope` were timed: its record (`network_timing`), else (a table
    written before it was kept) the table's own settings."""
    rec = (table.provenance.get("network_timing") or {}).get(scope) or {}
    return rec.get(role) or timing_of(table.provenance, networks=True)


def _check_network_timing(backend: Backend, table: LatencyTable, role: str, kept: Sequence[dict],
                          todo: Sequence[Arch]) -> None:
    """`check_timing` for the `role` networks of each scope of `todo` beside the `kept` records, then the
    settings recorded (per scope and role: `network_timing`, on disk before anything is timed by them)."""
    timing = table.provenance.setdefault("network_timing", {})
    for scope in dict.fromkeys(a.scope for a in todo):
        held = any(r["space"] == scope and r["role"] == role for r in kept)
        what = f"the {role} networks of {describe_scope(scope)}"
        timing.setdefault(scope, {})[role] = check_timing(backend, table, what,
                                                          kept_timing(table, scope, role) if held else None, True)
    table.save()


def _check_setup(backend: Backend, path: Path, prov: dict) -> None:
    info = backend.info()
    for k in SETUP_KEYS:
        if prov.get(k) != info[k]:
            raise LatencyTableError(
                f"{path} was measured with {k}={prov.get(k)!r}, this run uses {info[k]!r}; "
                f"profile into another folder (tables_dir=...) or delete the table.")
    form = (prov.get("fingerprint") or {}).get("form")
    if form is not None and form != backend.form.settings():
        raise LatencyTableError(
            f"{path} timed the deploy form {form}, this run deploys {backend.form.settings()}; "
            f"profile into another folder (tables_dir=...) or delete the table.")


def open_table(backend: Backend, path: Path, space: str) -> LatencyTable:
    """The working table of a profile of `path` (the final table) for scope `space` (a space's
    name, or `<space>:<task>@<H>x<W>`): its partial file when a profile was interrupted (resume),
    else a copy of the table at `path` (only what changed is measured), else a new one. Refuses a
    table of another setup (precision, batch, device, deploy form ...)."""
    path = Path(path)
    work = partial_path(path)
    if work.exists():
        prov = read_provenance(provenance_path(work))
        _check_setup(backend, work, prov)
        table = LatencyTable(read_rows(work), prov, work, check=False)
    elif path.exists():
        prov = read_provenance(provenance_path(path))
        _check_setup(backend, path, prov)
        table = LatencyTable(read_rows(path), prov, work, check=False)
        if networks_path(path).exists():
            shutil.copyfile(networks_path(path), networks_path(work))
        table.save()
    else:
        table = LatencyTable({}, {**backend.info(), "source": "measured", "spaces": [], "date": now_iso(),
                                  "correction": {}, "fidelity": {}, "profiling": {}, "complete": {}}, work,
                             check=False)
    old_fp = table.provenance.get("fingerprint") or {}
    table.provenance["fingerprint"] = backend.fingerprint_info()
    table.provenance["deploy_form"] = backend.form.describe()
    if old_fp.get("backfilled"):  # the backfilled rows are still those of that record
        table.provenance["fingerprint"]["backfilled"] = old_fp["backfilled"]
    attach_canary(backend, table)
    if space not in table.provenance["spaces"]:
        table.provenance["spaces"] = sorted(set(table.provenance["spaces"]) | {space})
    table.provenance.setdefault("complete", {})[space] = False
    # rows added later to a table (another scope) may be timed by another runtime version or host
    prof = table.provenance.setdefault("profiling", {}).setdefault(space, {"block_seconds": 0.0})
    prof.update({"runtime_version": backend.runtime_version(), "host": backend.info()["host"],
                 "started": prof.get("started") or now_iso()})
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


class DeadlineReached(Exception):
    """A time-boxed run stopped between two measurements; everything measured so far is on disk."""


def _check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlineReached("deadline reached")


class DeviceDependentForward(LatencyTableError):
    """What a backend timed on its device is not the graph the deploy form gives on meta tensors."""


def _same_graph(what: str, measured_fp: str | None, expected: str, backend: Backend) -> None:
    if measured_fp is not None and measured_fp != expected:
        raise DeviceDependentForward(
            f"{what} traced on {build_device(backend)} ({backend.device()}) gives fingerprint {measured_fp}, but "
            f"the deploy form traced on meta tensors gives {expected}: some code computes differently "
            f"depending on the device (or the torch version's tracing differs). Nothing measured this way "
            f"could be checked later; fix the device-dependent branch first.")


def profile_blocks(backend: Backend, table: LatencyTable, specs: Sequence[BlockSpec], space: str,
                   progress: bool = True, limit: int | None = None,
                   on_row: Callable[[str, dict], None] | None = None, deadline: float | None = None) -> dict:
    """Measure every spec whose key has no row in `table` yet, or a stale one (its fingerprint is
    not the current code's), saving the table after each one.

    Returns {"measured": n, "skipped": n, "stale": n, "seconds": s} for this call; the space's
    cumulative profiling time is kept in `provenance["profiling"][space]`.
    """
    import supernet
    current = table.current_fingerprints().get_many(s.key for s in specs)
    stale = {s.key for s in specs if s.key in table.rows and table.rows[s.key].get("fingerprint") != current[s.key]}
    todo = [s for s in specs if s.key not in table.rows or s.key in stale]
    if limit is not None:
        todo = todo[:limit]
    if todo:  # rows kept beside them: timed as they were; else the rows' settings are this run's
        todo_keys = {s.key for s in todo}
        kept = any(k not in todo_keys for k in table.rows)
        kept_settings = timing_of(table.provenance) if kept else None
        table.provenance.update(check_timing(backend, table, "block rows", kept_settings))
        if not kept:
            table.provenance.update(rounds=backend.rounds, method=backend.method())
    prof = table.provenance.setdefault("profiling", {}).setdefault(space, {"block_seconds": 0.0})
    prof["n_blocks"] = len(specs)
    table.save()  # the provenance exists from the first row on
    t_start = time.perf_counter()
    device = build_device(backend)
    chunk = _chunk(backend)
    for i, spec in enumerate(progress_bar(todo, len(todo), f"{backend.name} blocks ({space})", progress)):
        _check_deadline(deadline)
        if chunk and i % chunk == 0:  # compiled targets: the next packages first, in parallel workers
            _precompile(backend, table, space, [(s, supernet.block_input_shape(s, backend.batch), current[s.key])
                                                for s in todo[i:i + chunk]], progress, deadline)
            _check_deadline(deadline)
        t0 = time.perf_counter()
        block = _build(spec, device)
        row = backend.measure(block, supernet.block_input_shape(spec, backend.batch))
        _same_graph(f"block {spec.key}", row.get("fingerprint"), current[spec.key], backend)
        row["fingerprint"] = current[spec.key]
        table.rows[spec.key] = row
        prof["block_seconds"] = round(prof["block_seconds"] + time.perf_counter() - t0, 2)
        table.provenance["date"] = now_iso()
        table.save()
        if on_row is not None:
            on_row(spec.key, row)
    prof["n_measured"] = sum(s.key in table.rows for s in specs)
    table.invalidate()
    table.save()
    return {"measured": len(todo), "skipped": len(specs) - len(todo), "stale": len(stale),
            "seconds": time.perf_counter() - t_start}


def _chunk(backend: Backend) -> int:
    """How many packages a compiled target compiles before timing them (0: not a compiled target):
    a few per worker, so a run stopped by its deadline loses at most one chunk of compiling (a
    fresh GPU machine has no compile cache; measured rows are kept)."""
    if not hasattr(backend, "precompile"):
        return 0
    return max(1, 4 * int(getattr(backend, "compile_workers", 1)))


def _precompile(backend: Backend, table: LatencyTable | None, space: str, items: list, progress: bool,
                deadline: float | None) -> None:
    """Let a compiled target compile what is about to be timed; its compile time goes into the
    space's profiling record (`compile_seconds` summed over packages, `compile_wall_seconds`)."""
    stats = backend.precompile(items, progress=progress, deadline=deadline)
    if table is not None:
        prof = table.provenance.setdefault("profiling", {}).setdefault(space, {})
        for k, name in (("seconds", "compile_seconds"), ("wall_seconds", "compile_wall_seconds"),
                        ("packages", "compiled_packages")):
            prof[name] = round(prof.get(name, 0) + stats[k], 2)
        table.save()


# ---- whole networks ----------------------------------------------------------------------------
def network_shape(backend: Backend, arch: Arch) -> tuple[int, ...]:
    """The input a whole network is timed at (and a compiled target compiles it for)."""
    return (backend.batch, 3, *arch.input_size)


def measure_networks(backend: Backend, archs: Sequence[Arch], role: str, path: Path,
                     progress: bool = True, fingerprints=None, deadline: float | None = None,
                     table: LatencyTable | None = None, anchors: Sequence[tuple[Arch, float]] = (),
                     anchor_log: list | None = None) -> list[dict]:
    """Measure each arch end to end, skipping those already in `path` under `role` with the current
    code's fingerprint (`fingerprints`: a `FingerprintCache` of the backend's form); returns the
    records of `archs` in their order. A compiled target compiles them all first (its compile time
    recorded in `table`'s provenance when given). With `target.rounds`, `anchors` ((arch, its time
    measured before, in `backend.statistic`)) are timed in every round-robin group beside the networks,
    and the group is scaled by the median of their before / now (`_measure_round_robin`; each group's
    factor appended to `anchor_log`, a list); anchors are never recorded."""
    if fingerprints is None:
        from .fingerprint import cache_for
        fingerprints = cache_for(backend.form)
    current = {a.id: fingerprints.network(block_keys(a)) for a in [*archs, *(a for a, _ in anchors)]}
    fingerprints.flush()
    records = read_networks(path)
    done = {(r["space"], r["role"], r["arch_id"]): r for r in records
            if r["arch_id"] not in current or r.get("fingerprint") == current[r["arch_id"]]}
    records = [r for r in records if (r["space"], r["role"], r["arch_id"]) in done]  # drop stale ones
    todo = [a for a in archs if (a.scope, role, a.id) not in done]
    if todo and table is not None:
        _check_network_timing(backend, table, role, records, todo)
    device = build_device(backend)
    if backend.rounds and todo:
        group = max(1, int(backend.round_robin_group))
        for g in range(0, len(todo), group):
            _check_deadline(deadline)
            _measure_round_robin(backend, todo[g:g + group], role, current, device, records, done, path, progress,
                                 anchors, anchor_log)
        return [done[(a.scope, role, a.id)] for a in archs]
    chunk = _chunk(backend)
    desc = f"{backend.name} {role} networks ({archs[0].scope if archs else ''})"
    for i, arch in enumerate(progress_bar(todo, len(todo), desc, progress)):
        _check_deadline(deadline)
        if chunk and i % chunk == 0:
            _precompile(backend, table, arch.scope, [(a, network_shape(backend, a), current[a.id])
                                                     for a in todo[i:i + chunk]], progress, deadline)
            _check_deadline(deadline)
        model = _build(arch, device)
        shape = network_shape(backend, arch)
        m = backend.measure(model, shape)
        _same_graph(f"network {arch.id}", m.get("fingerprint"), current[arch.id], backend)
        # the `space` column holds the scope: space, task and input size (a bare name for 224px classifiers)
        r = {"space": arch.scope, "role": role, "arch_id": arch.id, **m, "fingerprint": current[arch.id],
             "arch": arch}
        del model
        records.append(r)
        done[(arch.scope, role, arch.id)] = r
        write_networks(path, records)
    return [done[(a.scope, role, a.id)] for a in archs]


def _measure_round_robin(backend: Backend, group: Sequence[Arch], role: str, current: dict, device: str,
                         records: list, done: dict, path: Path, progress: bool,
                         anchors: Sequence[tuple[Arch, float]] = (), anchor_log: list | None = None) -> None:
    """`measure_networks` with `target.rounds`: the networks of `group` (and the anchors) prepared together,
    then timed round-robin (`Backend.time_round_robin`); their records written together when the group is
    done (a killed run loses this group's timing, never a record).

    The canary follows the machine's drift only partly: it is small and stays in the cache, where large
    networks also feel their neighbours' memory traffic (Next-ViT's held-out subnets, timed round-robin
    minutes after its fit networks, came out 4.4 % slower relative to the canary, round 20). Anchors are
    networks timed before (the fit networks of the table being checked): timed again in the group, the
    median of before / now scales the group into the state those were timed in."""
    t0 = time.perf_counter()
    runs = {}
    fps = {}
    ids = {a.id for a in group}
    for arch in [*group, *(a for a, _ in anchors if a.id not in ids)]:
        model = _build(arch, device)
        runs[arch.id], fps[arch.id] = backend.prepare(model, network_shape(backend, arch))
        del model
        _same_graph(f"network {arch.id}", fps[arch.id], current[arch.id], backend)
    stats = backend.time_round_robin(runs, backend.rounds, seed=len(records))
    del runs
    if anchors:
        factor = float(np.median([ref / stats[a.id][backend.statistic] for a, ref in anchors]))
        for arch in group:
            stats[arch.id]["p10_ms"] *= factor
            stats[arch.id]["median_ms"] *= factor
        if anchor_log is not None:
            anchor_log.append(factor)
    for arch in group:
        r = {"space": arch.scope, "role": role, "arch_id": arch.id, **stats[arch.id], "fingerprint": current[arch.id],
             "arch": arch}
        records.append(r)
        done[(arch.scope, role, arch.id)] = r
    write_networks(path, records)
    if progress:
        print(f"{backend.name} {role} networks ({group[0].scope}): {len(group)} timed round-robin over "
              f"{backend.rounds} rounds in {time.perf_counter() - t0:.0f} s", flush=True)


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
                         "resolution": resolution, "source": "measured", **r, "timing": timing_of(backend.info())}}


def mark_complete(table: LatencyTable, space: search_spaces.SearchSpace) -> bool:
    """Record whether `table` covers every block of `space` (at its input size and task) and has
    its correction: only such a table is chosen by `default_table_path`."""
    corr = (table.provenance.get("correction") or {}).get(space.scope) or {}
    complete = bool(corr) and all(s.key in table.rows for s in space.all_blocks())
    table.provenance.setdefault("complete", {})[space.scope] = complete
    missing = table.provenance.get("missing_rows") or {}
    if complete and space.scope in missing:  # the note on rows the table lacked is answered
        del missing[space.scope]
        if not missing:
            table.provenance.pop("missing_rows", None)
    return complete


def promote(table: LatencyTable, final: Path) -> LatencyTable:
    """Make the working table the table at `final`: whole networks first, then provenance and rows
    (`LatencyTable.save`: each atomic, the provenance holding the rows' digest, so a kill between
    the two leaves a table `load` refuses, never new rows under the old correction), then remove the
    working files, its rows first (what a rerun resumes from: until then it finishes the promotion)."""
    work = table.path
    final = Path(final)
    if networks_path(work).exists():
        atomic_write_text(networks_path(final), networks_path(work).read_text())
    table.save(final)
    for p in (work, provenance_path(work), networks_path(work)):
        if p.exists():
            p.unlink()
    return table


def run_profile(backend: Backend, space: search_spaces.SearchSpace, table_path: Path | None = None,
                archs: Sequence[Arch] | None = None, n_fit: int = 30, progress: bool = True,
                limit: int | None = None, fit_seed: int = 0, deadline: float | None = None) -> LatencyTable:
    """The whole profile step for one space at its input size and task (its `scope`): blocks, then
    whole networks, then the correction.

    Works in `partial_path(table_path)`; replaces the table at `table_path` once done (see the
    module docstring). A run cut short by `limit` stays in its partial file."""
    table_path = Path(table_path) if table_path else table_path_for(backend)
    table = open_table(backend, table_path, space.scope)
    t0 = time.perf_counter()
    fit_archs = fit_set(space, n_fit, seed=fit_seed, archs=archs) if n_fit > 0 else []
    # Only some archs: their blocks and those of the fit networks, so the correction can be fitted.
    specs = specs_for(space, list(archs) + fit_archs if archs else None)
    nets_before = network_records(networks_path(table.path))
    blocks = profile_blocks(backend, table, specs, space.scope, progress=progress, limit=limit, deadline=deadline)
    if limit is not None and any(s.key not in table.rows for s in specs):
        return table  # a partial run (tests, smoke runs): no networks, no correction yet
    measured = blocks["measured"] or "mes_unit_latency_ms" not in table.provenance
    if fit_archs:  # n_fit=0: blocks only, no correction
        t_net = time.perf_counter()
        recs = measure_networks(backend, fit_archs, "fit", networks_path(table.path), progress,
                                table.current_fingerprints(), deadline=deadline, table=table)
        table.provenance["profiling"][space.scope]["network_seconds_this_run"] = round(time.perf_counter() - t_net, 2)
        table.provenance.setdefault("correction", {})[space.scope] = fit_correction(table, recs, positive_for=[space.min_arch()])
    if "mes_unit_latency_ms" not in table.provenance:
        table.provenance.update(measure_mes_unit(backend))
    table.provenance["profiling"][space.scope]["last_run_seconds"] = round(time.perf_counter() - t0, 2)
    table.provenance["date"] = now_iso()
    mark_complete(table, space)
    table.invalidate()
    if not measured and network_records(networks_path(table.path)) == nets_before:
        log.info("%s", kept_note(backend, table, table_path, space.scope, len(specs), {"fit": len(fit_archs)}))
    return promote(table, table_path)


def network_records(path: Path) -> set[tuple]:
    """What identifies each whole-network record of `path`: (scope, role, arch id, fingerprint)."""
    return {(r["space"], r["role"], r["arch_id"], r["fingerprint"]) for r in read_networks(path)}


def kept_note(backend: Backend, table: LatencyTable, path: Path, scope: str, n_rows: int,
              networks: Mapping[str, int]) -> str:
    """The line a run that measured nothing logs: what the table at `path` keeps of `scope` (`n_rows` block
    rows, `networks[role]` networks of each role), timed how, and, where this run's settings would time them
    otherwise, how to time them so (another table)."""
    parts = [(f"{n_rows} block rows", timing_of(table.provenance))] if n_rows else []
    parts += [(f"{n} {'held-out' if role == 'fidelity' else role} networks", kept_timing(table, scope, role))
              for role, n in networks.items() if n]
    info = backend.info()
    differ = sorted({k for _, kept in parts for k, v in kept.items() if v is not None and info.get(k) != v})
    return (f"nothing measured: the {' and '.join(what for what, _ in parts)} of {describe_scope(scope)} in {path} "
            f"are kept as timed with the table's settings ("
            + "; ".join(f"{what.split(' ', 1)[1]}: {_settings(kept, kept)}" for what, kept in parts) + ")"
            + (f"; this run's {_settings(info, differ)} would time them otherwise: to re-time them so, profile into "
               f"another table (out=PATH or tables_dir=DIR)" if differ else ""))
