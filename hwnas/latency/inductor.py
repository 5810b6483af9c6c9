"""Compiling for the `torch_inductor` target: AOTInductor packages of blocks and whole networks,
made in parallel worker processes and kept in an on-disk cache, so that a whole space fits a session.

Compiling, not timing, is the cost of this target (tens of seconds a block, mostly CPU work: Triton
and C++ compilers), so the profiler hands the backend every block (or network) it is about to time
(`TorchInductor.precompile`); `compile_all` compiles those without a package in the cache in
`workers` processes (spawned: each has its own CUDA context), and the timing loop then only loads
them. A package's cache key is everything that fixes what was compiled: the fingerprint of the
deploy form's graph, the input shape, whether it takes the native or the float32 interface, the
form's settings, the torch version and the GPU.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Sequence

from hwnas._files import remove_stale_temps
from hwnas._progress import progress_bar


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where compiled packages are kept: `root`, or `<hwnas cache>/aoti/` (`HWNAS_CACHE_DIR`)."""
    if root:
        return Path(root)
    from .fingerprint import cache_root
    return cache_root().parent / "aoti"  # beside fingerprints/


def package_key(fingerprint: str, shape: Sequence[int], native: bool, form_settings: dict, device: str) -> str:
    import torch
    blob = json.dumps([fingerprint, list(shape), native, form_settings, torch.__version__, device], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def compile_job(job: dict) -> dict:
    """Build what `job` names (a block by its key, or a whole network by its arch), put it in the
    `torch_inductor` deploy form and compile its package to `job["path"]`. Runs in a worker
    process, so it takes and returns plain data. `job["weights"]` (optional): a state-dict file
    loaded into the network first (weights matter for checking outputs, not for timing)."""
    import torch
    import torch._inductor.config as inductor_config
    import supernet
    from search_spaces import Arch
    from .deploy import deploy_form
    from .fingerprint import spec_for_key

    t0 = time.perf_counter()
    if job.get("compile_threads"):  # in a worker: the parallelism is the workers, not Inductor's own pool
        inductor_config.compile_threads = int(job["compile_threads"])
    form = deploy_form("torch_inductor", **job["form"])
    device = job["device"]
    with torch.device(device):
        if job["kind"] == "block":
            module = supernet.build_block(spec_for_key(job["what"]))
        else:
            module = supernet.build_model(Arch.from_dict(job["what"]), **job.get("build", {}))
    if job.get("weights"):
        module.load_state_dict(torch.load(job["weights"], map_location=device, weights_only=True))
    form.compile(form.module(module), tuple(job["shape"]), job["path"], device=device, native_input=job["native"],
                 metadata={"what": job["what"] if job["kind"] == "block" else Arch.from_dict(job["what"]).id},
                 inductor_configs=job.get("inductor_configs"))
    return {"path": job["path"], "seconds": time.perf_counter() - t0}


def compile_all(jobs: list[dict], workers: int = 1, progress: bool = True, desc: str = "compiling",
                deadline: float | None = None) -> dict:
    """Compile every job whose package is not on disk yet: inline with one worker, else in `workers`
    spawned processes. Returns {"packages", "seconds" (summed over the jobs), "wall_seconds"}.
    A failed compilation raises with its job named; nothing half-written is left (atomic writes).

    `deadline` (a `time.monotonic()` value) is a hard stop for the workers: when it passes, the
    compiles under way are killed and the rest are not started (a compile with max_autotune can take
    minutes, longer than a GPU session has left); the packages already written stay in the cache
    for the next run, the killed ones' temporary files are removed (and those a killed run left, at
    the start). Inline (one worker), the compile under way finishes first."""
    todo = [j for j in jobs if not Path(j["path"]).exists()]
    todo = list({j["path"]: j for j in todo}.values())
    folders = {Path(j["path"]).parent for j in todo}
    for folder in folders:
        remove_stale_temps(folder)  # half-written packages of compiles killed in an earlier run
    t0 = time.perf_counter()
    total = 0.0
    if not todo:
        return {"packages": 0, "seconds": 0.0, "wall_seconds": 0.0}
    if workers <= 1 or len(todo) == 1:
        for job in progress_bar(todo, len(todo), desc, progress):
            if deadline is not None and time.monotonic() > deadline:
                break
            total += compile_job(job)["seconds"]
    else:
        import multiprocessing as mp
        pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=mp.get_context("spawn"))
        futures = {pool.submit(compile_job, {**j, "compile_threads": 1}): j for j in todo}
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            for fut in progress_bar(as_completed(futures, timeout=timeout), len(futures), desc, progress):
                job = futures[fut]
                try:
                    total += fut.result()["seconds"]
                except Exception as e:
                    raise RuntimeError(f"compiling the {job['kind']} {job['what'] if job['kind'] == 'block' else ''} "
                                       f"for torch_inductor failed: {type(e).__name__}: {e}") from e
        except FuturesTimeout:  # the deadline passed with compiles under way: killed below
            pass
        finally:
            killed = any(not f.done() for f in futures)
            _stop_pool(pool, kill=killed)
            for folder in folders if killed else ():
                remove_stale_temps(folder)  # the killed workers' half-written packages
    done = sum(Path(j["path"]).exists() for j in todo)
    return {"packages": done, "seconds": round(total, 2), "wall_seconds": round(time.perf_counter() - t0, 2)}


def _stop_pool(pool: ProcessPoolExecutor, kill: bool) -> None:
    """Shut `pool` down; with `kill`, cancel what has not started and kill the workers still
    compiling (a package is written to a temporary file and renamed, so a killed worker leaves no
    package, only its temporary file: `compile_all` removes those)."""
    if kill:
        workers = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on them
        manager = getattr(pool, "_executor_manager_thread", None)
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in workers:
            proc.kill()
        for proc in workers:
            proc.join(timeout=10)
        # The pool's manager thread sees the killed workers, marks the pool broken and reaps them too. Two threads
        # reaping one child race: the one that loses gets ECHILD and leaves `returncode` unset until the winner
        # sets it, so until the manager is done a killed worker can still look alive (CI, Intel Xeon, 2 cores).
        if manager is not None:
            manager.join(timeout=30)
    else:
        pool.shutdown(wait=True)


__all__ = ["cache_dir", "compile_all", "compile_job", "package_key"]
