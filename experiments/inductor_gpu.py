"""One command on the GPU machine for the compiled target (issue 16): our AOTInductor package vs timm
under `torch.compile`, then `torch_inductor` latency tables for both spaces with held-out fidelity.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/inductor_gpu.py --out "$OUT"              # GPU machine
    python experiments/inductor_gpu.py --device cpu --tiny --out /tmp/x                          # CPU smoke run

1. Deployment speed, compiled (`deploy_speed.run_compiled`): Next-ViT-S, EfficientFormerV2-S0 and
   -S1 at batch 1 and 8, fp16, CUDA graphs: timm's model under `torch.compile` (default,
   reduce-overhead modes, `--modes`; max-autotune in runs of its own; `deploy_speed.py --compiled` runs this part alone), our
   deploy recipe eager (`torch_cuda`) and our AOTInductor package (`format=aoti`); our packages
   compile in worker processes while timm compiles here; where ours is over 0.8x timm compiled,
   the top CUDA kernels of both. About 4-6 GPU-minutes without max-autotune, whose compiles take
   minutes a model: expect two or three runs (rows are kept; a rerun resumes).
2. Tables (`profile_gpu.py --target torch_inductor`): every block of both spaces, the fit networks
   and `--n-fidelity` held-out subnets, each compiled by AOTInductor (in `--workers` processes,
   before timing) and timed in a CUDA graph. Compiling ~420 blocks and ~2x(7 + n_fit + n_fidelity)
   networks takes far longer than timing them: expect 40+ GPU-minutes over several runs.

Time-boxed (`--deadline-s`, default 480: one command may run 10 minutes, and a compile under way finishes), incremental and
resumable: every row is written when measured, and a rerun skips what `--resume DIR` holds
(default: this repository, i.e. results already copied in and committed). Files under --out (at
most 8, two folders deep: the device's limits):

    progress.jsonl
    experiments/results/deploy_speed_compiled_<gpu>.{jsonl,md}
    latency_tables/torch_inductor/<gpu>.{csv,json,networks.csv}   (or <gpu>.partial.* until a space is done)
    experiments/results/latency_fidelity_torch_inductor_<space>.json   (per space; the PNG is left out)

Copy `experiments/` and `latency_tables/` into the repository. No Hydra/Optuna import.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

import deploy_speed  # the two scripts this one drives, beside it (python experiments/x.py puts experiments/ first)
import profile_gpu
from hwnas.latency.backends import cpu_name

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resume", type=Path, default=ROOT, help="a folder holding earlier results (default: the repo)")
    ap.add_argument("--deadline-s", type=float, default=480.0)
    ap.add_argument("--limit-s", type=float, default=570.0,
                    help="the command's hard limit: a timm compile mode that would not fit is left for the next run")
    ap.add_argument("--workers", type=int, default=12, help="compile worker processes (the GPU machine has 16 cores)")
    ap.add_argument("--models", nargs="+", default=list(deploy_speed.COMPILED))
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--modes", nargs="+", default=["default", "reduce-overhead"], choices=deploy_speed.TIMM_MODES,
                    help="timm's torch.compile modes; max-autotune compiles for minutes a model (past 500 s for "
                         "Next-ViT-S on an H200): give it runs of its own, --modes max-autotune --skip-tables")
    ap.add_argument("--n-fit", type=int, default=30)
    ap.add_argument("--n-fidelity", type=int, default=100)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-tables", action="store_true")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run of the plumbing")
    ap.add_argument("--tiny", action="store_true", help="smoke size: EfficientFormerV2-S0 at 64 px, batch 1, few runs")
    args = ap.parse_args(argv)
    from hwnas.convert.cxx_runtime import ensure_preloaded
    ensure_preloaded()  # AOTInductor packages load in this process: g++'s libstdc++ first (restarts once)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: run this on the GPU machine, or --device cpu --tiny for a smoke run", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    deadline = time.monotonic() + args.deadline_s
    hard_end = time.monotonic() + args.limit_s
    out = args.out
    (out / "experiments" / "results").mkdir(parents=True, exist_ok=True)
    progress = out / "progress.jsonl"

    def log(rec):
        rec = {"t_s": round(time.perf_counter() - t0, 1), **rec}
        print(json.dumps(rec), flush=True)
        with open(progress, "a") as f:
            f.write(json.dumps(rec) + "\n")

    machine = {"cpu": cpu_name(), "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
               "torch": torch.__version__, "timm": _version("timm")}
    log({"phase": "start", **machine, "deadline_s": args.deadline_s})
    status = "done"
    if not args.skip_speed:
        speed = deploy_speed.compiled_stem(args.device == "cuda").relative_to(ROOT)  # one file per GPU
        rows_path = out / f"{speed}.jsonl"
        earlier = args.resume / f"{speed}.jsonl"
        if earlier.exists() and not rows_path.exists():
            shutil.copyfile(earlier, rows_path)
        tiny = dict(models=["efficientformerv2_s0"], batches=[1], rounds=2, per_round=3, resolution=64) if args.tiny \
            else dict(models=args.models, batches=args.batches)
        rows = deploy_speed.run_compiled(rows_path=rows_path, deadline=deadline, workers=args.workers,
                                         device=args.device, log=log,
                                         hard_end=hard_end if args.device == "cuda" else None,
                                         modes=tuple(args.modes), **tiny)
        (out / f"{speed}.md").write_text(deploy_speed.markdown_compiled(rows, machine))
        want = {(m, b) for m in tiny["models"] for b in tiny["batches"]}
        if want - {(r["model"], r["batch"]) for r in rows if deploy_speed.covers(r, args.modes)}:
            status = "deadline"
    if not args.skip_tables and status == "done" and time.monotonic() < deadline:
        if args.device != "cuda":
            log({"phase": "tables", "skipped": "the torch_inductor target times on CUDA only"})
        else:
            rc = profile_gpu.main(["--target", "torch_inductor", "--out", str(out), "--resume", str(args.resume),
                                   "--n-fit", str(args.n_fit), "--n-fidelity", str(args.n_fidelity),
                                   "--deadline-s", str(max(1.0, deadline - time.monotonic())),
                                   "--set", f"compile_workers={args.workers}", "--no-progress"])
            status = "done" if rc == 0 else "deadline"
            for png in (out / "experiments" / "results").glob("*.png"):
                png.unlink()  # at most 8 files come back; the PNG is redrawn from the JSON
    log({"phase": "end", "status": status, "total_s": round(time.perf_counter() - t0, 1),
         "next": None if status == "done" else "copy experiments/ and latency_tables/ from $OUT into the repo, "
                                                "commit, and run the same command again"})
    return 0 if status == "done" else 3


def _version(pkg: str):
    try:
        from importlib.metadata import version
        return version(pkg)
    except Exception:  # noqa: BLE001
        return None


if __name__ == "__main__":
    raise SystemExit(main())
