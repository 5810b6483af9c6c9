"""Rebuild a `ranking_fidelity.py gpu` folder's `standalone.jsonl` from its log, where the records did not come back.

The GPU machine returns at most 8 files a call; call 27 (issue 25, docs/accuracy.md round 21) ran past its limit
before its tar was made, and its `standalone.jsonl` was one of the files left out. Its log holds, per run, what the
analysis reads: `start (N MMACs)`, every epoch's mean training loss (4 decimals) and `done test T val V S s, I img/s`.
With the folder's `run.json` (recipe, recipe id, data, device) and the archs file it names, this writes one record
per finished run, marked `"reconstructed_from": <log>`; `train_loss` is the last epoch's printed loss, so it carries
4 decimals where a record written by the run carries all of them. Tested against a call whose records did come back
(`tests/test_standalone_from_log.py`).

    python experiments/standalone_from_log.py experiments/results/accuracy_bench_raw/h100-call27-res128/nextvit_lr1e-3.log \\
        experiments/results/accuracy_bench_raw/h100-call27-res128/nextvit_lr1e-3
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_LINE = re.compile(r"^\[[\d:]+\] (?P<worker>\S+) (?P<space>\S+) (?P<name>\S+) seed (?P<seed>\d+): (?P<what>.*)$")
_EPOCH = re.compile(r"epoch (?P<e>\d+)/(?P<n>\d+) loss (?P<loss>[\d.]+)")
_DONE = re.compile(r"done test (?P<test>[\d.]+) val (?P<val>[\d.]+) (?P<s>[\d.]+) s, (?P<ips>[\d.]+) img/s, graph (?P<graph>\w+)")


def records_from_log(log: Path, folder: Path) -> list[dict]:
    """One record per run the log shows finished, in the order they finished."""
    import search_spaces
    from search_spaces import Arch
    meta = json.loads((folder / "run.json").read_text())
    archs = json.loads((ROOT / meta["archs_file"]).read_text())
    size = int(meta["data"]["image_size"])
    classes = 10 ** int(meta["data"].get("items", 1))  # Fashion-MNIST: 10 classes, 100 for two items a sample
    by_name = {}
    for space, entries in archs["spaces"].items():
        for e in entries:
            by_name[(space, e["name"])] = e
    runs: dict[tuple, dict] = {}
    out = []
    for line in log.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        k = (m["space"], m["name"], int(m["seed"]))
        run = runs.setdefault(k, {"losses": {}})
        if (e := _EPOCH.search(m["what"])) is not None:
            run["losses"][int(e["e"])] = float(e["loss"])
            run["epochs"] = int(e["n"])
        elif (d := _DONE.match(m["what"])) is not None:
            entry = by_name[(m["space"], m["name"])]
            arch = Arch.from_dict(entry["arch"]).with_resolution(size)
            search_spaces.get_space(m["space"], resolution=size).validate(arch)
            last = max(run["losses"]) if run["losses"] else None
            out.append({
                "arch": arch.to_dict(), "arch_id": arch.id, "key": entry["key"], "name": m["name"],
                "space": m["space"], "seed": int(m["seed"]), "role": "ranking", "status": "done", "smoke": False,
                "data": meta["data"]["name"], "image_size": size, "device": meta["device"],
                "recipe": meta["standalone_recipe"], "recipe_id": meta["standalone_recipe_id"],
                "macs": arch.macs(classes), "params": arch.params(classes), "epochs_done": last,
                "test_top1": float(d["test"]), "val_top1": float(d["val"]),
                "train_loss": run["losses"].get(last), "seconds": float(d["s"]), "images_per_s": float(d["ips"]),
                "cuda_graph": d["graph"] == "True", "worker": m["worker"],
                "reconstructed_from": str(log.relative_to(ROOT) if log.is_relative_to(ROOT) else log)})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, help="the ranking_fidelity.py gpu log of the folder")
    ap.add_argument("folder", type=Path, help="the folder holding its run.json; standalone.jsonl is written there")
    ap.add_argument("--force", action="store_true", help="replace a standalone.jsonl already there")
    args = ap.parse_args(argv)
    path = args.folder / "standalone.jsonl"
    if path.exists() and not args.force:
        print(f"{path} exists (records written by the run): not replaced; --force replaces it", file=sys.stderr)
        return 2
    from hwnas._files import atomic_write
    recs = records_from_log(args.log.resolve(), args.folder)
    atomic_write(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))
    print(f"{len(recs)} records -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
