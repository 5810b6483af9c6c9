"""How many archs a second `LatencyTable.predict` scores (the issue asks for >= 10,000).

    python experiments/latency_predict_speed.py   # -> experiments/results/latency_predict_speed.json

Scores 10,000 distinct random archs per space once (every arch new to the table), then the same
list again, with the shipped onnxruntime_cpu table (any table gives the same speed: a dict lookup
per block). Sampling the archs is not timed. Each row is checked against the current code's
fingerprint the first time an arch uses it: "cold" is a first use on a machine (empty fingerprint
cache: every row's block is traced once), "warm" a new process with the on-disk cache filled
(the normal case), then the same archs again in that process.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import search_spaces
from hwnas._files import scratch_until_exit
from hwnas.latency import LatencyTable, default_table_path
from hwnas.latency.backends import cpu_name
from hwnas.latency.profiler import now_iso

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    import argparse
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    out = {"machine": {"cpu": cpu_name(), "python": platform.python_version(), "cores": os.cpu_count(),
                       "load_average_1_5_15_min_at_start": [round(x, 2) for x in os.getloadavg()]},
           "date": now_iso(), "spaces": {}}
    from hwnas.latency import fingerprint
    cache_dir = str(scratch_until_exit("fp-speed"))
    os.environ["HWNAS_CACHE_DIR"] = cache_dir  # an empty cache: the cold case is measured
    out["table"] = "onnxruntime_cpu (shipped)"
    for name in search_spaces.list_spaces():
        space = search_spaces.get_space(name)
        path = default_table_path("onnxruntime_cpu", name)
        archs = space.sample_many(10_000, seed=123)
        res = {}
        for run in ("cold: first pass, empty fingerprint cache", "warm: first pass, new process, cache on disk",
                    "warm: second pass"):
            if run.startswith("warm: first"):
                fingerprint._CACHES.clear()  # as a new process: only the disk cache is left
            if not run.endswith("second pass"):
                table = LatencyTable.load(path)
                archs = space.sample_many(10_000, seed=123)  # new Arch objects: nothing memoised
            t0 = time.perf_counter()
            for a in archs:
                table.predict(a)
            dt = time.perf_counter() - t0
            res[run] = {"archs": len(archs), "seconds": round(dt, 4), "archs_per_second": round(len(archs) / dt)}
        fresh = space.sample_many(2000, seed=321)  # new Arch objects: nothing memoised yet
        t0 = time.perf_counter()
        for a in fresh:
            a.block_keys()
        res["arch.block_keys() of new archs alone, validation included (archs/s)"] = round(
            2000 / (time.perf_counter() - t0))
        out["spaces"][name] = res
        print(name, json.dumps(res))
    out["machine"]["load_average_1_5_15_min_at_end"] = [round(x, 2) for x in os.getloadavg()]
    path = ROOT / "experiments" / "results" / "latency_predict_speed.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
