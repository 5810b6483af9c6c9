"""Where does loading an AOTInductor package crash on the GPU machine? (issue 16: `inductor_gpu.py`
died with a segfault inside `aoti_load_package` of a package compiled in a spawned worker.)

Each case runs in its own subprocess (a segfault ends only that case) and prints one JSON line:

- `inline`: our `compile_job` for EfficientFormerV2-S0 (batch 8, the `torch_inductor` form) in this
  process, then `load_aoti` and a forward;
- `plain`: a two-layer conv net through `torch._inductor.aoti_compile_and_package` with no options of
  ours, loaded with `aoti_load_package`: the bare API;
- `after_compile`: as `inline`, after a `torch.compile` of another model in the same process;
- `plain_cpu`, `plain_index0`, `plain_so`: `plain` for the CPU, loaded with `device_index=0`, and
  through the older `torch._inductor.aot_compile` / `torch._export.aot_load` (a bare .so).

2026-12-02, H200, torch 2.11.0+cu130: `plain`, `inline` and `after_compile` all die with SIGSEGV
inside `aoti_load_package` (`torch/export/pt2_archive/_package.py`, `_load_aoti`), after compiling
fine: loading any CUDA AOTInductor package crashes there, the bare API included.

    PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/aoti_gpu_smoke.py --out "$OUT"
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def case(name: str, tmp: Path, device: str) -> dict:
    import torch
    from hwnas.convert.aoti import load_aoti
    from hwnas.latency.deploy import deploy_form
    from hwnas.latency.inductor import compile_job
    import search_spaces
    t0 = time.perf_counter()
    out = {"case": name, "torch": torch.__version__}
    if name.startswith("plain"):
        dev = "cpu" if name == "plain_cpu" else device
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)).to(dev).eval()
        x = torch.randn(2, 3, 32, 32, device=dev)
        ep = torch.export.export(net, (x,))
        if name == "plain_so":  # the older entry points: a bare .so, loaded by torch._export.aot_load
            so = torch._inductor.aot_compile(ep.module(), (x,))
            out["compiled_s"] = round(time.perf_counter() - t0, 1)
            print(json.dumps({**out, "step": "compiled, loading"}), flush=True)
            runner = torch._export.aot_load(so, dev)
        else:
            path = torch._inductor.aoti_compile_and_package(ep, package_path=str(tmp / f"{name}.pt2"))
            out["compiled_s"] = round(time.perf_counter() - t0, 1)
            print(json.dumps({**out, "step": "compiled, loading"}), flush=True)
            kw = {"device_index": 0} if name == "plain_index0" else {}
            runner = torch._inductor.aoti_load_package(path, **kw)
        out["max_abs_diff"] = float((runner(x) - net(x)).abs().max())
        return out
    if name == "after_compile":
        m = torch.compile(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GELU()).to(device))
        m(torch.randn(1, 3, 32, 32, device=device))
        out["torch_compile_done"] = True
    arch = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0")
    job = {"kind": "network", "what": arch.to_dict(), "shape": [8, 3, 224, 224], "native": False,
           "form": deploy_form("torch_inductor", batch=8, precision="fp16" if device == "cuda" else "fp32").settings(),
           "device": device,
           "path": str(tmp / f"{name}.pt2")}
    out["compiled_s"] = round(compile_job(job)["seconds"], 1)
    print(json.dumps({**out, "step": "compiled, loading"}), flush=True)
    pkg = load_aoti(job["path"])
    out["loaded"] = True
    y = pkg(torch.randn(8, 3, 224, 224, device=device))
    out["output"] = list(y.shape)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--case", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--cases", default="plain,plain_cpu,plain_index0,plain_so,inline,after_compile")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.case:
        print(json.dumps(case(args.case, out, args.device)), flush=True)
        return
    for name in args.cases.split(","):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-X", "faulthandler", __file__, "--out", str(out / name), "--case", name,
                            "--device", args.device], capture_output=True, text=True, timeout=240)
        rec = {"case": name, "rc": r.returncode, "seconds": round(time.perf_counter() - t0, 1),
               "stdout": r.stdout[-1500:], "stderr": r.stderr[-3000:] if r.returncode else ""}
        print(json.dumps(rec), flush=True)
        with open(out / "aoti_gpu_smoke.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
