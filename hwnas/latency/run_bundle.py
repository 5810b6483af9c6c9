"""Time every model of an hwnas Core ML bundle on this Mac; needs only coremltools and numpy.

    python run_bundle.py [--compute-units ALL|CPU_AND_NE|CPU_AND_GPU|CPU_ONLY] [--warmup 10] [--repeats 50]

Writes results.csv (kind, role, name, median_ms, p10_ms, spread, runs) and results.json (the Mac,
macOS and coremltools versions) beside this script. Resumable: rows already in results.csv are
skipped. Then, in the hwnas checkout: python -m hwnas.profile +target=coreml space=S
coreml.import_csv=<this folder>/results.csv
"""
import argparse
import csv
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
COLUMNS = ("kind", "role", "name", "median_ms", "p10_ms", "spread", "runs")


def mac_model() -> str:
    try:
        chip = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True).stdout.strip()
        model = subprocess.run(["sysctl", "-n", "hw.model"], capture_output=True, text=True).stdout.strip()
        return f"{model} {chip}".strip() or platform.machine()
    except OSError:
        return platform.machine()


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compute-units", default="ALL")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=50)
    args = ap.parse_args()
    import coremltools as ct

    out = HERE / "results.csv"
    done = {}
    if out.exists():
        with open(out, newline="") as f:
            done = {(r["kind"], r["role"], r["name"]): r for r in csv.DictReader(f)}
    with open(HERE / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    write_atomic(HERE / "results.json", json.dumps({
        "device": mac_model(), "os": f"macOS {platform.mac_ver()[0]}", "coremltools": ct.__version__,
        "method": f"MLModel.predict, compute units {args.compute_units}, {args.warmup} warm-up calls, "
                  f"{args.repeats} timed calls (time.perf_counter)"}, indent=2))
    rows = list(done.values())
    for i, m in enumerate(manifest):
        key = (m["kind"], m["role"], m["name"])
        if key in done:
            continue
        model = ct.models.MLModel(str(HERE / m["file"]), compute_units=getattr(ct.ComputeUnit, args.compute_units))
        shape = tuple(int(s) for s in m["input_shape"].split("x"))
        feed = {"input": np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        for _ in range(args.warmup):
            model.predict(feed)
        t = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model.predict(feed)
            t.append((time.perf_counter() - t0) * 1e3)
        p10, med, p90 = np.percentile(t, [10, 50, 90])
        rows.append({"kind": m["kind"], "role": m["role"], "name": m["name"], "median_ms": f"{med:.6g}",
                     "p10_ms": f"{p10:.6g}", "spread": f"{(p90 - p10) / med:.4g}", "runs": len(t)})
        lines = [",".join(COLUMNS)] + [",".join(f'"{r[c]}"' if c == "name" else str(r[c]) for c in COLUMNS) for r in rows]
        write_atomic(out, "\n".join(lines) + "\n")
        print(f"[{i + 1}/{len(manifest)}] {m['name'][:70]} {med:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
