"""Loading AOTInductor packages on the GPU machine, before and after the libstdc++ fix (issue 27).

    cp experiments/results/aoti_gpu_smoke_fix.jsonl "$OUT/aoti_gpu_smoke.jsonl" 2>/dev/null; PYTHONUNBUFFERED=1 PYTHONPATH=. python experiments/aoti_gpu_smoke.py --out "$OUT/aoti_gpu_smoke.jsonl" --work /tmp/aoti_smoke --deadline-s 540
    PYTHONPATH=. python experiments/aoti_gpu_smoke.py --device cpu --out /tmp/smoke.jsonl        # any machine: the plumbing

Copy "$OUT/aoti_gpu_smoke.jsonl" to experiments/results/aoti_gpu_smoke_fix.jsonl (the earlier record,
experiments/results/aoti_gpu_smoke.jsonl, is issue 16's: every load died with SIGSEGV). Expect 5-8
minutes (four compiles of 50-95 s each); a run cut by --deadline-s is resumed by the same command
once the JSONL is committed (the `cp` brings it back; cases already there are skipped; a load case whose package
is gone compiles it first).

Every case runs in its own child process (a segfault ends only that case), started with a clean
environment (no LD_PRELOAD, no hwnas restart marker), and writes one JSON line as it ends
(`--out`, appended: a cut run keeps what it measured; a rerun skips the cases already there):

- `env`: what the fix decides from -- the libstdc++ files mapped after `import torch` (resolved,
  with their newest GLIBCXX version), g++'s libstdc++, `cxx_runtime.plan_preload`'s verdict, and
  the mapped libraries other than libstdc++ that export `std::` symbols (the suspects that resolve
  first: `nm -D --defined-only`);
- `plain_before` / `plain_after`: a bare two-conv package (no options of ours) loaded with
  `aoti_load_package(path, run_single_threaded=True)`, without, then with g++'s libstdc++ in
  `LD_PRELOAD` (before the fix: SIGSEGV; after: loaded, output equal);
- `static_cxx` (experimental): the same net compiled with g++ linking libstdc++ statically into
  wrapper.so and binding its own symbols to itself (`-static-libstdc++ -Wl,--exclude-libs,ALL
  -Wl,-Bsymbolic`, through inductor's `cpp.cxx`: torch 2.11-2.13 have no inductor option for
  it), loaded without any preload -- would a package that needs no preload at all be possible
  (the crash is in `std::regex` template code, which another library's exported instantiation
  -- see `env`'s `std_exporters` -- may interpose);
- `hwnas_before`: our EfficientFormerV2-S0 package (batch 8, the torch_inductor form) loaded with
  `hwnas.convert.aoti.load_aoti` in a process without the preload: the load probe must turn the
  crash into one AOTIError line (`detected`), and the process must live on;
- `hwnas_after`: the same package in a process that starts as the apps do
  (`cxx_runtime.ensure_preloaded()`, a restart with the preload): loaded single-threaded, checked
  against the eager model, replayed from a CUDA graph; median ms of 50 graph replays vs 50 plain runs;
- `extract_app`: `python -m hwnas.extract arch=efficientformerv2_s0 format=[aoti] batch=8` from a
  clean environment: the app restarts itself with the preload and its manifest's check passes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ["env", "plain_compile", "plain_before", "plain_after", "static_cxx", "hwnas_compile", "hwnas_before",
         "hwnas_after", "extract_app"]


def clean_env() -> dict:
    from hwnas.convert.cxx_runtime import REEXEC_ENV, SWITCH_ENV
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", REEXEC_ENV, SWITCH_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def plain_net(device: str):
    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3)).to(device).eval()
    return net, torch.randn(2, 3, 32, 32, device=device, generator=None)


def compile_plain(path: Path, device: str, inductor_configs: dict | None = None) -> float:
    import torch
    t0 = time.perf_counter()
    net, x = plain_net(device)
    ep = torch.export.export(net, (x,))
    torch._inductor.aoti_compile_and_package(ep, package_path=str(path), inductor_configs=inductor_configs or {})
    torch.save({"state": net.state_dict()}, path.with_suffix(".ref.pt"))
    return round(time.perf_counter() - t0, 1)


def load_plain(path: Path, device: str) -> dict:
    import torch
    from hwnas.convert.aoti import load_kwargs
    net, _ = plain_net(device)
    net.load_state_dict(torch.load(path.with_suffix(".ref.pt"), weights_only=True)["state"])
    kw = load_kwargs(torch._inductor.aoti_load_package)
    print(json.dumps({"step": "loading", "kwargs": kw}), flush=True)
    runner = torch._inductor.aoti_load_package(str(path), **kw)
    x = torch.randn(2, 3, 32, 32, device=device)
    with torch.no_grad():
        return {"loaded": True, "single_threaded": bool(kw), "max_abs_diff": float((runner(x) - net(x)).abs().max())}


def env_case() -> dict:
    import torch
    from hwnas.convert.cxx_runtime import compiler_libstdcxx, glibcxx_version, mapped_libstdcxx, plan_preload
    mapped = mapped_libstdcxx()
    gxx = compiler_libstdcxx()
    plan = plan_preload(os.environ, mapped, gxx)
    libs = sorted({line.split(maxsplit=5)[5].strip() for line in Path("/proc/self/maps").read_text().splitlines()
                   if len(line.split(maxsplit=5)) == 6 and ".so" in line.split(maxsplit=5)[5]})
    exporters = []
    for lib in libs:
        if "libstdc++" in lib:
            continue
        try:
            out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        std = [ln.split()[-1] for ln in out.splitlines() if ln.split() and ln.split()[-1].startswith(("_ZNSt", "_ZSt", "_ZNKSt"))]
        regexy = [s for s in std if any(k in s for k in ("regex", "_Compiler", "_Scanner", "_NFA", "locale", "ctype"))]
        if std:
            exporters.append({"lib": lib, "std_symbols": len(std), "regex_locale_ctype": len(regexy),
                              "examples": regexy[:3] or std[:3]})
    exporters.sort(key=lambda e: -e["regex_locale_ctype"])
    return {"python": sys.version.split()[0], "executable": sys.executable, "torch": torch.__version__,
            "cuda": torch.version.cuda, "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "mapped_libstdcxx": [{"path": p, "glibcxx": glibcxx_version(p)} for p in mapped],
            "gxx": subprocess.run(["g++", "--version"], capture_output=True, text=True).stdout.splitlines()[:1],
            "gxx_libstdcxx": {"path": gxx, "glibcxx": glibcxx_version(gxx) if gxx else None},
            "plan": {"preload": plan.path, "reason": plan.reason}, "std_exporters": exporters[:15]}


def hwnas_job(work: Path, device: str) -> dict:
    import search_spaces
    from hwnas.latency.deploy import deploy_form
    arch = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0")
    shape = [8, 3, 224, 224] if device == "cuda" else [1, 3, 64, 64]
    if device != "cuda":
        arch = search_spaces.get_space("efficientformerv2", resolution=64).reference("efficientformerv2_s0")
    return {"kind": "network", "what": arch.to_dict(), "shape": shape, "native": False,
            "form": deploy_form("torch_inductor", batch=shape[0], precision="fp16" if device == "cuda" else "fp32").settings(),
            "device": device, "path": str(work / "ours.pt2"), "weights": str(work / "ours.weights.pt")}


def hwnas_compile(work: Path, device: str) -> dict:
    import torch
    import supernet
    from search_spaces import Arch
    from hwnas.latency.inductor import compile_job
    job = hwnas_job(work, device)
    torch.manual_seed(0)
    torch.save(supernet.build_model(Arch.from_dict(job["what"])).state_dict(), job["weights"])
    return {"compiled_s": round(compile_job(job)["seconds"], 1)}


def hwnas_load(work: Path, device: str, restart: bool) -> dict:
    if restart:
        from hwnas.convert.cxx_runtime import ensure_preloaded
        import torch  # noqa: F401 -- as an app: torch mapped, then the restart decision
        plan = ensure_preloaded()  # returns only where no restart is due
        print(json.dumps({"step": "no restart", "reason": plan.reason}), flush=True)
    import torch
    import supernet
    from search_spaces import Arch
    from hwnas.convert.aoti import AOTIError, load_aoti
    from hwnas.convert.cxx_runtime import REEXEC_ENV
    job = hwnas_job(work, device)
    out = {"ld_preload": os.environ.get("LD_PRELOAD", ""), "restarted": bool(os.environ.get(REEXEC_ENV))}
    t0 = time.perf_counter()
    try:
        pkg = load_aoti(job["path"])
    except AOTIError as e:
        return {**out, "detected": str(e), "one_line": "\n" not in str(e), "alive_after": True,
                "load_s": round(time.perf_counter() - t0, 1)}
    out.update(loaded=True, single_threaded=pkg.single_threaded, load_s=round(time.perf_counter() - t0, 1))
    model = supernet.build_model(Arch.from_dict(job["what"]))
    model.load_state_dict(torch.load(job["weights"], weights_only=True))
    model.eval()
    x = torch.randn(*job["shape"], device=device)
    with torch.no_grad():
        ref = model.to(device).float()(x).float()
        y = pkg(x)  # on CUDA: captured at this first call, then replayed
    out["rel_err_vs_fp32"] = float((y.float() - ref).abs().max() / ref.abs().max())
    if device == "cuda":
        graph = pkg.cuda_graph(x)
        out["graph_ms"] = round(_median_ms(graph.replay), 4)
        out["plain_runner_ms"] = round(_median_ms(lambda: pkg.runner(x)), 4)
    return out


def _median_ms(fn, n: int = 50) -> float:
    import torch
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def static_cxx(work: Path, device: str) -> dict:
    """Compile with a g++ that links libstdc++ statically into the package (experimental)."""
    wrapper = work / "g++-static"  # the name must hold "g++": inductor picks gcc flags by the compiler's name
    wrapper.write_text('#!/bin/sh\n# link flags only where it links the shared object (not for headers or objects)\n'
                       'case " $* " in *" -shared "*) exec g++ "$@" -static-libstdc++ -static-libgcc '
                       '-Wl,--exclude-libs,ALL -Wl,-Bsymbolic ;; esac\nexec g++ "$@"\n')
    wrapper.chmod(0o755)
    path = work / "static.pt2"
    out = {"compiled_s": compile_plain(path, device, {"cpp.cxx": (str(wrapper),)})}
    print(json.dumps({"step": "compiled", **out}), flush=True)
    import zipfile
    with zipfile.ZipFile(path) as z:
        sos = [n for n in z.namelist() if n.endswith(".so")]
        out["wrapper_so"] = sos
        tmp = work / "static_extract"
        z.extractall(tmp, members=sos)
    needed = []
    for so in sos:
        r = subprocess.run(["readelf", "-d", str(tmp / so)], capture_output=True, text=True)
        needed += [ln.split("[")[-1].rstrip("]") for ln in r.stdout.splitlines() if "NEEDED" in ln]
    out["needed"] = sorted(set(needed))
    out["links_libstdcxx_dynamically"] = any("libstdc++" in n for n in needed)
    return {**out, **load_plain(path, device)}


def case(name: str, work: Path, device: str) -> dict:
    if name == "env":
        return env_case()
    if name == "plain_compile":
        return {"compiled_s": compile_plain(work / "plain.pt2", device)}
    if name in ("plain_before", "plain_after"):  # compiles first where a cut run left no package (compiling never crashed)
        pre = {} if (work / "plain.pt2").exists() else {"compiled_s": compile_plain(work / "plain.pt2", device)}
        return {**pre, **load_plain(work / "plain.pt2", device)}
    if name == "static_cxx":
        return static_cxx(work, device)
    if name == "hwnas_compile":
        return hwnas_compile(work, device)
    if name in ("hwnas_before", "hwnas_after"):
        if not Path(hwnas_job(work, device)["path"]).exists():  # a cut run left none
            print(json.dumps({"step": "compiling first", **hwnas_compile(work, device)}), flush=True)
        return hwnas_load(work, device, restart=name == "hwnas_after")
    raise SystemExit(f"unknown case {name}")


def child_env(name: str, device: str) -> dict:
    from hwnas.convert.cxx_runtime import compiler_libstdcxx
    env = clean_env()
    if name == "plain_after":
        env["LD_PRELOAD"] = compiler_libstdcxx() or ""
    if name == "hwnas_before":
        env["HWNAS_AOTI_PROBE"] = "1"  # a library user's process (no app restart): the probe must catch the crash
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_case(name: str, work: Path, device: str, timeout: float) -> dict:
    t0 = time.perf_counter()
    if name == "extract_app":
        arch = "efficientformerv2_s0"
        cmd = [sys.executable, "-m", "hwnas.extract", f"arch={arch}", "format=[aoti]",
               f"batch={8 if device == 'cuda' else 1}", f"hydra.run.dir={work / 'extract'}"]
        if device == "cpu":
            cmd.append("resolution=64")
    else:
        cmd = [sys.executable, "-X", "faulthandler", __file__, "--case", name, "--work", str(work), "--device", device]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(name, device), cwd=ROOT)
        rc, stdout, stderr = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = "timeout", (e.stdout or b"").decode(errors="replace"), (e.stderr or b"").decode(errors="replace")
    rec = {"case": name, "device": device, "rc": rc, "seconds": round(time.perf_counter() - t0, 1),
           "signal": None}
    if isinstance(rc, int) and rc < 0:
        from hwnas.convert.cxx_runtime import signal_name
        rec["signal"] = signal_name(rc)
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if name == "extract_app":
        manifest = work / "extract" / "manifest.json"
        if manifest.exists():
            aoti = json.loads(manifest.read_text())["formats"]["aoti"]
            rec["result"] = {"check_passed": aoti["check"].get("passed"), "rel_err": aoti["check"].get("rel_err"),
                             "needs": aoti["check"].get("needs"), "compile_s": aoti["check"].get("compile_seconds")}
    elif lines:
        rec["result"] = json.loads(lines[-1])
        rec["steps"] = [json.loads(ln) for ln in lines[:-1]]
    if rc != 0:
        rec["stderr_tail"] = stderr[-2500:]
    return rec


def cases_done(out: Path) -> set[str]:
    """The cases an earlier run recorded in `out` that a rerun skips: those that ended by themselves
    (loaded, crashed, failed). One cut by the deadline (rc "timeout") runs again."""
    if not out.exists():
        return set()
    return {r["case"] for r in map(json.loads, filter(str.strip, out.read_text().splitlines()))
            if r.get("rc") != "timeout"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "experiments" / "results" / "aoti_gpu_smoke_fix.jsonl"))
    ap.add_argument("--work", default=None, help="where packages are compiled (default: a temporary folder, not "
                    "under --out: the device returns at most 8 files)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--deadline-s", type=float, default=540.0, help="no case starts after this many seconds")
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:  # in the child
        print(json.dumps(case(args.case, Path(args.work), args.device)), flush=True)
        return
    t_end = time.monotonic() + args.deadline_s
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from hwnas._files import scratch_until_exit
    work = Path(args.work) if args.work else scratch_until_exit("aoti-smoke")
    work.mkdir(parents=True, exist_ok=True)
    done = cases_done(out)
    for name in args.cases.split(","):
        if name in done:
            continue
        left = t_end - time.monotonic()
        if left < 20:
            print(json.dumps({"case": name, "skipped": "deadline"}), flush=True)
            continue
        rec = run_case(name, work, args.device, timeout=left)
        print(json.dumps(rec), flush=True)
        with open(out, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
