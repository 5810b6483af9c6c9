"""How many archs a second `LatencyTable.predict` scores (the issue asks for >= 10,000).

    python experiments/latency_predict_speed.py   # -> experiments/results/latency_predict_speed.json

Scores 10,000 distinct random archs per space once (every arch new to the table), then the same
list again, with the shipped torch_cuda table (any table gives the same speed: a dict lookup per
block). Sampling the archs is not timed.
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import search_spaces
from hwnas.latency import LatencyTable, default_table_path
from hwnas.latency.backends import cpu_name
from hwnas.latency.profiler import now_iso

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    out = {"machine": {"cpu": cpu_name(), "python": platform.python_version()}, "date": now_iso(), "spaces": {}}
    for name in search_spaces.list_spaces():
        space = search_spaces.get_space(name)
        table = LatencyTable.load(default_table_path("torch_cuda", name))
        archs = space.sample_many(10_000, seed=123)
        res = {}
        for run in ("first pass", "second pass"):
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
    path = ROOT / "experiments" / "results" / "latency_predict_speed.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
