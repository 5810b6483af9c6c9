"""Adapt the shipped latency tables to this machine in minutes, and measure how well they then predict.

GPU machine (from the repository root; about 6 minutes; the ONNX Runtime part pinned to CPU core 3,
the torch_cuda part in a second process on the other cores at the same time, which then also profiles
torch_cuda fully for the side-by-side comparison while the CPU part still runs):

    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/latency_adapt.py --out "$OUT" --work outputs/latency_adapt --cpu-core 3 --deadline-s 330 --full-profile torch_cuda

torch_inductor (issue 27; GPU machine, alone on it): a table adapted from the shipped torch_cuda one, every network
compiled by AOTInductor in target.compile_workers processes a round ahead of its timing (`bash
experiments/inductor_adapt_call.sh` runs it resumably across calls):

    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/latency_adapt.py --targets torch_inductor --spaces efficientformerv2 --n-adapt-gpu 24 --n-held-out 100 --set torch_inductor.compile_workers=14 --set torch_inductor.autotune=false --out DIR --work DIR/tables --deadline-s 500

CPU smoke run of the plumbing (any machine; ~2 min; only onnxruntime_cpu without a GPU):

    PYTHONPATH=. python experiments/latency_adapt.py --smoke --out /tmp/adapt_smoke

Resume after a cut: the same command again, with the same --work (nothing measured is measured again;
on the GPU machine while it is warm: outputs/ is ignored by git, so it stays between calls).
Full profile for comparison (time spent vs fidelity, on the same held-out measurements):

    PYTHONPATH=. python experiments/latency_adapt.py --targets onnxruntime_cpu --full-profile --out DIR --deadline-s 3600

or, when a call has no time for both in one process, a full profile made beside it by the app on another
pinned core (`taskset -c 5 python -m hwnas.profile +target=onnxruntime_cpu space=S tables_dir=DIR`), scored
afterwards on the adapt run's held-out networks (no measuring; writes the result's `full_profile`):

    PYTHONPATH=. python experiments/latency_adapt.py --score-full-table DIR/onnxruntime_cpu/<device>.csv --result RESULT.json

Per target (`onnxruntime_cpu`: the shipped AMD EPYC table to this host's CPU, 1 thread, pinned with
os.sched_setaffinity to `--cpu-core`; `torch_cuda`: the shipped H200 table to this GPU) and per
space: `hwnas.latency.adapt.adapt` measures `--n-adapt` whole networks chosen to spread over size and
block mix and fits this device's correction on top of the shipped table; then `--n-held-out` fresh
held-out subnets are measured and predicted by the adapted table and by the shipped table as it is
(the plain transfer): share within ±10 % and ±5 %, MAPE, Kendall tau, and the seconds spent.

Writes under --out (at most 6 files, one folder deep, for the GPU machine's return limits):
    latency_adapt_<target>.jsonl           every network measured and every phase, one JSON line each,
                                           appended as it happens (a deadline cut loses nothing)
    latency_adapt_<target>_<space>.json    the result per space (rewritten atomically as it grows)
and the working tables under --work (default --out/tables): `<target>/<device>.adapted.{csv,json,networks.csv}`,
what a rerun resumes from; not needed afterwards: the result JSON holds every measurement, the fitted
correction and the adapted table's provenance.

`--deadline-s` stops every phase in time: adapting both spaces first, then the held-out sets, each
given an equal share of the time left (a cut held-out set is reported on what was measured, marked
`cut`). No Hydra/Optuna import (the GPU machine has neither).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TARGETS = ("onnxruntime_cpu", "torch_cuda", "torch_inductor")  # torch_inductor: adapted from the torch_cuda table
GPU_TARGETS = ("torch_cuda", "torch_inductor")
# shorter timing loops than a profile's (whole networks only, on a pinned core or a GPU: their p10 and
# median settle within a few runs); on the CPU the ONNX export (~2 s a network) costs more than the timing
FAST = {"onnxruntime_cpu": {"warmup": 2, "repeats": 20, "min_runs": 6, "max_seconds": 0.4},
        "torch_cuda": {"warmup": 5, "repeats": 50, "min_runs": 20, "max_seconds": 0.25}}
FAST["torch_inductor"] = FAST["torch_cuda"]
SMOKE = {"onnxruntime_cpu": {"warmup": 1, "repeats": 5, "min_runs": 3, "max_seconds": 0.05},
         "torch_cuda": {"warmup": 2, "repeats": 10, "min_runs": 5, "max_seconds": 0.05}}
SMOKE["torch_inductor"] = SMOKE["torch_cuda"]


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="where the results go (required unless --score-full-table)")
    ap.add_argument("--score-full-table", type=Path, default=None, metavar="CSV",
                    help="only score this fully profiled table (of the machine the result was measured on) on the "
                         "held-out networks of --result, and write it into that result as its full_profile")
    ap.add_argument("--result", type=Path, default=None, help="with --score-full-table: an adapt result JSON")
    ap.add_argument("--targets", nargs="+", choices=TARGETS, default=["onnxruntime_cpu", "torch_cuda"],
                    help="torch_inductor (not by default): a table of it adapted from the shipped torch_cuda one, "
                         "every network compiled by AOTInductor (target.compile_workers side by side)")
    ap.add_argument("--spaces", nargs="+", default=["efficientformerv2", "nextvit"])
    ap.add_argument("--n-adapt-cpu", type=int, default=12, help="whole networks to adapt onnxruntime_cpu")
    ap.add_argument("--n-adapt-gpu", type=int, default=10, help="whole networks to adapt torch_cuda or torch_inductor")
    ap.add_argument("--n-held-out", type=int, default=50)
    ap.add_argument("--stop-loo", type=float, default=None,
                    help="stop adapting once the leave-one-out error is <= this (e.g. 0.02); default: measure all")
    ap.add_argument("--seed", type=int, default=28, help="held-out seed (a fresh set, not the tables' own)")
    ap.add_argument("--cpu-core", type=int, default=None, help="pin the onnxruntime_cpu part to this core")
    ap.add_argument("--deadline-s", type=float, default=330.0)
    ap.add_argument("--full-profile", nargs="*", choices=TARGETS, default=None, metavar="TARGET",
                    help="after adapting, also profile these targets fully (none named: every target; every "
                         "block + 30 fit networks, the target's own timing settings) and predict the same held-out set")
    ap.add_argument("--smoke", action="store_true", help="tiny counts and timing loops: checks the plumbing")
    ap.add_argument("--serial", action="store_true", help="run the targets one after the other in this process")
    ap.add_argument("--tables", type=Path, default=None, help="source tables folder (default: the shipped ones)")
    ap.add_argument("--work", type=Path, default=None, help="where the adapted tables are made and resumed from "
                    "(default: <out>/tables; on the GPU machine an ignored folder of the checkout, outputs/..., "
                    "survives between calls while the machine is warm)")
    ap.add_argument("--set", action="append", default=[], metavar="TARGET.KEY=VALUE",
                    help="override a timing setting, e.g. --set onnxruntime_cpu.repeats=100")
    ap.add_argument("--held-out-set", action="append", default=[], metavar="TARGET.KEY=VALUE",
                    help="override a timing setting for the held-out networks only (after --set), e.g. "
                         "--held-out-set onnxruntime_cpu.max_seconds=2: the held-out truth timed longer than "
                         "the few-shot measurements, so its own noise limits Kendall tau less")
    args = ap.parse_args(argv)
    if args.score_full_table is not None and args.result is None:
        ap.error("--score-full-table needs --result (the adapt result JSON whose held-out networks it predicts)")
    if args.score_full_table is None and args.out is None:
        ap.error("--out is required")
    if args.smoke:
        args.n_adapt_cpu = args.n_adapt_gpu = 5
        args.n_held_out = min(args.n_held_out, 4)
    return args


class Log:
    """One JSON line per event, appended and flushed to disk as it happens."""

    def __init__(self, path: Path, t0: float):
        self.path, self.t0 = path, t0
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, **rec) -> None:
        rec = {"t_s": round(time.perf_counter() - self.t0, 1), **rec}
        line = json.dumps(rec)
        print(line if len(line) < 400 else line[:400] + " ...", flush=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _value(v: str):
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v, v)


def make_backend(target: str, args, held_out: bool = False):
    """The backend that times the adaptation networks, or with `held_out` the held-out ones (--held-out-set)."""
    from hwnas.latency import get_backend
    from hwnas.latency.config import target_settings
    settings = target_settings(target)
    settings.update((SMOKE if args.smoke else FAST)[target])
    for kv in args.set + (args.held_out_set if held_out else []):
        k, _, v = kv.partition("=")
        t, _, key = k.partition(".")
        if t == target:
            settings[key] = _value(v)
    name = settings.pop("name")
    return get_backend(name, **settings), settings


def run_target(target: str, args, t0: float) -> int:
    import search_spaces
    from hwnas._files import atomic_write
    from hwnas.latency.adapt import adapt, adapted_path, default_source, measure_held_out
    from hwnas.latency.profiler import DeadlineReached, table_path_for
    from hwnas.latency.table import LatencyTable, networks_path, read_networks

    deadline = time.monotonic() - (time.perf_counter() - t0) + args.deadline_s
    log = Log(args.out / f"latency_adapt_{target}.jsonl", t0)
    if target == "onnxruntime_cpu" and args.cpu_core is not None:
        os.sched_setaffinity(0, {args.cpu_core})
        import torch
        torch.set_num_threads(1)
    elif args.cpu_core is not None:  # the GPU part keeps off the core the ONNX Runtime part is timed on
        others = set(range(os.cpu_count() or 1)) - {args.cpu_core}
        if others:
            os.sched_setaffinity(0, others)
    backend, settings = make_backend(target, args)
    held_backend, held_settings = make_backend(target, args, held_out=True) if args.held_out_set else (backend, settings)
    shown, held_shown = ({k: v for k, v in st.items() if k != "mes"} for st in (settings, held_settings))
    tables = args.work or args.out / "tables"
    out_path = adapted_path(table_path_for(backend, tables))
    n_adapt = args.n_adapt_cpu if target == "onnxruntime_cpu" else args.n_adapt_gpu
    log(phase="start", target=target, device=backend.device(), runtime=backend.runtime_version(),
        host=platform.node(), python=platform.python_version(), affinity=sorted(os.sched_getaffinity(0)),
        settings=shown, held_out_settings=held_shown, n_adapt=n_adapt,
        n_held_out=args.n_held_out, deadline_s=args.deadline_s, smoke=args.smoke, table=str(out_path))
    spaces = [search_spaces.get_space(s) for s in args.spaces]
    results: dict[str, dict] = {}

    def write(scope: str) -> None:
        path = args.out / f"latency_adapt_{target}_{scope.replace(':', '_').replace('@', '_')}.json"
        atomic_write(path, json.dumps(results[scope], indent=1) + "\n")

    status = "done"
    sources = {}
    try:
        for space in spaces:  # adapt every space first: a cut then still leaves every table adapted
            scope = space.scope
            src_path = default_source(target, scope, args.tables)
            source = sources[scope] = LatencyTable.load(src_path, space=scope)  # torch_inductor: torch_cuda's
            ts = time.perf_counter()

            def on_network(rec, scope=scope):
                log(phase="adapt_network", target=target, space=scope, **rec)
            table = adapt(backend, space, source, out_path, n_adapt, stop_loo=args.stop_loo, seed=0,
                          progress=False, deadline=deadline, on_network=on_network)
            corr = table.correction(scope)
            rec = table.provenance["adapted"]["scopes"][scope]
            fit_ids = corr["fit_arch_ids"]
            measured = {r["arch_id"]: r for r in read_networks(networks_path(out_path))
                        if r["space"] == scope and r["role"] == "fit"}
            results[scope] = {
                "target": target, "space": space.name, "scope": scope, "smoke": args.smoke,
                "machine": {"device": backend.device(), "host": platform.node(),
                            "runtime": f"{backend.runtime} {backend.runtime_version()}",
                            "cpu_core": args.cpu_core if target == "onnxruntime_cpu" else None,
                            "affinity": sorted(os.sched_getaffinity(0))},
                "source_table": rec["from"], "timing_settings": table.provenance.get("method"),
                "adapt": {"seconds_measuring": rec["seconds"], "compile": rec.get("compile"),
                          "wall_seconds_this_run": round(time.perf_counter() - ts, 1),
                          "stopped_early": rec.get("stopped_early"), "correction": corr,
                          "networks": [{"arch_id": i, "arch": measured[i]["arch"].to_dict(),
                                        **{k: measured[i][k] for k in ("median_ms", "p10_ms", "spread", "runs")}}
                                       for i in fit_ids],
                          "canary_ref": table.provenance.get("canary_ref"),
                          "mes_unit_latency_ms": table.provenance.get("mes_unit_latency_ms")},
                "held_out": None, "full_profile": None}
            write(scope)
            log(phase="adapted", target=target, space=scope, networks=rec["networks"], seconds=rec["seconds"],
                form=corr["form"], loo_mape=corr["loo_mape"], device_scale_common=corr["device_scale_common"])
        for i, space in enumerate(spaces):
            scope = space.scope
            share = (deadline - time.monotonic()) / (len(spaces) - i)
            table = LatencyTable.load(out_path, target=target, space=scope)

            def on_held(rec, scope=scope):
                log(phase="held_out_network", target=target, space=scope, **rec)
            res = measure_held_out(held_backend, space, table, sources[scope], args.n_held_out, seed=args.seed,
                                   deadline=min(deadline, time.monotonic() + share), on_network=on_held,
                                   progress=False)
            res["timing_settings"] = held_shown
            a = res["adapted"]
            res["goal_met"] = bool(a["n"] >= 100 and a["within_10pct"] >= 0.95 and a["kendall_tau"] >= 0.9) \
                if target == "torch_inductor" else \
                bool(a["n"] >= 50 and a["within_10pct"] >= 0.95 and a["within_5pct"] >= 0.8
                     and a["kendall_tau"] >= 0.95)  # issue 27's goal (>= 100 subnets) / issue 28's (>= 50)
            results[scope]["held_out"] = res
            results[scope]["adapted_table_provenance"] = LatencyTable.load(out_path).provenance
            write(scope)
            a, s = res["adapted"], res["source"]
            log(phase="held_out", target=target, space=scope, n=a["n"], cut=res["cut"], seconds=res["seconds"],
                adapted={k: a[k] for k in ("within_10pct", "within_5pct", "mape", "kendall_tau", "mean_signed_pct_error")},
                source={k: s[k] for k in ("within_10pct", "within_5pct", "mape", "kendall_tau", "mean_signed_pct_error")},
                source_predicted_over_measured=res["predicted_over_measured_source"], goal_met=res["goal_met"])
        if args.full_profile is not None and (not args.full_profile or target in args.full_profile):
            for space in spaces:
                results[space.scope]["full_profile"] = full_profile(backend, space, args, results[space.scope], log,
                                                                    deadline)
                write(space.scope)
    except DeadlineReached:
        status = "deadline"
        log(phase="deadline", target=target, note=f"stopped at --deadline-s {args.deadline_s:.0f}; rerun the same "
            f"command with the same --out to resume")
    for scope in results:
        write(scope)
    log(phase="end", target=target, status=status, total_s=round(time.perf_counter() - t0, 1))
    return 0 if status == "done" else 3


def full_profile(backend, space, args, result: dict, log, deadline) -> dict:
    """Profile this space fully here, as `python -m hwnas.profile` does (every block, the references +
    30 fit networks, the target's own timing settings; resumable like it), and predict the held-out
    networks measured above with it. --smoke: the blocks of the smallest arch and 3 fit networks."""
    from hwnas.latency import get_backend
    from hwnas.latency.config import target_settings
    from hwnas.latency.profiler import run_profile, table_path_for
    settings = target_settings(backend.name)
    if args.smoke:
        settings.update(SMOKE[backend.name])
    full = get_backend(settings.pop("name"), **settings)
    path = table_path_for(full, (args.work or args.out / "tables").with_name((args.work or args.out / "tables").name + "_full"))
    t = time.perf_counter()
    table = run_profile(full, space, path, n_fit=3 if args.smoke else 30, progress=False, deadline=deadline,
                        archs=[space.min_arch()] if args.smoke else None)
    rec = score_full_table(table, space, result, seconds_wall=round(time.perf_counter() - t, 1))
    log(phase="full_profile", target=backend.name, space=space.scope, **{k: v for k, v in rec.items() if k != "note"})
    return rec


def score_full_table(table, space, result: dict, seconds_wall: float | None = None) -> dict:
    """How a fully profiled table of this machine predicts the held-out networks of an adapt `result`
    (those not among its own fit networks): the record `result["full_profile"]` holds."""
    from hwnas.latency.correction import fidelity_metrics
    from search_spaces import Arch
    fit = set(table.correction(space.scope)["fit_arch_ids"])
    nets = [n for n in (result.get("held_out") or {}).get("networks", []) if n["arch_id"] not in fit
            and not table.missing(Arch.from_dict(n["arch"]))]  # (a --smoke table has some blocks only)
    pred = [table.predict(Arch.from_dict(n["arch"])) for n in nets]
    measured = [n["measured_ms"] for n in nets]
    m = fidelity_metrics(pred, measured) if len(nets) >= 2 else None
    prof = table.provenance["profiling"][space.scope]
    # Both tables scale every timing by canary_ref / canary_p10 (the machine's speed drift cancelled), each to its
    # own reference, calibrated minutes apart: one calibration's noise moves a whole table's scale (10 % on the
    # 2-core Intel Xeon VM, 2026-12-07). In the held-out networks' units, the full table predicts pred * ref_a / ref_f.
    ref_f = (table.provenance.get("canary_ref") or {}).get("p10_ms")
    ref_a = ((result.get("adapt") or {}).get("canary_ref") or {}).get("p10_ms")
    aligned = (fidelity_metrics([p * ref_a / ref_f for p in pred], measured)
               if m is not None and ref_f and ref_a else None)
    return {"seconds_wall_this_run": seconds_wall, "block_seconds": prof.get("block_seconds"),
            "timing_settings": table.provenance.get("method"), "table_date": table.provenance.get("date"),
            "network_seconds": prof.get("network_seconds_this_run"), "n_blocks": len(space.all_blocks()),
            "fit_networks": len(fit), "held_out": m,
            "canary_ref_p10_ms": {"full_table": ref_f, "held_out": ref_a},
            "held_out_canary_aligned": aligned,
            "note": "predicts the held-out networks measured for the adapted table (their canary reference is the "
                    "adapted table's; the full table calibrated its own on the same machine minutes apart: "
                    "held_out_canary_aligned converts its predictions into the held-out networks' canary units)"}


def score_only(args) -> int:
    """--score-full-table PATH --result JSON: a table profiled fully on this machine by another process
    (`python -m hwnas.profile`, e.g. on another pinned core during the adapt run) scored on the result's
    held-out networks, written into the result as its `full_profile` (atomically)."""
    import search_spaces
    from hwnas._files import atomic_write
    from hwnas.latency.table import LatencyTable
    result = json.loads(args.result.read_text())
    space = search_spaces.get_space(result["space"])
    table = LatencyTable.load(args.score_full_table, target=result["target"], space=result["scope"])
    earlier = result.get("full_profile") or {}  # scored again: the wall time its profile took is kept
    result["full_profile"] = rec = score_full_table(table, space, result, earlier.get("seconds_wall_this_run"))
    rec["table"] = str(args.score_full_table)
    atomic_write(args.result, json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k != "note"}), flush=True)
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    if args.score_full_table is not None:
        return score_only(args)
    if "torch_inductor" in args.targets:
        from hwnas.convert.cxx_runtime import ensure_preloaded
        ensure_preloaded()  # AOTInductor packages load in this process: g++'s libstdc++ first (restarts once)
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    targets = list(args.targets)
    gpu = [t for t in targets if t in GPU_TARGETS]
    if gpu:
        import torch
        if torch.cuda.device_count() == 0:  # (no CUDA context in this process: the GPU part may be a child)
            print(f"no CUDA GPU here: {', '.join(gpu)} skipped", flush=True)
            targets, gpu = [t for t in targets if t not in gpu], []
    child = None
    if "onnxruntime_cpu" in targets and gpu and not args.serial:  # at once: the GPU part in a child off the pinned core
        argv_child = [a for a in (argv if argv is not None else sys.argv[1:])]
        cmd = [sys.executable, str(Path(__file__).resolve()), *argv_child, "--targets", *gpu]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        child = subprocess.Popen(cmd, env=env)  # it keeps off --cpu-core itself (run_target)
        targets = ["onnxruntime_cpu"]
    rc = 0
    for target in targets:
        rc = max(rc, run_target(target, args, t0))
    if child is not None:
        rc = max(rc, child.wait())
    print(f"latency_adapt: done in {time.perf_counter() - t0:.0f} s (rc {rc}); results in {args.out}", flush=True)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
