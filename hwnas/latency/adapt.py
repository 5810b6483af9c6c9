"""A latency table for this device in minutes: adapt an existing table of the same target.

A table measured on one device ranks networks on another almost as well (Kendall τ ≥ 0.93 from an
AMD EPYC to an Intel Xeon, ≥ 0.97 from an H200 to an H100) while its scale drifts (0.57-0.73x on
the Xeon). So instead of timing every block again, `adapt` keeps the source table's rows and fits
this device's correction on a few whole networks measured here:

    measured_here ≈ Σ_kind s_kind · a_kind · Σ(source rows of that kind) + b

where `a_kind` is the source table's own correction (what it learned about block sums against
whole networks) and `s_kind` the device change: one scale, or per block kind with a ridge pulling
each `s_kind` to the common one, whichever has the lower leave-one-out error (as
`hwnas.latency.correction` chooses). With few networks the prior "the source's shape, one scale"
is what the ridge falls back to.

The networks to measure are chosen to inform the fit (`pick_networks`): the smallest and largest
of a pool, then farthest-point steps over log-size and block-kind mix, so the first k of them are
already spread; a run may stop once the leave-one-out error is low enough (`stop_loo`).

The adapted table is written beside the others as `<device>.adapted.csv` (+ `.json`,
`.networks.csv`), never over a full profile of the device; its provenance says `adapted`: from
which table, how many networks, how long. It works in `<device>.adapted.partial.*` and is promoted
when done, every file written atomically after each network, so a killed run resumes and loses at
most the network being timed. `measure_held_out` then measures fresh held-out subnets and reports
the adapted table's fidelity next to the source table's own (the plain transfer).

Across targets: a target without a table of its own starts from one of the targets it `adapts_from`
(`hwnas.latency.target.Target`; `torch_inductor` from `torch_cuda`, whose eager module it compiles). The
rows keep the source's fingerprints and are checked against the source's form (`LatencyTable.rows_form`);
the whole networks are timed, fingerprinted and checked as this target ships them, so the correction
carries the rows to the shipped form (fusion, kernel choice) and the device change at once. A compiled
target compiles the networks side by side a round ahead of their timing (`_compile_networks`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

import search_spaces
from search_spaces import Arch

from .correction import _fit, choose_form, fidelity_metrics, kind_of, kind_sums
from .keys import block_keys
from .profiler import (DeadlineReached, _check_deadline, _chunk, _precompile, held_out_set, kept_note,  # noqa: F401
                       mark_complete, measure_mes_unit, measure_networks, network_records, network_shape, now_iso,
                       partial_path, promote)
from .table import (TABLES_DIR, LatencyTable, LatencyTableError, adapt_command, atomic_write_text,  # noqa: F401
                    networks_path, provenance_path, read_networks, read_provenance, read_rows)

if TYPE_CHECKING:
    from .backends import Backend

ADAPTED = ".adapted"
#: what must be equal between a source table and this run (the device may differ: that is the point)
SAME_SETUP = ("target", "precision", "batch", "threads", "clock", "canary", "statistic")


def adapted_path(table_path: Path) -> Path:
    """`<tables>/<target>/<device>.csv` -> `<device>.adapted.csv` (a full profile keeps its name)."""
    table_path = Path(table_path)
    return table_path.with_name(table_path.stem + ADAPTED + table_path.suffix)


def is_adapted(prov: dict) -> bool:
    return bool(prov.get("adapted"))


def default_source(target: str, scope: str, tables_dir=None) -> Path:
    """The table to adapt from by default: the best complete, fully profiled (not adapted) table of
    the target under `tables_dir` (a user's folder, `hwnas.profile`'s default `outputs/latency_tables`)
    or among the shipped tables -- a new device adapts the shipped table unless the user has a better
    one; then the same for each target it `adapts_from`."""
    from .table import table_candidates
    from .target import get_target
    siblings = get_target(target).adapts_from
    folders = [None] if tables_dir is None or Path(tables_dir).resolve() == TABLES_DIR.resolve() else [tables_dir, None]
    for t in (target, *siblings):  # this target's own tables first, then those it may start from
        cands = [c for d in folders for c in table_candidates(t, scope, d) if c["complete"] and not c["adapted"]]
        if cands:
            return max(cands, key=lambda c: (c["measured"], c["date"]))["path"]
    also = "".join(f" or of {s!r}" for s in siblings)
    where = " or ".join(str(Path(d) if d is not None else TABLES_DIR) for d in folders)
    raise LatencyTableError(
        f"no complete latency table of target {target!r}{also} for {scope} under "
        f"{where} to adapt from; give one with adapt_from=PATH, or "
        f"profile fully: `python -m hwnas.profile +target={target} space={scope}`.")


# ---- which networks to measure -----------------------------------------------------------------------
def pick_networks(space: search_spaces.SearchSpace, source: LatencyTable, n: int, seed: int = 0,
                  pool: int = 300, exclude: Sequence[str] = ()) -> list[Arch]:
    """`n` networks that inform a fit: from a pool (min, max, references, `pool` random subnets),
    the fastest and the slowest by the source table, then each next one farthest (in standardized
    log Σ-blocks, weighted x2, and per-kind shares of Σ-blocks) from those already chosen."""
    cands = [space.min_arch(), space.max_arch(), *space.references().values(),
             *space.sample_many(pool, seed=30_000 + seed)]
    taken = set(exclude)
    cands = [a for a in dict.fromkeys(cands) if a.id not in taken and not source.missing(a)]
    if n <= 0 or not cands:
        return []
    kinds = sorted({kind_of(k) for a in cands for k in block_keys(a)})
    X = kind_sums(source, cands, kinds)
    total = X.sum(1)
    F = np.column_stack([2.0 * np.log(total), X / total[:, None]])
    sd = F.std(0)
    F = (F - F.mean(0)) / np.where(sd > 0, sd, 1.0)
    chosen = [int(np.argmin(total))]
    if n > 1 and len(cands) > 1:
        chosen.append(int(np.argmax(total)))
    dist = np.min([np.linalg.norm(F - F[i], axis=1) for i in chosen], axis=0)
    while len(chosen) < min(n, len(cands)):
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(F - F[i], axis=1))
    return [cands[i] for i in chosen]


# ---- the fit -------------------------------------------------------------------------------------------
def fit_adapted(source: LatencyTable, scope: str, archs: Sequence[Arch], measured: Sequence[float]) -> dict:
    """This device's correction on top of `source`'s rows and correction (see the module docstring);
    the provenance entry, in the form `LatencyTable` predicts with (a_kind, b, a_default)."""
    src = source.correction(scope)
    a_src, a_src_default = src.get("a", {}), src.get("a_default", 1.0)
    y = np.asarray(measured, float)
    kinds = sorted({kind_of(k) for a in archs for k in block_keys(a)} | set(a_src))
    prior = np.array([a_src.get(k, a_src_default) for k in kinds])
    raw = kind_sums(source, archs, kinds)
    X = raw * prior  # the source's corrected per-kind contributions
    used = X.any(0)
    form, loo = choose_form(X[:, used], y)
    s_common, _ = _fit(X[:, used], y, "scale")
    s = np.full(len(kinds), float(s_common[0]))
    if len(y) >= 2:
        s_used, b = _fit(X[:, used], y, form)
        s[used] = s_used
    else:  # one network: a pure scale through the origin
        s[:], b = y[0] / X[0].sum(), 0.0
        s_common = s[:1]
    pred = X @ s + b
    a = {k: float(p * sk) for k, p, sk in zip(kinds, prior, s)}
    return {"form": form, "a": a, "a_default": float(a_src_default * s_common[0]), "b": float(b),
            "device_scale": {k: float(v) for k, v in zip(kinds, s)}, "device_scale_common": float(s_common[0]),
            "loo_mape": loo, "fit_mape": float(np.mean(np.abs(pred - y) / y)), "fit_networks": len(y),
            "fit_arch_ids": [a_.id for a_ in archs], "statistic": source.statistic,
            "raw_sum_over_measured_mean": float(np.mean(raw.sum(1) / y)),
            "equation": "measured ≈ Σ_kind s_kind·a_kind(source)·Σ(source rows of kind) + b"}


def loo_of(corr: dict) -> float | None:
    v = (corr.get("loo_mape") or {}).get(corr.get("form"))
    return None if v is None else float(v)


# ---- the run -------------------------------------------------------------------------------------------
def _compile_networks(backend: Backend, table: LatencyTable, archs: Sequence[Arch], fps, progress: bool,
                      deadline: float | None) -> None:
    """A compiled target's packages of `archs` (whole networks, as shipped), compiled side by side."""
    if archs:
        _precompile(backend, table, archs[0].scope,
                    [(a, network_shape(backend, a), fps.network(block_keys(a))) for a in archs], progress, deadline)


def is_cross_target(backend: Backend, source: LatencyTable) -> bool:
    """Whether `source` is another target's table (one this target `adapts_from`)."""
    return source.target != backend.name


def _check_source(backend: Backend, source: LatencyTable, scope: str) -> None:
    from .target import get_target
    cross = is_cross_target(backend, source)
    siblings = get_target(backend.name).adapts_from
    if cross and source.target not in siblings:
        raise LatencyTableError(
            f"{source.path} is a table of target {source.target!r}; {backend.name!r} adapts only its own tables"
            + (f" or those of {', '.join(map(repr, siblings))}" if siblings else "")
            + f": give one with adapt_from=PATH, or profile fully: `python -m hwnas.profile +target={backend.name} "
              f"space={scope}`.")
    info = {**backend.info(), "statistic": backend.statistic}
    for k in SAME_SETUP:
        if k == "target" and cross:
            continue
        if k in source.provenance and source.provenance.get(k) != info.get(k):
            raise LatencyTableError(
                f"{source.path} was measured with {k}={source.provenance.get(k)!r}, this run uses "
                f"{info.get(k)!r}: a table is adapted only to the same setup on another device; set "
                f"target.{k}={source.provenance.get(k)!r} or adapt from another table (adapt_from=PATH).")
    form = (source.provenance.get("fingerprint") or {}).get("form")
    mine = backend.form.settings()
    # across targets the source's form must be this one before its last step: every setting it has, equal
    differ = (form is not None and form != mine) if not cross else \
        (form is None or any(mine.get(k) != v for k, v in form.items()))
    if differ:
        raise LatencyTableError(f"{source.path} timed the deploy form {form}, this run deploys {mine}; adapt "
                                f"from a table of this deploy form" + (" (the same batch, precision and layout)" if cross else "")
                                + ".")
    if not (source.provenance.get("complete") or {}).get(scope) or not source.correction(scope).get("fit_arch_ids"):
        raise LatencyTableError(f"{source.path} is not a complete table for {scope} (every block and a "
                                f"fitted correction); finish its profile first or adapt from another table.")


def _source_record(source: LatencyTable) -> dict:
    try:
        from .table import REPO_ROOT
        name = str(Path(source.path).resolve().relative_to(REPO_ROOT))
    except ValueError:
        try:
            name = str(Path(source.path).resolve().relative_to(TABLES_DIR.parent))
        except ValueError:
            name = str(source.path)
    p = source.provenance
    return {"table": name, "target": p.get("target"), "device": p.get("device"), "date": p.get("date"),
            "runtime_version": p.get("runtime_version")}


def open_adapted(backend: Backend, source: LatencyTable, out: Path, scope: str) -> LatencyTable:
    """The working table of an adapt run into `out`: its partial file (resume), else a copy of the
    adapted table at `out` (another scope adapted before), else a new one: the source's rows, this
    device's setup and a canary reference calibrated here."""
    out = Path(out)
    work = partial_path(out)
    rec = _source_record(source)
    for p in (work, out):
        if p.exists():
            prov = read_provenance(provenance_path(p))
            if prov.get("device") != backend.device():
                raise LatencyTableError(f"{p} is a table for {prov.get('device')}, not this machine's "
                                        f"{backend.device()}; adapt into another file (out=PATH).")
            frm = (prov.get("adapted") or {}).get("from") or {}
            if (frm.get("device"), frm.get("date")) != (rec["device"], rec["date"]):
                raise LatencyTableError(f"{p} was adapted from {frm.get('table')} ({frm.get('device')}, "
                                        f"{frm.get('date')}), not from {rec['table']}; adapt into another file "
                                        f"(out=PATH) or delete it.")
            table = LatencyTable(read_rows(p), prov, work, check=False)
            if p == out and networks_path(out).exists():
                atomic_write_text(networks_path(work), networks_path(out).read_text())
            break
    else:
        adapted = {"from": rec, "scopes": {},
                   "what": "block rows are the source table's (measured on its device); the correction "
                           "was fitted on whole networks measured on this device"}
        fp, form = source.provenance.get("fingerprint"), source.provenance.get("deploy_form")
        if is_cross_target(backend, source):  # the rows keep the source's form; the networks are timed in this one's
            adapted["rows"] = {"target": source.target, "fingerprint": fp, "deploy_form": form}
            adapted["what"] = (f"block rows are the {source.target} table's (its deploy form, measured on its device); "
                               f"the correction was fitted on whole networks timed on this device as "
                               f"{backend.name} ships them")
            fp, form = backend.fingerprint_info(), backend.form.describe()
        prov = {**backend.info(), "source": "measured", "statistic": source.statistic, "spaces": [],
                "date": now_iso(), "correction": {}, "fidelity": {}, "complete": {}, "profiling": {},
                "fingerprint": fp, "deploy_form": form, "adapted": adapted}
        table = LatencyTable({}, prov, work, check=False)
    for k, r in source.rows.items():  # the rows are the source's, whatever was measured since
        table.rows[k] = dict(r)
    if backend.canary:
        ref = (table.provenance.get("canary_ref") or {}).get("p10_ms")
        if ref is None:  # this device's own reference state (the source's is another machine's)
            ref = backend.calibrate_canary()
            table.provenance["canary_ref"] = {
                "p10_ms": ref, "model": "MobileNetV2 x1.0", "input_shape": [1, 3, 128, 128], "date": now_iso(),
                "calibration": "canary p10, each run following one MobileNetV2 x1.0 224px run (Backend.calibrate_canary)"}
        backend.canary_ref_ms = ref
    table.provenance["spaces"] = sorted(set(table.provenance["spaces"]) | {scope})
    table.provenance.setdefault("complete", {})[scope] = False
    table.save()
    return table


def adapt(backend: Backend, space: search_spaces.SearchSpace, source: LatencyTable, out: Path, n: int,
          stop_loo: float | None = None, min_networks: int = 6, seed: int = 0, progress: bool = True,
          deadline: float | None = None, on_network: Callable[[dict], None] | None = None) -> LatencyTable:
    """Measure up to `n` networks here, fit this device's correction on top of `source`, write the
    adapted table at `out` (see the module docstring); returns it. Stops early once the fit's
    leave-one-out error is <= `stop_loo` with at least `min_networks` measured. `on_network` gets
    each record as it is measured (after it is on disk). A deadline stops between two networks,
    raising `DeadlineReached` with everything measured on disk."""
    scope = space.scope
    _check_source(backend, source, scope)
    table = open_adapted(backend, source, out, scope)
    record = table.provenance["adapted"]["scopes"].setdefault(scope, {"seconds": 0.0})
    archs = pick_networks(space, source, n, seed=seed)
    fps = table.current_fingerprints()
    recs: list[dict] = []
    corr: dict = {}
    stopped = None
    # a compiled target compiles one network per worker side by side before timing them (not all N: the run
    # may stop early); the compile time goes into the table's profiling record, apart from the measuring
    chunk = int(getattr(backend, "compile_workers", 1)) if hasattr(backend, "precompile") else 0
    # with target.rounds, a group of networks is timed round-robin at once (`measure_networks`); the stop
    # rule is then checked after each group
    step = max(1, int(backend.round_robin_group)) if backend.rounds else 1
    for i in range(0, len(archs), step):
        group = archs[i:i + step]
        _check_deadline(deadline)
        have = {r["arch_id"] for r in read_networks(networks_path(table.path)) if r["space"] == scope and r["role"] == "fit"}
        if chunk and i % chunk == 0:
            _compile_networks(backend, table, [a for a in archs[i:i + chunk] if a.id not in have], fps, progress, deadline)
        t0 = time.perf_counter()
        got = measure_networks(backend, group, "fit", networks_path(table.path), progress=False,
                               fingerprints=fps, deadline=deadline, table=table)
        if any(a.id not in have for a in group):
            record["seconds"] = round(record["seconds"] + time.perf_counter() - t0, 2)
            table.save()
        for n, rec in enumerate(got, start=len(recs) + 1):
            if rec["arch_id"] not in have and on_network is not None:
                on_network({"role": "fit", **{k: rec[k] for k in ("arch_id", "median_ms", "p10_ms", "spread", "runs")},
                            "arch": rec["arch"].to_dict(), "i": n})
            if progress:
                print(f"adapt {backend.name} {scope}: {n}/{len(archs)} {rec['arch_id']} "
                      f"{rec[table.statistic]:.3f} ms", flush=True)
        recs.extend(got)
        if stop_loo is not None and len(recs) >= max(min_networks, 4):
            corr = fit_adapted(source, scope, [r["arch"] for r in recs], [r[table.statistic] for r in recs])
            if loo_of(corr) is not None and loo_of(corr) <= stop_loo:
                stopped = f"leave-one-out error {100 * loo_of(corr):.1f}% <= {100 * stop_loo:.1f}% after {len(recs)} networks"
                break
    if not recs:
        raise LatencyTableError(f"adapt={n}: no network to measure for {scope}")
    # fit on the values as stored (the networks file): a resumed run fits exactly what a fresh one does,
    # and the fit can be reproduced from the file (or a result JSON of it) alone
    stored = {r["arch_id"]: r for r in read_networks(networks_path(table.path)) if r["space"] == scope and r["role"] == "fit"}
    recs = [stored[r["arch_id"]] for r in recs]
    corr = fit_adapted(source, scope, [r["arch"] for r in recs], [r[table.statistic] for r in recs])
    table.provenance.setdefault("correction", {})[scope] = corr
    if "mes_unit_latency_ms" not in table.provenance:
        table.provenance.update(measure_mes_unit(backend))
    compiled = (table.provenance.get("profiling") or {}).get(scope) or {}
    if "compiled_packages" in compiled:
        record["compile"] = {k: compiled[k] for k in ("compiled_packages", "compile_seconds", "compile_wall_seconds")}
    record.update({"from": table.provenance["adapted"]["from"], "networks": len(recs), "asked": n,
                   "stopped_early": stopped, "stop_loo": stop_loo, "pick_seed": seed,
                   "source_correction": {k: source.correction(scope).get(k) for k in ("form", "fit_networks", "loo_mape")},
                   "date": now_iso()})
    table.provenance["date"] = now_iso()
    mark_complete(table, space)
    table.invalidate()
    return promote(table, out)


def measure_held_out(backend: Backend, space: search_spaces.SearchSpace, table: LatencyTable,
                     source: LatencyTable, n: int, seed: int = 1, deadline: float | None = None,
                     on_network: Callable[[dict], None] | None = None, progress: bool = True) -> dict:
    """Measure `n` fresh held-out subnets (disjoint from this table's and the source's fit networks)
    here; the adapted table's fidelity next to the source's (the transfer without adapting),
    recorded in the adapted table's provenance (`fidelity[scope]`, `adapted.scopes[scope].transfer`)."""
    scope = space.scope
    exclude = set(table.correction(scope).get("fit_arch_ids") or []) | set(source.correction(scope).get("fit_arch_ids") or [])
    held = held_out_set(space, n, exclude=exclude, seed=seed)
    if backend.canary:
        backend.canary_ref_ms = table.provenance["canary_ref"]["p10_ms"]
    fps = table.current_fingerprints()
    recs = []
    cut = False
    chunk = _chunk(backend)
    step = max(1, int(backend.round_robin_group)) if backend.rounds else 1  # target.rounds: groups round-robin
    anchors = held_out_anchors(table, scope) if backend.rounds else []
    anchor_log: list[float] = []
    for i in range(0, len(held), step):
        group = held[i:i + step]
        if deadline is not None and time.monotonic() > deadline:
            cut = True  # reported on the subnets measured so far
            break
        have = {r["arch_id"] for r in read_networks(networks_path(table.path))
                if r["space"] == scope and r["role"] == "fidelity"}
        if chunk and i % chunk == 0:
            _compile_networks(backend, table, [a for a in held[i:i + chunk] if a.id not in have], fps, progress,
                              deadline)
            if deadline is not None and time.monotonic() > deadline:
                cut = True  # (compiles cut short by it: never compiled inline in the timing loop)
                break
        t1 = time.perf_counter()
        got = measure_networks(backend, group, "fidelity", networks_path(table.path), progress=False,
                               fingerprints=fps, table=table, anchors=anchors, anchor_log=anchor_log)
        recs.extend(got)
        if any(a.id not in have for a in group):  # seconds spent measuring, summed over runs (a resumed run adds its own)
            scope_rec = table.provenance["adapted"]["scopes"].setdefault(scope, {})
            scope_rec["held_out_seconds"] = round(scope_rec.get("held_out_seconds", 0.0) + time.perf_counter() - t1, 2)
            table.save()
        for n, (arch, rec) in enumerate(zip(group, got), start=i + 1):
            if on_network is not None and arch.id not in have:
                on_network({"role": "held_out", **{k: rec[k] for k in ("arch_id", "median_ms", "p10_ms", "spread", "runs")},
                            "arch": rec["arch"].to_dict(), "predicted_ms": table.predict(arch),
                            "source_predicted_ms": source.predict(arch), "i": n})
        if progress and (len(recs) % 10 == 0 or step > 1):
            print(f"held-out {backend.name} {scope}: {len(recs)}/{len(held)}", flush=True)
    held = held[:len(recs)]
    if len(recs) < 2:
        raise DeadlineReached(f"the deadline left no time for held-out subnets of {scope}")
    measured = [r[table.statistic] for r in recs]
    pred = table.predict_many(held)
    src = source.predict_many(held)
    adapted_m, source_m = fidelity_metrics(pred, measured), fidelity_metrics(src, measured)
    ratio = np.asarray(src) / np.asarray(measured)
    seconds = table.provenance["adapted"]["scopes"][scope].get("held_out_seconds", 0.0)
    summary = {**{k: adapted_m[k] for k in ("n", "within_5pct", "within_10pct", "mape", "kendall_tau")},
               "seed": seed, "cut_by_deadline": cut, "date": now_iso(), "seconds": seconds, "held_out": "fresh subnets, disjoint from both "
               "tables' fit networks, measured on this device after the adaptation",
               "timing": (f"round-robin, {backend.rounds} rounds, groups of {backend.round_robin_group}, each with "
                          f"{len(anchors)} of the fit networks as anchors" if backend.rounds else "one after another")}
    if anchor_log:  # the groups this run timed (a resumed run does not time again what was measured before)
        summary["anchor_factors"] = [round(f, 5) for f in anchor_log]
    table.provenance.setdefault("fidelity", {})[scope] = summary
    rec_scope = table.provenance["adapted"]["scopes"].setdefault(scope, {})
    rec_scope["transfer"] = {**{k: source_m[k] for k in ("n", "within_5pct", "within_10pct", "mape", "kendall_tau",
                                                         "mean_signed_pct_error")},
                             "predicted_over_measured": [float(ratio.min()), float(ratio.max())],
                             "what": f"the source table ({source.device}) unadapted, on the same held-out subnets"}
    table.save()
    return {"scope": scope, "adapted": adapted_m, "source": source_m, "seconds": seconds, "cut": cut,
            "predicted_over_measured_source": [float(ratio.min()), float(ratio.max())],
            "networks": [{"arch_id": a.id, "arch": a.to_dict(), "measured_ms": float(m), "predicted_ms": float(p),
                          "source_predicted_ms": float(s)} for a, m, p, s in zip(held, measured, pred, src)]}


def held_out_anchors(table: LatencyTable, scope: str, k: int = 3) -> list[tuple[Arch, float]]:
    """The fit networks a round-robin held-out group is anchored to (`measure_networks`' anchors): `k` of
    this table's fit networks of `scope`, spread over their times (the 10th, 50th and 90th percentile for 3),
    with their times as the fit measured them."""
    fit = sorted(((r[table.statistic], r["arch"]) for r in read_networks(networks_path(table.path))
                  if r["space"] == scope and r["role"] == "fit"), key=lambda t: t[0])
    if not fit:
        return []
    idx = sorted({int(round(q * (len(fit) - 1))) for q in np.linspace(0.1, 0.9, k)})
    return [(fit[i][1], float(fit[i][0])) for i in idx]


def run_adapt(backend: Backend, space: search_spaces.SearchSpace, out: Path, n: int, source_path: Path | None = None,
              tables_dir=None, stop_loo: float | None = None, min_networks: int = 6, held_out: int = 30,
              held_out_seed: int = 1, results_dir: Path | None = None, progress: bool = True, log=print) -> LatencyTable:
    """`python -m hwnas.profile +target=T space=S adapt=N`: adapt, then measure `held_out` fresh
    subnets and write `latency_adapt_<target>_<scope>.json` into `results_dir` (the run directory)."""
    import json
    from .fidelity import scope_slug
    scope = space.scope
    source_path = Path(source_path) if source_path else default_source(backend.name, scope, tables_dir)
    source = LatencyTable.load(source_path, space=scope)  # its target: this one, or one it adapts_from (checked)
    across = f" (block rows of target {source.target}, whole networks timed as {backend.name} ships them)" \
        if is_cross_target(backend, source) else ""
    log(f"adapting {source_path} ({source.device}) to {backend.device()}{across} from up to {n} whole networks "
        f"into {out}" + (f", stopping once the leave-one-out error is <= {100 * stop_loo:.1f}%" if stop_loo else ""))
    t0 = time.perf_counter()
    before = _measured_state(out)
    table = adapt(backend, space, source, out, n, stop_loo=stop_loo, min_networks=min_networks, progress=progress)
    rec = table.provenance["adapted"]["scopes"][scope]
    corr = table.correction(scope)
    log(f"adapted from {rec['networks']} networks ({rec['seconds']:.0f} s measuring"
        + (f"; stopped early: {rec['stopped_early']}" if rec.get("stopped_early") else "")
        + f"): form {corr['form']}, device scale {corr['device_scale_common']:.3f}, leave-one-out error "
        + (f"{100 * loo_of(corr):.1f}%" if loo_of(corr) is not None else "not measured (< 4 networks)"))
    result = {"target": backend.name, "scope": scope, "table": str(out), "adapted": rec, "correction": corr}
    if held_out > 0:
        res = measure_held_out(backend, space, table, source, held_out, seed=held_out_seed, progress=progress)
        a, s = res["adapted"], res["source"]
        log(f"held-out: {a['n']} fresh {scope} subnets: adapted table {100 * a['within_10pct']:.0f}% within ±10%, "
            f"{100 * a['within_5pct']:.0f}% within ±5%, MAPE {100 * a['mape']:.1f}%, Kendall tau {a['kendall_tau']:.3f}; "
            f"the source table as it is: {100 * s['within_10pct']:.0f}% within ±10%, tau {s['kendall_tau']:.3f} "
            f"({res['seconds']:.0f} s)")
        result["held_out"] = res
    if _measured_state(out) == before:
        held = (result.get("held_out") or {}).get("adapted", {}).get("n", 0)
        log(kept_note(backend, table, out, scope, 0, {"fit": rec["networks"], "fidelity": held}))
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if results_dir is not None:
        atomic_write_text(Path(results_dir) / f"latency_adapt_{backend.name}_{scope_slug(scope)}.json",
                          json.dumps(result, indent=1) + "\n")
    log(table.describe())
    return table


def _measured_state(out: Path) -> tuple | None:
    """What an adapt run into `out` has measured so far (its whole networks, whether the MES unit is timed),
    from its partial files while they are there: equal before and after a run that measured nothing."""
    p = partial_path(out) if partial_path(out).exists() else Path(out)
    if not p.exists():
        return None
    return network_records(networks_path(p)), "mes_unit_latency_ms" in read_provenance(provenance_path(p))


def result_source_table(result: dict, root: str | Path) -> LatencyTable:
    """The table an adapt result (`experiments/latency_adapt.py`) was adapted from, its path relative to
    `root`: of the result's target, or of the sibling target it adapted across (`Target.adapts_from`)."""
    src = result["source_table"]
    return LatencyTable.load(Path(root) / src["table"], target=src.get("target", result["target"]),
                             space=result["scope"])


def refit_result(result: dict, source: LatencyTable) -> dict:
    """An adapt run's fit and held-out figures, reproduced from its measurements alone (a result JSON of
    `experiments/latency_adapt.py`: the adapt networks and the held-out networks with their times)."""
    scope = result["scope"]
    nets = result["adapt"]["networks"]
    corr = fit_adapted(source, scope, [Arch.from_dict(n["arch"]) for n in nets], [n[source.statistic] for n in nets])
    table = LatencyTable(source.rows, {**source.provenance, "correction": {scope: corr}}, check=False)
    held = result["held_out"]["networks"]
    pred = [table.predict(Arch.from_dict(n["arch"])) for n in held]
    return {"correction": corr, "predicted_ms": pred,
            "held_out": fidelity_metrics(pred, [n["measured_ms"] for n in held])}
