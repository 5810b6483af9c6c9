"""Two search workers on one machine: each on every core, or sharing the cores (the default).

Runs the README's main search (`+target=coreml`, built-in supernet, real digits evaluator) for a
fixed number of trials as (a) one worker, (b) two workers sharing one study with `threads=` set to
all cores each (what every PyTorch process does by default), (c) two workers with the default
`threads=null`, which divides the cores among the study's live workers on the machine. Reports
the wall time of each; the built-in supernet is trained (and cached) before the timing starts.

    python experiments/search_workers_threads.py            # 24 trials per configuration

Writes experiments/results/search_workers_threads.{json,md} (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hwnas.latency.backends import cpu_name
from hwnas._files import atomic_write, scratch_until_exit

ROOT = Path(__file__).resolve().parents[1]


def _search(run_dir: Path, n_trials: int, *extra: str) -> list[str]:
    # evaluator=supernet: the claim is about torch threads of the built-in supernet's evaluations (the
    # search's default before issue 25; the default predictor uses no torch)
    return [sys.executable, "-m", "hwnas.search", "+target=coreml", "evaluator=supernet", "progress=false",
            f"search.n_trials={n_trials}", f"hydra.run.dir={run_dir}", *extra]


def timed(cmds: list[list[str]]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    errs = [p.communicate()[1] for p in procs]
    wall = time.perf_counter() - t0
    for p, e in zip(procs, errs):
        if p.returncode:
            raise SystemExit(f"a search failed (rc {p.returncode}):\n{e[-3000:]}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-trials", type=int, default=24)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments" / "results")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    tmp = scratch_until_exit("workers")
    timed([_search(tmp / "warm", 1)])  # trains and caches the built-in supernet: not timed

    def two(name: str, *extra: str) -> list[list[str]]:
        storage = f"storage=sqlite:///{tmp / name / 'shared.db'}"
        return [_search(tmp / name / f"w{i}", args.n_trials, storage, "study_name=s", f"seed={i}", *extra)
                for i in range(2)]

    rows = [
        ("one worker, default threads", timed([_search(tmp / "one", args.n_trials)])),
        (f"two workers, threads={cores} each (all cores)", timed(two("all", f"threads={cores}"))),
        ("two workers, default threads (cores shared)", timed(two("shared"))),
    ]
    for name, wall in rows:
        print(f"{name}: {wall:.1f} s", flush=True)
    r = {"command": "python experiments/search_workers_threads.py " + " ".join(sys.argv[1:]),
         "n_trials": args.n_trials, "host_cpu": cpu_name(), "cores": cores,
         "wall_s": {name: round(w, 2) for name, w in rows}}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out / "search_workers_threads.json", json.dumps(r, indent=1) + "\n")
    atomic_write(args.out / "search_workers_threads.md", "\n".join([
        "# Two search workers on one machine", "",
        f"`{r['command'].strip()}` on {r['host_cpu']} ({cores} cores). `python -m hwnas.search +target=coreml` "
        f"(built-in supernet, digits evaluator), {args.n_trials} trials per configuration; wall time from start "
        "to the last worker's exit.", "",
        "| configuration | wall (s) |", "|---|---|",
        *[f"| {name} | {w:.1f} |" for name, w in rows], ""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
