"""The GPU job runner of the accuracy experiments (`experiments/ranking_fidelity.py`,
`picks_vs_references.py`): one process tree on one GPU, under one deadline, writing JSON lines as
results arrive. Private to those experiments (tested in `tests/test_accuracy_jobs.py`), not part of
the public API.

- `run_tree(...)`: spawns a pool of stand-alone workers (each holds the data on the GPU once and
  trains archs from a job queue with `hwnas.training.standalone.train_standalone`) plus any number
  of supernet processes (`supernet_proc`: train with `hwnas.training.train`, then evaluate
  inherited accuracies), collects their messages, appends them to `<out>/<kind>.jsonl` (flushed
  line by line), prints progress, stops everything at the deadline and writes `<out>/run.json`.
- `read_jsonl` / `done_keys`: what earlier outputs (`--resume-from`) already hold.
- `recipe_id`: a short hash naming one recipe, so results of different recipes are never mixed.

No Hydra, Optuna or OmegaConf import: the GPU machine has none of them.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import queue
import random
import time
import traceback
from pathlib import Path

from hwnas._files import atomic_write

KINDS = ("standalone", "inherited", "supernet")  # one JSON-lines file each; plus log.txt and run.json


def recipe_id(*parts) -> str:
    """12 hex digits naming a recipe (any JSON-able parts, key order ignored)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (a killed writer) is skipped."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def read_results(dirs) -> dict[str, list[dict]]:
    """kind -> records from every folder in `dirs`, de-duplicated (the same line copied forward by a
    resumed run counts once)."""
    out = {k: [] for k in KINDS}
    seen = set()
    for d in dirs:
        for kind in KINDS:
            for r in read_jsonl(Path(d) / f"{kind}.jsonl"):
                key = json.dumps(r, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    out[kind].append(r)
    return out


def gpu_name() -> str:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    from hwnas.latency.backends import cpu_name
    return f"CPU: {cpu_name()}"


class Writer:
    """Appends records to `<out>/<kind>.jsonl` and lines to `<out>/log.txt`, flushed as they come."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.files = {k: open(self.out / f"{k}.jsonl", "a") for k in KINDS}
        self.log_file = open(self.out / "log.txt", "a")
        self.counts = {k: 0 for k in KINDS}

    def record(self, kind: str, rec: dict) -> None:
        f = self.files[kind]
        f.write(json.dumps(clean(rec), sort_keys=True, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())
        self.counts[kind] += 1

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")
        self.log_file.flush()

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.log_file.close()


def clean(obj):
    """`obj` with NaN and infinite floats as None (strict JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    return obj


def write_json(path: Path, obj) -> None:
    """Strict JSON, atomically (temporary file, then rename)."""
    atomic_write(path, json.dumps(clean(obj), indent=1, sort_keys=True, allow_nan=False) + "\n", fsync=False)


# ---- child processes --------------------------------------------------------------------------------
def _setup_child(threads: int, benchmark: bool):
    import torch
    torch.set_num_threads(max(1, threads))
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = benchmark
    return torch


def _device(name: str):
    from hwnas.training.distributed import resolve_device
    return resolve_device(name)


def standalone_worker(wid: int, common: dict, jobs, msgs, stop, deadline: float) -> None:
    """Train archs from `jobs` (dicts: space, key, name, arch, seed, recipe, recipe_id) until the queue is
    empty, `stop` is set or the deadline is near; one message per run."""
    who = f"sa{wid}"
    try:
        # cuDNN's autotuner: off by default. On the H200, with a dozen processes sharing the GPU, tuning
        # every convolution in the first eager steps cost 20-60 s per run (a 6-epoch run is 60-150 s).
        torch = _setup_child(common["threads"], benchmark=common.get("cudnn_benchmark", False))
        import search_spaces
        from hwnas.data import IN_MEMORY, get_dataset, stored_splits
        from hwnas.training.standalone import train_standalone
        dev = _device(common["device"])
        data = common["data"]
        splits = None  # a DataLoader source (imagefolder) is read per run
        if data["name"] in IN_MEMORY:  # held on the device once for all runs
            splits = stored_splits(data, None, tuple(get_dataset(data["name"]).splits), device=dev)
            msgs.put({"type": "log", "msg": f"{who}: data on {dev} ("
                                            f"{', '.join(f'{k} {len(v)}' for k, v in splits.items())})"})
        while not stop.is_set() and time.time() < deadline - common["min_job_s"]:
            try:
                job = jobs.get(timeout=0.5)
            except queue.Empty:
                break
            arch = search_spaces.Arch.from_dict(job["arch"])
            tag = f"{who} {job['space']} {job['name']} seed {job['seed']}"
            msgs.put({"type": "log", "msg": f"{tag}: start ({job['macs'] / 1e6:.0f} MMACs)"})
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                res = train_standalone(arch, data, job["recipe"], seed=job["seed"], device=dev, splits=splits,
                                       deadline=deadline - common["eval_margin_s"],
                                       log=lambda m, tag=tag: msgs.put({"type": "log", "msg": f"{tag}: {m}"}))
            except Exception as e:  # this run failed (e.g. out of memory); the worker takes the next one
                msgs.put({"type": "log", "msg": f"{tag}: FAILED\n{traceback.format_exc()}"})
                res = dict(status="error", error=f"{type(e).__name__}: {str(e)[:300]}", arch=job["arch"],
                           seed=job["seed"], recipe=job["recipe"], train_seconds=0.0, cuda_graph=False)
            res.update({k: job[k] for k in ("space", "key", "name", "recipe_id", "role") if k in job},
                       worker=who, smoke=common["smoke"],
                       max_memory_gb=torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None)
            msgs.put({"type": "standalone", "record": res})
            if dev.type == "cuda":
                torch.cuda.empty_cache()
    except Exception:
        msgs.put({"type": "log", "msg": f"{who}: FAILED\n{traceback.format_exc()}"})
    finally:
        msgs.put({"type": "exit", "who": who})


def supernet_proc(spec: dict, common: dict, msgs, stop, deadline: float) -> None:
    """Train one supernet (spec: space, variant, train config, recipe_id, work dir), then measure the
    inherited val top-1 of spec['archs'] (ranking archs, all of them) and of random archs until
    spec['random_archs'] are done or the deadline is near."""
    who = f"sn-{spec['space']}-{spec['variant']}"
    try:
        torch = _setup_child(common["threads"], benchmark=False)
        import search_spaces
        from hwnas.checkpoint import load_supernet
        from hwnas.data import derive_seed
        from hwnas.evaluate import SubnetEvaluator
        from hwnas.training import train
        dev = _device(common["device"])
        space = search_spaces.get_space(spec["space"])
        work = Path(spec["work"])
        tcfg = dict(spec["train"], device=str(dev))
        n_rank = len(spec["archs"])
        reserve = common["eval_reserve_s"] + n_rank * common["eval_s_per_arch"]
        tcfg["time_limit_s"] = max(1.0, deadline - time.time() - reserve)
        t0 = time.time()
        msgs.put({"type": "log", "msg": f"{who}: training ({tcfg['epochs']} epochs planned, time limit "
                                        f"{tcfg['time_limit_s']:.0f} s) in {work}"})
        ckpt = train(space, common["data"], tcfg, work, seed=spec["seed"],
                     log=lambda m: msgs.put({"type": "log", "msg": f"{who}: {m}"}))
        train_s = time.time() - t0
        _, meta = load_supernet(ckpt, space=space)
        for row in meta.get("history", []):
            msgs.put({"type": "supernet", "record": dict(kind="epoch", space=space.name, variant=spec["variant"],
                                                         recipe_id=spec["recipe_id"], smoke=common["smoke"], **row)})
        epochs_done = int(meta.get("epoch", 0))
        t1 = time.time()
        ev = SubnetEvaluator.from_checkpoint(ckpt, common["data"], calib_batches=common["calib_batches"],
                                             batch_size=common["eval_batch_size"], device=str(dev),
                                             cache_path=work / "accuracy.json", space=space)
        consistent = ev.consistent_only  # the archs the supernet was trained on (its checkpoint's config)
        base = dict(space=space.name, variant=spec["variant"], recipe_id=spec["recipe_id"],
                    consistent_only=consistent,  # a predictor fitted on these says so
                    epochs_done=epochs_done, epochs=tcfg["epochs"], smoke=common["smoke"],
                    calib_batches=common["calib_batches"], calib_batch_size=common["eval_batch_size"])
        seen = set()
        for item in spec["archs"]:
            arch = search_spaces.Arch.from_dict(item["arch"])
            t = time.time()
            acc = ev.evaluate(arch)
            seen.add(item["key"])
            msgs.put({"type": "inherited", "record": dict(base, kind="ranking", key=item["key"], name=item["name"],
                                                          arch=item["arch"], val_top1=acc, seconds=time.time() - t)})
        rng = random.Random(derive_seed(spec["seed"], 0x7A2D))
        n_random = 0
        while n_random < spec["random_archs"] and not stop.is_set() and \
                time.time() < deadline - common["eval_margin_s"]:
            # the archs the supernet was trained on (train.consistent_only: the consistent ones only)
            arch = (space.sample_consistent if consistent else space.sample)(rng)
            if arch.id in seen:
                continue
            seen.add(arch.id)
            t = time.time()
            acc = ev.evaluate(arch)
            n_random += 1
            msgs.put({"type": "inherited", "record": dict(base, kind="random", key=arch.id, name=f"random{n_random}",
                                                          arch=arch.to_dict(), val_top1=acc, seconds=time.time() - t)})
        eval_s = time.time() - t1
        msgs.put({"type": "supernet", "record": dict(
            kind="summary", space=space.name, variant=spec["variant"], recipe_id=spec["recipe_id"],
            train=spec["train"], epochs_done=epochs_done, train_seconds=train_s, eval_seconds=eval_s,
            ranking_archs=n_rank, random_archs=n_random, seed=spec["seed"], smoke=common["smoke"],
            max_memory_gb=torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None,
            history=meta.get("history", []))})
        msgs.put({"type": "log", "msg": f"{who}: done: {epochs_done}/{tcfg['epochs']} epochs in {train_s:.0f} s, "
                                        f"{n_rank} ranking + {n_random} random archs evaluated in {eval_s:.0f} s"})
    except Exception:
        msgs.put({"type": "log", "msg": f"{who}: FAILED\n{traceback.format_exc()}"})
    finally:
        msgs.put({"type": "exit", "who": who})


# ---- the tree ----------------------------------------------------------------------------------------
def run_tree(out: Path, common: dict, jobs: list[dict], supernets: list[dict], workers: int, deadline_s: float,
             carried: dict | None = None, meta: dict | None = None) -> dict:
    """Run `supernets` (one process each) and `jobs` (on `workers` processes) concurrently until done or
    `deadline_s` after the start; records go to `out`. `carried`: kind -> records from earlier runs,
    copied first so that `out` alone holds everything. Returns the run summary (also `out/run.json`)."""
    import multiprocessing as mp

    t0 = time.time()
    deadline = t0 + deadline_s
    w = Writer(out)
    for kind, recs in (carried or {}).items():
        for r in recs:
            w.record(kind, r)
    ctx = mp.get_context("spawn")
    msgs, job_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    for j in jobs:
        job_q.put(j)
    n_workers = min(workers, len(jobs))
    n_procs = max(1, n_workers + len(supernets))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    common = dict(common, threads=max(1, cores // n_procs))
    procs = {}
    for spec in supernets:
        p = ctx.Process(target=supernet_proc, args=(spec, common, msgs, stop, deadline), daemon=True)
        procs[f"sn-{spec['space']}-{spec['variant']}"] = p
    for i in range(n_workers):
        p = ctx.Process(target=standalone_worker, args=(i, common, job_q, msgs, stop, deadline), daemon=True)
        procs[f"sa{i}"] = p
    w.log(f"start: {len(supernets)} supernet process(es), {n_workers} stand-alone worker(s) for {len(jobs)} "
          f"job(s), {common['threads']} CPU thread(s) each, deadline {deadline_s:.0f} s")
    for p in procs.values():
        p.start()
    alive = set(procs)
    started = {k: time.time() for k in procs}
    ended = {}
    results = {"standalone": 0, "inherited": 0, "supernet": 0}
    while alive:
        try:
            m = msgs.get(timeout=1.0)
        except queue.Empty:
            m = None
        if m is not None:
            if m["type"] == "log":
                w.log(m["msg"])
            elif m["type"] == "exit":
                alive.discard(m["who"])
                ended[m["who"]] = time.time()
            else:
                w.record(m["type"], m["record"])
                results[m["type"]] += 1
                if m["type"] == "standalone":
                    r = m["record"]
                    # test_top1 is None for data without a test split (synthetic, imagefolder without test_dir)
                    accs = "".join(f"{split} {r[f'{split}_top1']:.2f} " for split in ("test", "val")
                                   if r["status"] == "done" and r.get(f"{split}_top1") is not None)
                    w.log(f"{r['worker']} {r['space']} {r['name']} seed {r['seed']}: {r['status']} " + accs
                          + f"{r['train_seconds']:.0f} s, {r.get('images_per_s') or 0:.0f} img/s, "
                          f"graph {r['cuda_graph']}, busy {r.get('stream_busy_share')}")
                elif m["type"] == "inherited" and (results["inherited"] % 25 == 0 or m["record"]["kind"] == "ranking"):
                    r = m["record"]
                    w.log(f"inherited {r['space']}/{r['variant']} {r['kind']} {r['name']}: {r['val_top1']:.2f} "
                          f"({r['seconds']:.2f} s; {results['inherited']} so far)")
        now = time.time()
        for name in list(alive):  # a process that died without saying so (killed, crashed hard)
            if procs[name].exitcode is not None and msgs.empty():
                w.log(f"{name}: exited with code {procs[name].exitcode} without reporting")
                alive.discard(name)
                ended[name] = now
        if now > deadline - 2 and not stop.is_set():
            w.log("deadline: asking every process to stop")
            stop.set()
        if now > deadline + common.get("hard_grace_s", 20):
            for name in sorted(alive):
                w.log(f"{name}: still running past the deadline: terminated")
                procs[name].terminate()
                ended[name] = now
            break
    for p in procs.values():
        p.join(timeout=10)
    left = []
    while True:
        try:
            left.append(job_q.get_nowait())
        except (queue.Empty, OSError):
            break
    summary = dict(meta or {}, wall_s=time.time() - t0, deadline_s=deadline_s, device=gpu_name(),
                   host=platform.node(), python=platform.python_version(), torch=_torch_version(),
                   workers=n_workers, threads_per_process=common["threads"], records=results,
                   jobs_total=len(jobs), jobs_not_started=len(left),
                   process_seconds={k: round(ended.get(k, time.time()) - started[k], 1) for k in procs})
    write_json(Path(out) / "run.json", summary)
    w.log(f"finished in {summary['wall_s']:.0f} s: {results}; {len(left)} stand-alone job(s) not started")
    w.close()
    return summary


def _torch_version() -> str:
    import torch
    return torch.__version__
