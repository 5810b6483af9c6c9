"""One command on the GPU machine: torch_cuda tables for both spaces + their fidelity experiment.

    PYTHONPATH=. python experiments/profile_gpu.py --out "$OUT"   # on the GPU machine (torch + numpy only)

For each space: every block of `all_blocks()` (fp16, batch 8, CUDA graphs, CUDA events; settings
from hwnas/conf/target/torch_cuda.yaml), the references + 30 random subnets end to end to fit the
correction, then 100 held-out subnets for the fidelity numbers. Writes
<out>/latency_tables/torch_cuda/<gpu>.{csv,json,networks.csv} and
<out>/experiments/results/latency_fidelity_torch_cuda_<space>.{json,png}; copy both folders into
the repository. Resumable: rerun the same command after an interruption. No Hydra/Optuna import.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import search_spaces
from hwnas.latency import get_backend
from hwnas.latency.config import target_settings
from hwnas.latency.fidelity import run_fidelity
from hwnas.latency.profiler import run_profile, table_path_for

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT, help="root for latency_tables/ and experiments/results/")
    ap.add_argument("--target", default="torch_cuda")
    ap.add_argument("--space", action="append", choices=search_spaces.list_spaces())
    ap.add_argument("--n-fit", type=int, default=30)
    ap.add_argument("--n-fidelity", type=int, default=100)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    settings = target_settings(args.target)
    backend = get_backend(settings.pop("name"), **settings)
    path = table_path_for(backend, args.out / "latency_tables")
    results_dir = args.out / "experiments" / "results"
    print(f"{backend.name} on {backend.device()}: table {path}", flush=True)
    summary = {}
    for name in args.space or search_spaces.list_spaces():
        space = search_spaces.get_space(name)
        ts = time.perf_counter()
        table = run_profile(backend, space, path, n_fit=args.n_fit, progress=not args.no_progress)
        tp = time.perf_counter() - ts
        res = run_fidelity(backend, space, table, n=args.n_fidelity, results_dir=results_dir,
                           progress=not args.no_progress)
        summary[name] = {**res["held_out"], "profile_seconds": round(tp, 1),
                         "fidelity_seconds": res["seconds"], "correction": table.correction(name)["form"]}
        print(name, json.dumps(summary[name]), flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s", flush=True)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
