"""One command on the GPU machine: torch_cuda tables for both spaces, with fingerprints, + their fidelity.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/profile_gpu.py --out "$OUT"     # GPU machine (torch + numpy only)
    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/profile_gpu.py --space nextvit --task backbone \
        --input 640 640 --out "$OUT"                                                 # backbones at 640x640

For each space, in the `torch_cuda` deploy form (BN folded, elementwise x2 upsample,
channels_last, fp16; settings from hwnas/conf/target/torch_cuda.yaml), batch 8, CUDA graphs, CUDA
events: every block of `all_blocks()`, the references + `--n-fit` random subnets end to end to fit
the correction (the form -- one scale or per kind -- kept by leave-one-out error is recorded),
then `--n-fidelity` held-out subnets (disjoint from the fit set). Every row and network carries
the fingerprint of the module timed, traced on the GPU and checked against the deploy form's
trace on meta tensors (a device-dependent forward stops the run).

Time-boxed: `--deadline-s` (default 480) stops between two measurements and still writes every
file; rerun with `--resume DIR` (a folder holding an earlier run's `latency_tables/`) to continue.

`--resume DIR` measures only what the table lacks: block rows that are missing or stale, and --
where the resumed table already has a correction for the space whose fit networks still match the
code -- no fit networks (the correction is kept; `--refit` measures a new fit set and refits). The
repository root holds the shipped tables, so after the space grows (issue 17 added 102 Next-ViT NTB
variants) the shipped table is completed with

    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/profile_gpu.py --space nextvit --resume . --out "$OUT"

(the new rows, then `--n-fidelity` held-out subnets drawn from the space as it is now).
Writes at most 8 files, 2 folders deep (the device's limits):

    <out>/latency_tables/torch_cuda/<gpu>.{csv,json,networks.csv}
    <out>/experiments/results/latency_fidelity_torch_cuda_<space>.{json,png}     (per space)
    <out>/progress.jsonl                                                          (one line per phase)

Copy the two folders into the repository. No Hydra/Optuna import. `--target torch_inductor` profiles
the compiled target the same way (each block and network compiled by AOTInductor in worker
processes first; `experiments/inductor_gpu.py` runs it that way).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import search_spaces
from hwnas.latency import get_backend
from hwnas.latency.config import target_settings
from hwnas.latency.fidelity import run_fidelity
from hwnas.latency.profiler import DeadlineReached, partial_path, run_profile, table_path_for
from hwnas.latency.table import LatencyTable

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT, help="root for latency_tables/ and experiments/results/")
    ap.add_argument("--target", default="torch_cuda")
    ap.add_argument("--space", action="append", choices=search_spaces.list_spaces())
    ap.add_argument("--task", choices=["classify", "backbone"], default="classify",
                    help="backbone: stem and stages only (no head), as a detector or segmenter runs them")
    ap.add_argument("--input", type=int, nargs="+", metavar="SIDE",
                    help="input size: H W (or one side for a square); default: the space's (224)")
    ap.add_argument("--n-fit", type=int, default=60, help="random fit networks per space (plus the references)")
    ap.add_argument("--n-fidelity", type=int, default=100)
    ap.add_argument("--deadline-s", type=float, default=480.0, help="stop measuring after this many seconds")
    ap.add_argument("--resume", type=Path, help="a folder holding an earlier run's latency_tables/ (the "
                    "repository root: the shipped tables); measures only missing or stale rows")
    ap.add_argument("--refit", action="store_true", help="with --resume: measure a new fit set and refit the "
                    "correction even where the resumed table has a current one")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a target setting (smoke runs: --set repeats=5 --set canary=false)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.target == "torch_inductor":
        from hwnas.convert.cxx_runtime import ensure_preloaded
        ensure_preloaded()  # AOTInductor packages load in this process: g++'s libstdc++ first (restarts once)

    t0 = time.perf_counter()
    deadline = time.monotonic() + args.deadline_s
    settings = target_settings(args.target)
    for kv in args.set:
        k, _, v = kv.partition("=")
        settings[k] = {"true": True, "false": False}.get(v, v) if not v.replace(".", "", 1).isdigit() else \
            (float(v) if "." in v else int(v))
    backend = get_backend(settings.pop("name"), **settings)
    path = table_path_for(backend, args.out / "latency_tables")
    results_dir = args.out / "experiments" / "results"
    log_path = args.out / "progress.jsonl"
    if args.resume is not None:
        src = args.resume / "latency_tables" / backend.name
        for f in sorted(src.glob("*")) if src.is_dir() else []:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not (path.parent / f.name).exists():
                shutil.copyfile(f, path.parent / f.name)

    def log(**rec):
        rec = {"t_s": round(time.perf_counter() - t0, 1), **rec}
        print(json.dumps(rec), flush=True)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    log(phase="start", device=backend.device(), runtime=backend.runtime_version(), table=str(path),
        deploy_form=backend.form.describe(), deadline_s=args.deadline_s)
    summary, status = {}, "done"
    try:
        for name in args.space or search_spaces.list_spaces():
            size = None if not args.input else tuple(args.input) if len(args.input) == 2 else args.input[0]
            space = search_spaces.get_space(name, resolution=size, task=args.task)
            name = space.scope  # the space's name for 224 px classifiers, else <space>:<task>@<H>x<W>
            ts = time.perf_counter()
            n_fit = args.n_fit
            if args.resume is not None and not args.refit and _current_correction(path, name):
                n_fit = 0  # keep the correction: its fit networks still time what the code deploys
                log(phase="keep_correction", space=name, note="resumed table's correction kept (fit networks "
                    "current); only missing or stale rows are measured")
            table = run_profile(backend, space, path, n_fit=n_fit, progress=not args.no_progress,
                                deadline=deadline)
            corr = table.correction(name)
            log(phase="profiled", space=name, seconds=round(time.perf_counter() - ts, 1), rows=len(table.rows),
                correction=corr["form"], loo_mape=corr.get("loo_mape"), fit_networks=corr.get("fit_networks"))
            tf = time.perf_counter()
            res = run_fidelity(backend, space, LatencyTable.load(path), n=args.n_fidelity, results_dir=results_dir,
                               progress=not args.no_progress, deadline=deadline)
            h = res["held_out"]
            summary[name] = {**h, "profile_seconds": round(tf - ts, 1), "fidelity_seconds": res["seconds"],
                             "correction": corr["form"],
                             "without_correction_within_10pct": res["held_out_without_correction"]["within_10pct"]}
            log(phase="fidelity", space=name, **summary[name],
                acceptance_met=h["within_10pct"] >= 0.95 and h["kendall_tau"] >= 0.9)
    except DeadlineReached:
        status = "deadline"
        log(phase="deadline", note=f"stopped after {args.deadline_s:.0f} s; everything measured is in "
                                   f"{path.parent} (partial: {partial_path(path).name}); rerun with --resume DIR, DIR "
                                   f"holding these files")
    log(phase="end", status=status, total_s=round(time.perf_counter() - t0, 1), summary=summary)
    return 0 if status == "done" else 3


def _current_correction(path: Path, space: str) -> bool:
    """Whether the table at `path` (or its partial file) has a correction for `space` whose fit
    networks all match the current code."""
    for p in (partial_path(path), path):
        if p.exists():
            table = LatencyTable.load(p, allow_stale=True)
            return bool(table.correction(space).get("fit_arch_ids")) and not table.stale_networks(space)
    return False


if __name__ == "__main__":
    raise SystemExit(main())
