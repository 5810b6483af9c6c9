"""Supernet training on 1 and 2 GPUs through `torchrun` and NCCL: equality, scaling, kill-and-resume.

    # on a machine with 2 GPUs (nvidia-h200-x2), hydra-core/omegaconf/antlr4 carried as wheels:
    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/archive/multi_gpu.py --out "$OUT" \
        [--data-root .data/fashion-mnist]
    # the same protocol on this CPU with gloo (2 processes), at a tiny size: what the tests run
    python experiments/archive/multi_gpu.py --device cpu --tiny --out /tmp/mg

For each space it runs `python -m torch.distributed.run --nproc_per_node=N -m hwnas.train ...`
(the documented command, nothing private), with the same global batch on 1 and 2 processes
(1 process: `train.accum_steps=2`, so both see exactly the same micro-batches, subnets and
drop-path masks; see `hwnas.data.SandwichBatchSampler`):

1. **equality** -- fp32 (`train.amp=off`), SGD (its update is linear in the gradient, so the order
   of the gradient sum stays at rounding level): the largest relative difference between the
   2-process and the 1-process checkpoint's tensors after the same steps;
2. **scaling** -- bf16 (the training default on GPUs), synthetic 224 px images: sandwich
   (subnet) images/s of the last epoch at 1 and 2 processes, speed-up and efficiency
   (speed-up / 2); with `--data-root`, the same on Fashion-MNIST (GPU-resident data);
3. **resume** -- a 2-process run SIGKILLed on one rank in its second epoch (after the first
   epoch's checkpoint), then the same command again: it resumes from the checkpoint and ends
   within the equality tolerance of an uninterrupted 2-process run (bitwise where the kernels are
   deterministic).

NVLink multicast stays off in every process (NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1,
NVSHMEM_DISABLE_NVLS=1), as the GPU machines require. Results: `<out>/multi_gpu.{json,md}` (copy
them to experiments/results/). Resumable: a finished run directory is not trained again.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

SPACES = ("efficientformerv2", "nextvit")
NO_MULTICAST = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def env() -> dict:
    e = dict(os.environ, **NO_MULTICAST, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    root = str(Path(__file__).resolve().parents[2])  # the repository (this script is in experiments/archive/)
    e["PYTHONPATH"] = root + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def torchrun(nproc: int, overrides: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "hwnas.train", *overrides, f"hydra.run.dir={run_dir}"]


def train(nproc: int, overrides: list[str], run_dir: Path, log: Path, timeout: float) -> float:
    """Run (or skip, when `run_dir` holds a finished run) one training; returns its wall seconds."""
    done = run_dir / "done.json"
    if done.is_file():
        rec = json.loads(done.read_text())
        if rec.get("overrides") != overrides:
            raise SystemExit(f"{run_dir} holds a finished run of other settings; use another --out")
        return rec["seconds"]
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(torchrun(nproc, overrides, run_dir))}\n")
        f.flush()
        r = subprocess.run(torchrun(nproc, overrides, run_dir), env=env(), stdout=f, stderr=subprocess.STDOUT,
                           timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"training failed ({r.returncode}); see {log}")
    seconds = time.perf_counter() - t0
    done.write_text(json.dumps({"seconds": seconds, "overrides": overrides}))
    return seconds


def last_epoch(run_dir: Path) -> dict:
    with open(run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}


def max_rel_diff(a_path: Path, b_path: Path) -> dict:
    """Largest |a - b| / max|a| over every floating tensor of two supernet checkpoints."""
    from hwnas.checkpoint import check_record, safe_load
    a = check_record(safe_load(a_path), a_path)["state_dict"]
    b = check_record(safe_load(b_path), b_path)["state_dict"]
    assert a.keys() == b.keys()
    worst, worst_key, bitwise = 0.0, None, True
    for k, x in a.items():
        y = b[k]
        if not torch.is_floating_point(x):
            bitwise &= torch.equal(x, y)
            continue
        bitwise &= torch.equal(x, y)
        scale = x.abs().max().item() or 1.0
        d = (x.double() - y.double()).abs().max().item() / scale
        if d > worst:
            worst, worst_key = d, k
    return {"max_rel_diff": worst, "worst_tensor": worst_key, "bitwise_equal": bool(bitwise)}


def descendants(pid: int) -> list[int]:
    """Processes below `pid` (read from /proc) whose command line runs hwnas.train: torchrun's ranks."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        c = todo.pop()
        todo += children.get(c, [])
        try:
            if b"hwnas.train" in Path(f"/proc/{c}/cmdline").read_bytes():
                out.append(c)
        except OSError:
            pass
    return out


def kill_one_rank_then_resume(overrides: list[str], run_dir: Path, log: Path, timeout: float) -> dict:
    """Start a 2-process run, SIGKILL rank 1 once the first epoch's checkpoint exists, rerun."""
    done = run_dir / "done.json"
    if done.is_file() and "kill" in json.loads(done.read_text()):
        return json.loads(done.read_text())["kill"]
    state = run_dir / "train_state.pt"
    with open(log, "a") as f:
        f.write(f"\n$ (to be killed) {' '.join(torchrun(2, overrides, run_dir))}\n")
        f.flush()
        p = subprocess.Popen(torchrun(2, overrides, run_dir), env=env(), stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        t0 = time.monotonic()
        while not state.is_file():
            if p.poll() is not None or time.monotonic() - t0 > timeout:
                p.kill()
                raise SystemExit(f"the run to kill ended or stalled before its first checkpoint; see {log}")
            time.sleep(0.2)
        time.sleep(0.2)  # into the second epoch
        workers = sorted(descendants(p.pid))  # torchrun's worker processes; the later-started one is rank 1
        if p.poll() is not None or not workers:
            p.kill()
            raise SystemExit(f"no rank to kill (run ended: {p.poll() is not None}, workers: {workers}); see {log}")
        epoch_at_kill = torch.load(state, weights_only=True)["epoch"]
        victim = workers[-1]
        os.kill(victim, signal.SIGKILL)
        rc = p.wait(timeout=timeout)  # torchrun sees a dead rank, stops the others and fails
    info = {"killed_pid": victim, "epoch_checkpoint_at_kill": epoch_at_kill, "killed_run_rc": rc}
    seconds = train(2, overrides, run_dir, log, timeout)  # the same command again: resumes
    info["resumed_from_epoch"] = epoch_at_kill
    info["rerun_seconds"] = seconds
    done.write_text(json.dumps({"seconds": seconds, "overrides": overrides, "kill": info}))
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--spaces", default=",".join(SPACES))
    ap.add_argument("--tiny", action="store_true", help="a few steps at 32 px: the protocol, not the figures")
    ap.add_argument("--batch", type=int, default=64, help="per process (2 processes) / per micro-batch (1)")
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps per epoch (scaling runs)")
    ap.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder: also scale on real data")
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args(argv)
    if args.device == "cuda" and torch.cuda.device_count() < 2:
        raise SystemExit(f"2 GPUs needed, {torch.cuda.device_count()} visible; run with --device cpu for "
                         "the protocol on gloo")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    log = out / "multi_gpu.log"
    res, batch, steps = (32, 4, 2) if args.tiny else (224, args.batch, args.steps)
    base = [f"train.device={args.device}", "train.eval_calib_batches=0", "train.progress=false",
            "train.num_random=2", "seed=0"]
    synthetic = ["data=synthetic", f"data.image_size={res}", f"data.num_train={2 * batch * max(steps, 8)}",
                 "data.num_classes=10" if args.tiny else "data.num_classes=1000"]
    datasets = {"synthetic": synthetic}
    if args.data_root:
        datasets["fashion_mnist"] = ["data=fashion_mnist", f"data.root={args.data_root}", "data.image_size=64"]
    result = {"machine": {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor()
                          or platform.machine(), "gpus": torch.cuda.device_count() if args.device == "cuda" else 0,
                          "host": platform.node(), "torch": torch.__version__,
                          "backend": "nccl" if args.device == "cuda" else "gloo"},
              "env": NO_MULTICAST, "tiny": args.tiny, "spaces": {}}
    for space in args.spaces.split(","):
        r = result["spaces"][space] = {}
        sp = [f"space={space}"]
        # 1. equality: fp32, SGD, the same global batch
        eq = sp + base + synthetic + [f"train.batch_size={batch}", "train.epochs=1",
                                      f"train.max_steps_per_epoch={min(steps, 4)}", "train.amp=off",
                                      "train.optimizer=sgd", "train.lr=0.05", "train.warmup_epochs=0"]
        d1, d2 = out / f"{space}-eq-1", out / f"{space}-eq-2"
        train(1, eq + ["train.accum_steps=2"], d1, log, args.timeout)
        train(2, eq, d2, log, args.timeout)
        r["equality"] = {"settings": "fp32, SGD, global batch %d, %d steps" % (2 * batch, min(steps, 4)),
                         **max_rel_diff(d1 / "supernet.pt", d2 / "supernet.pt")}
        # 2. scaling: bf16 on GPUs (the default), 2 epochs, the second one timed
        r["scaling"] = {}
        for name, data in datasets.items():
            sc = sp + base + data + [f"train.batch_size={batch}", "train.epochs=2",
                                     f"train.max_steps_per_epoch={steps}"]
            s1, s2 = out / f"{space}-{name}-1", out / f"{space}-{name}-2"
            train(1, sc + ["train.accum_steps=2"], s1, log, args.timeout)
            train(2, sc, s2, log, args.timeout)
            ips1 = last_epoch(s1)["subnet_images_per_s"]
            ips2 = last_epoch(s2)["subnet_images_per_s"]
            r["scaling"][name] = {"global_batch": 2 * batch, "images_per_s_1": ips1, "images_per_s_2": ips2,
                                  "speedup": ips2 / ips1, "efficiency": ips2 / ips1 / 2}
        # 3. kill one rank in epoch 2, rerun; compare with an uninterrupted 2-process run
        kr = eq[:]  # fp32 SGD: comparable within the equality tolerance
        kr = [o for o in kr if not o.startswith(("train.epochs", "train.max_steps_per_epoch"))]
        kr += ["train.epochs=3", f"train.max_steps_per_epoch={max(steps, 8)}"]  # epoch 2 long enough to be killed in
        straight, killed = out / f"{space}-straight-2", out / f"{space}-killed-2"
        train(2, kr, straight, log, args.timeout)
        info = kill_one_rank_then_resume(kr, killed, log, args.timeout)
        r["resume"] = {**info, **max_rel_diff(straight / "supernet.pt", killed / "supernet.pt")}
    (out / "multi_gpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "multi_gpu.md").write_text(report(result))
    print(report(result))
    return 0


def report(result: dict) -> str:
    m = result["machine"]
    L = [f"# Supernet training on 1 and 2 {'GPUs' if m['gpus'] else 'CPU processes'} ({m['backend']})", "",
         f"Machine: {m['device']} x{max(m['gpus'], 1)}, torch {m['torch']}, host {m['host']}"
         + (" -- TINY protocol run (a few steps at 32 px): checks the procedure, not the figures" if result["tiny"] else ""),
         "", "| space | data | images/s, 1 | images/s, 2 | speed-up | efficiency |", "|---|---|---|---|---|---|"]
    for space, r in result["spaces"].items():
        for name, s in r["scaling"].items():
            L.append(f"| {space} | {name} | {s['images_per_s_1']:.0f} | {s['images_per_s_2']:.0f} | "
                     f"{s['speedup']:.2f}x | {100 * s['efficiency']:.0f} % |")
    L += ["", "| space | 2 vs 1 process (fp32, SGD): max rel. diff | kill rank 1 in epoch 2, rerun: resumed from "
              "epoch | vs uninterrupted: max rel. diff | bitwise |", "|---|---|---|---|---|"]
    for space, r in result["spaces"].items():
        e, k = r["equality"], r["resume"]
        L.append(f"| {space} | {e['max_rel_diff']:.2e} | {k['resumed_from_epoch']} | {k['max_rel_diff']:.2e} | "
                 f"{k['bitwise_equal']} |")
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
