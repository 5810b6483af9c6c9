"""Backfill fingerprints into a table made before hwnas recorded them -- only where provably right.

    python experiments/archive/fingerprint_backfill.py latency_tables/onnxruntime_cpu/amd-epyc.csv --commit 72f69ea [--commit db20378] [--write]

A fingerprint says which graph was timed. For a table measured before fingerprints existed, the
graph it timed is the one the code of the commit that wrote it deployed. This script checks that
commit out into a temporary git worktree, computes in a subprocess, with THAT code (its
`supernet`, `search_spaces` and its deploy path: `hwnas.latency.backends.deploy_form` then the
exporter's trace), the fingerprint of every row's block and of every whole network in
`<table>.networks.csv`, with the same tracer (`hwnas/latency/fingerprint.py`, loaded by file path)
and the same input the target fed (dtype, batch, memory format). It then computes the current
code's fingerprints in the target's deploy form and compares them one by one.

Only rows (and networks) whose old and new fingerprints are equal get a fingerprint written
(`--write`); the others are listed, stay without one (stale) and must be re-measured
(`python -m hwnas.profile +target=T space=S` measures exactly those). The provenance records how
the fingerprints were obtained (`fingerprint.backfilled`). Writes
`experiments/archive/results/fingerprint_backfill_<target>.json`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # experiments/archive/ -> the repository

# Runs inside the old checkout (PYTHONPATH = that worktree): the old code, today's tracer.
DRIVER = r'''
import importlib.util, json, sys
import torch
spec = importlib.util.spec_from_file_location("hwnas_fingerprint_now", sys.argv[1])
fpmod = importlib.util.module_from_spec(spec); spec.loader.exec_module(fpmod)
job = json.load(open(sys.argv[2]))
import supernet, search_spaces
try:
    from hwnas.latency.backends import deploy_form as old_deploy   # the old code's "deploy"
except ImportError:
    old_deploy = supernet.fuse_for_deploy
dtype = {"fp32": torch.float32, "fp16": torch.float16}[job["dtype"]]
mf = torch.channels_last if job["channels_last"] else torch.contiguous_format

def deploy(m):
    m = old_deploy(m.float())
    return m.to(dtype=dtype, memory_format=mf) if job["cast"] else m

def build_block(s):
    with torch.device("meta"):
        try:
            return supernet.build_block(s, init=False)
        except TypeError:
            return supernet.build_block(s)

def fp_block(s):
    x = torch.empty(*supernet.block_input_shape(s, job["batch"]), device="meta", dtype=dtype).contiguous(memory_format=mf)
    return fpmod.fingerprint_module(deploy(build_block(s)), x, job["salt"])

specs = {}
for name in search_spaces.list_spaces():
    specs.update({s.key: s for s in search_spaces.get_space(name).all_blocks()})
rows = {}
for k in job["keys"]:
    s = specs.get(k) or fpmod.spec_for_key(k)
    rows[k] = fp_block(s)
nets = {}
for arch_id, d in job["networks"].items():
    a = search_spaces.Arch.from_dict(d)
    with torch.device("meta"):
        m = supernet.build_model(a)
    m = deploy(m)
    fps = []
    for s, b in fpmod.deployed_blocks(m):
        x = torch.empty(*supernet.block_input_shape(s, job["batch"]), device="meta", dtype=dtype).contiguous(memory_format=mf)
        fps.append(fpmod.fingerprint_module(b, x, job["salt"]))
    nets[arch_id] = fpmod.network_fingerprint(fps)
json.dump({"rows": rows, "networks": nets}, open(sys.argv[3], "w"))
'''


def old_fingerprints(commit: str, job: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="hwnas-backfill-") as d:
        wt = Path(d) / "wt"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), commit], check=True,
                       capture_output=True)
        try:
            (Path(d) / "job.json").write_text(json.dumps(job))
            env = {**os.environ, "PYTHONPATH": str(wt)}
            subprocess.run([sys.executable, "-c", DRIVER, str(ROOT / "hwnas/latency/fingerprint.py"),
                            str(Path(d) / "job.json"), str(Path(d) / "out.json")], cwd=wt, env=env, check=True)
            return json.loads((Path(d) / "out.json").read_text())
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], check=False,
                           capture_output=True)


def main(argv=None) -> int:
    from hwnas.latency.deploy import deploy_form
    from hwnas.latency.fingerprint import FingerprintCache, scheme_info
    from hwnas.latency.keys import block_keys
    from hwnas.latency.table import (LatencyTable, networks_path, read_networks, read_provenance,
                                     read_rows, provenance_path, write_networks)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", type=Path)
    ap.add_argument("--commit", action="append", required=True,
                    help="the commit(s) whose code timed the rows (the one that last wrote the table; repeat "
                         "to require agreement with several)")
    ap.add_argument("--write", action="store_true", help="write the proven fingerprints into the table")
    ap.add_argument("--results-dir", type=Path, default=ROOT / "experiments" / "archive" / "results")
    args = ap.parse_args(argv)

    rows = read_rows(args.table)
    prov = read_provenance(provenance_path(args.table))
    target = prov["target"]
    form = deploy_form(target, **{k: prov.get(k) for k in ("batch", "precision")})
    nets = read_networks(networks_path(args.table))
    job = {"keys": list(rows), "networks": {r["arch_id"]: r["arch"].to_dict() for r in nets},
           "batch": form.batch, "salt": form.salt(),
           "dtype": "fp16" if target == "torch_cuda" else "fp32", "cast": target == "torch_cuda",
           "channels_last": bool(getattr(form, "channels_last", False)) and False}  # old tables: NCHW
    cache = FingerprintCache(form)
    now_rows = cache.get_many(rows)
    now_nets = {r["arch_id"]: cache.network(block_keys(r["arch"])) for r in nets}
    cache.flush()
    per_commit = {}
    proven_rows, proven_nets = set(rows), set(now_nets)
    for c in args.commit:
        old = old_fingerprints(c, job)
        same_r = {k for k in rows if old["rows"][k] == now_rows[k]}
        same_n = {a for a in now_nets if old["networks"][a] == now_nets[a]}
        per_commit[c] = {"rows_equal": len(same_r), "rows": len(rows), "networks_equal": len(same_n),
                         "networks": len(now_nets),
                         "rows_differing": sorted(set(rows) - same_r)[:20],
                         "networks_differing": sorted(set(now_nets) - same_n)[:20]}
        proven_rows &= same_r
        proven_nets &= same_n
        print(f"{c}: rows {len(same_r)}/{len(rows)} equal to the current code's, whole networks "
              f"{len(same_n)}/{len(now_nets)}", flush=True)
    commit_ids = [subprocess.run(["git", "-C", str(ROOT), "rev-parse", c], capture_output=True, text=True,
                                 check=True).stdout.strip() for c in args.commit]
    record = {"commits": commit_ids, "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
              "how": ("experiments/archive/fingerprint_backfill.py: the fingerprints of the code of these commits (the code "
                      "that timed the table), computed with the current tracer, equal the current code's for these "
                      "rows/networks; only those were written"),
              "rows_proven": len(proven_rows), "rows": len(rows), "networks_proven": len(proven_nets),
              "networks": len(now_nets), "per_commit": per_commit}
    out = args.results_dir / f"fingerprint_backfill_{target}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"table": str(args.table), "target": target, **record}, indent=2) + "\n")
    print(json.dumps({k: v for k, v in record.items() if k != "per_commit"}, indent=2))
    if args.write:
        for k in rows:
            rows[k]["fingerprint"] = now_rows[k] if k in proven_rows else None
        for r in nets:
            r["fingerprint"] = now_nets[r["arch_id"]] if r["arch_id"] in proven_nets else None
        prov["fingerprint"] = {**scheme_info(), "form": form.settings(),
                               "backfilled": {k: v for k, v in record.items() if k != "per_commit"}}
        prov["deploy_form"] = form.describe()
        t = LatencyTable(rows, prov, args.table, check=False)
        if nets:
            write_networks(networks_path(args.table), nets)
        t.save()
        print(f"wrote {len(proven_rows)} row and {len(proven_nets)} network fingerprints into {args.table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
