"""Loading AOTInductor packages where the C++ runtime does not match (`hwnas.convert.cxx_runtime`):
a load that would crash is tried in a child and reported as one line while the caller lives on, and
the decision to restart a process with g++'s libstdc++ preloaded, from faked and from real inputs.

The crash itself (SIGSEGV in a package's wrapper.so on the GPU machine) cannot happen here; children
that kill themselves with SIGSEGV stand in for it.
"""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from hwnas.convert import aoti
from hwnas.convert.cxx_runtime import (REEXEC_ENV, SWITCH_ENV, CrashError, compiler_libstdcxx, ensure_preloaded,
                                       glibcxx_version, mapped_libstdcxx, plan_preload, run_isolated)

ROOT = Path(__file__).resolve().parents[1]
CRASH = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
#: crashes unless g++'s libstdc++ is preloaded: the GPU machine's behaviour
CRASH_UNLESS_PRELOADED = textwrap.dedent("""
    import os, signal, sys
    if sys.argv[1] not in os.environ.get("LD_PRELOAD", "").split(":"):
        os.kill(os.getpid(), signal.SIGSEGV)
""")
GXX = compiler_libstdcxx()
needs_gxx = pytest.mark.skipif(GXX is None, reason="needs g++ and its libstdc++")


def fake_lib(path, *versions: int):
    """A file standing in for a libstdc++ that defines GLIBCXX_3.4.<v> for each version."""
    path.write_bytes(b"\x7fELF junk\x00" + b"".join(b"GLIBCXX_3.4.%d\x00" % v for v in versions) + b"GLIBCXX_3.4\x00")
    return str(path)


def test_a_crashing_child_is_one_line_and_the_caller_lives_on():
    with pytest.raises(CrashError) as e:
        run_isolated(CRASH, what="model.pt2")
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("loading model.pt2 crashed a test process with SIGSEGV, so it was not loaded in this one; ")
    if GXX:  # tried again with g++'s libstdc++ preloaded: it crashes too, so that is not offered as the fix
        assert f"with LD_PRELOAD={GXX} it crashes too" in msg and "compile the package again" in msg
    assert torch.ones(2).sum().item() == 2.0  # this process is alive and well


@needs_gxx
def test_a_crash_that_the_preload_cures_names_the_cause_and_the_work_around():
    with pytest.raises(CrashError) as e:
        run_isolated(CRASH_UNLESS_PRELOADED, [GXX], what="model.pt2", env={**os.environ, "LD_PRELOAD": ""})
    msg = str(e.value)
    assert "\n" not in msg and "SIGSEGV" in msg
    assert "cause: the C++ runtime" in msg
    assert f"work-around (tested in a child): start Python with LD_PRELOAD={GXX}" in msg
    # with the preload already in place the child loads, and nothing is raised
    proc = run_isolated(CRASH_UNLESS_PRELOADED, [GXX], env={**os.environ, "LD_PRELOAD": GXX})
    assert proc.returncode == 0


def test_a_child_that_ends_normally_is_returned_not_raised():
    assert run_isolated("print('ok')").stdout.strip() == "ok"
    assert run_isolated("import sys; sys.exit(3)").returncode == 3  # an ordinary error: the caller reports it


def test_load_aoti_reports_a_crashing_load_as_one_line(tmp_path, monkeypatch):
    """The probe `load_aoti` runs first is what would crash; here a stand-in does."""
    (tmp_path / "model.pt2").write_bytes(b"PK stand-in")
    monkeypatch.setenv("HWNAS_AOTI_PROBE", "1")
    monkeypatch.setattr(aoti, "PROBE", CRASH)
    with pytest.raises(aoti.AOTIError) as e:
        aoti.load_aoti(tmp_path / "model.pt2")
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"loading {tmp_path / 'model.pt2'} crashed a test process with SIGSEGV")


def test_load_aoti_asks_for_the_single_threaded_runtime():
    assert aoti.load_kwargs(torch._inductor.aoti_load_package) == {"run_single_threaded": True}
    assert aoti.load_kwargs(lambda path, device_index=-1: None) == {}  # an older torch: not passed
    assert "run_single_threaded=True" in aoti.RUN_WITHOUT_HWNAS and "torch.cuda.graph(g)" in aoti.RUN_WITHOUT_HWNAS


def test_glibcxx_version_and_mapped_libraries_from_faked_files(tmp_path):
    lib = fake_lib(tmp_path / "libstdc++.so.6.0.32", 9, 32, 30)
    assert glibcxx_version(lib) == 32
    assert glibcxx_version(tmp_path / "missing.so") == -1
    (tmp_path / "libstdc++.so.6").symlink_to(lib)
    maps = (f"7f00-7f10 r--p 00000000 08:01 1 {tmp_path / 'libstdc++.so.6'}\n"
            f"7f10-7f20 r-xp 00010000 08:01 1 {tmp_path / 'libstdc++.so.6'}\n"
            "7f20-7f30 r--p 00000000 08:01 2 /usr/lib/libc.so.6\n7f30-7f40 rw-p 00000000 00:00 0\n")
    assert mapped_libstdcxx(maps) == [lib]  # resolved, once


def test_the_preload_plan_from_faked_inputs(tmp_path):
    gxx = fake_lib(tmp_path / "gxx13.so", 32)
    old = fake_lib(tmp_path / "old.so", 29)
    new = fake_lib(tmp_path / "new.so", 33)
    plan = plan_preload({}, [old], gxx)
    assert plan.path == gxx and "older than the compiler's" in plan.reason and "GLIBCXX_3.4.29" in plan.reason
    assert plan_preload({}, [gxx], gxx).path == gxx  # the same file: the symbol order still needs the preload
    assert plan_preload({}, [], gxx).path == gxx
    refused = plan_preload({}, [new], gxx)
    assert refused.path is None and "newer than the compiler's" in refused.reason
    assert plan_preload({"LD_PRELOAD": f"/x/libfoo.so:{gxx}"}, [old], gxx).path is None
    assert plan_preload({REEXEC_ENV: gxx}, [old], gxx).path is None  # never a second restart
    assert plan_preload({SWITCH_ENV: "0"}, [old], gxx).path is None
    assert plan_preload({}, [old], None).path is None
    assert plan_preload({}, [old], str(tmp_path / "missing.so")).path is None


@needs_gxx
def test_ensure_preloaded_restarts_with_the_compiler_libstdcxx_first():
    calls = []
    env = {k: v for k, v in os.environ.items() if k not in (REEXEC_ENV, SWITCH_ENV)}
    env["LD_PRELOAD"] = "/x/libother.so"
    plan = ensure_preloaded(["python", "-m", "app"], env, execve=lambda *a: calls.append(a))
    assert plan.path == GXX
    (exe, argv, new_env), = calls
    assert exe == sys.executable and argv == ["python", "-m", "app"]
    assert new_env["LD_PRELOAD"] == f"{GXX}:/x/libother.so" and new_env[REEXEC_ENV] == GXX


RESTART = textwrap.dedent("""
    import json, os, sys
    import torch  # maps libstdc++, as in an app
    from hwnas.convert.cxx_runtime import ensure_preloaded, mapped_libstdcxx
    with open(sys.argv[1], "a") as f:
        f.write(json.dumps({"ld_preload": os.environ.get("LD_PRELOAD", ""), "mapped": mapped_libstdcxx()}) + "\\n")
    ensure_preloaded()
""")


@needs_gxx
def test_a_real_process_restarts_once_with_the_preload(tmp_path):
    script = tmp_path / "app.py"
    script.write_text(RESTART)
    env = {k: v for k, v in os.environ.items() if k not in (REEXEC_ENV, SWITCH_ENV, "LD_PRELOAD")}
    env["PYTHONPATH"] = os.pathsep.join([os.getcwd(), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "starts.jsonl")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    starts = [json.loads(ln) for ln in (tmp_path / "starts.jsonl").read_text().splitlines()]
    assert len(starts) == 2  # restarted once, not again
    assert starts[0]["ld_preload"] == "" and starts[1]["ld_preload"] == GXX
    assert starts[1]["mapped"] == [GXX]


def test_the_apps_that_load_packages_are_recognised():
    from hwnas.export import loads_cxx_packages as loads_aoti_packages  # asks the targets' and formats' cxx_runtime
    from omegaconf import OmegaConf
    assert loads_aoti_packages(OmegaConf.create({"arch": "nextvit_s", "format": ["pt", "aoti"]}))
    assert not loads_aoti_packages(OmegaConf.create({"arch": "nextvit_s", "format": ["pt", "onnx"]}))
    assert loads_aoti_packages(OmegaConf.create({"target": {"name": "torch_inductor", "batch": 8}}))
    assert loads_aoti_packages(OmegaConf.create({"targets": ["torch_cuda", "torch_inductor"]}))
    assert not loads_aoti_packages(OmegaConf.create({"target": {"name": "torch_cuda"}}))


def test_an_app_run_inside_another_program_never_restarts_it(tmp_path, monkeypatch):
    """`ensure_preloaded` re-executes the process's own command line: inside a test runner that would be
    pytest, restarted halfway with its output captured (the whole suite ran twice, its report lost). An
    app restarts only when it is the process (`python -m hwnas.<app>`)."""
    import types

    import hwnas.cli as cli
    from hwnas.extract import main
    calls = []
    monkeypatch.setattr("hwnas.convert.cxx_runtime.ensure_preloaded", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(sys, "argv", ["hwnas.extract", "arch=efficientformerv2_s0", "format=[aoti]",
                                      "features_only=true", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit):
        main()
    assert calls == []  # in-process (here: under pytest), no restart
    assert not cli.started_as("extract")
    fake_main = types.ModuleType("__main__")
    fake_main.__spec__ = types.SimpleNamespace(name="hwnas.extract")
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    assert cli.started_as("extract") and not cli.started_as("search")
    fake_main.__spec__ = types.SimpleNamespace(name="hwnas.search.__main__")
    assert cli.started_as("search")


def test_the_manifest_says_how_to_run_a_cuda_package_at_the_measured_speed():
    """The recipe a user without hwnas gets is code that runs (here: compiled, not run) and loads the
    package as it was timed: single-threaded runtime, one CUDA graph; plus the libstdc++ work-around."""
    from hwnas.export.formats import aoti_how
    how = aoti_how((8, 3, 224, 224), "cuda")
    code = how.split("\n", 1)[1].split("If loading dies")[0]
    compile(code, "manifest-how", "exec")  # valid Python
    assert 'aoti_load_package("model.pt2", run_single_threaded=True)' in code
    assert 'torch.empty((8, 3, 224, 224), device="cuda")' in code
    assert "torch.cuda.graph(g)" in code and "g.replay()" in code
    assert "LD_PRELOAD=$(readlink -f $(g++ -print-file-name=libstdc++.so.6))" in how
    assert "run_single_threaded=True" in aoti_how((1, 3, 64, 64), "cpu") and "graph" not in aoti_how((1, 3, 64, 64), "cpu")


def test_a_format_registered_outside_hwnas_says_itself_that_it_loads_packages():
    """No name list: the runner asks each registered format (and target) for its `cxx_runtime`."""
    from omegaconf import OmegaConf

    from hwnas.export import loads_cxx_packages
    from hwnas.export.format import Format, Tolerance, register_format, unregister_format

    class CompiledFormat(Format):
        name, files, cxx_runtime = "compiled_pkg", ("model.so",), True
        tolerances = {"compiled_pkg": Tolerance(1e-4, "test only")}

    cfg = OmegaConf.create({"arch": "nextvit_s", "format": ["pt", "compiled_pkg"]})
    assert not loads_cxx_packages(cfg)  # not registered: nothing to load
    register_format(CompiledFormat)
    try:
        assert loads_cxx_packages(cfg)
    finally:
        unregister_format("compiled_pkg")


def test_the_gpu_smoke_reruns_only_the_cases_its_deadline_cut(tmp_path):
    """experiments/aoti_gpu_smoke.py resumes from its JSONL: a case that ended by itself (loaded, or killed
    by SIGSEGV: a result) is skipped, one cut by the deadline runs again. On the committed H100 record,
    `hwnas_before` was cut (call 3) and had to run again (it did, on an H200 in round 13: the record's last
    line); `plain_before`'s SIGSEGV is a result."""
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import aoti_gpu_smoke
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    lines = (ROOT / "experiments" / "results" / "aoti_gpu_smoke_fix.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["case"] == "hwnas_before" and json.loads(lines[-1])["rc"] == 0
    before_round_13 = tmp_path / "record.jsonl"
    before_round_13.write_text("\n".join(lines[:-1]) + "\n")  # the record as call 11 left it
    done = aoti_gpu_smoke.cases_done(before_round_13)
    assert "hwnas_before" not in done
    assert {"plain_before", "plain_after", "hwnas_after", "extract_app"} <= done
    assert done | {"hwnas_before"} == \
        aoti_gpu_smoke.cases_done(ROOT / "experiments" / "results" / "aoti_gpu_smoke_fix.jsonl")
    out = tmp_path / "smoke.jsonl"
    assert aoti_gpu_smoke.cases_done(out) == set()
    out.write_text("\n".join(json.dumps(r) for r in (
        {"case": "env", "rc": 0}, {"case": "plain_before", "rc": -11, "signal": "SIGSEGV"},
        {"case": "hwnas_compile", "rc": "timeout"})) + "\n\n")
    assert aoti_gpu_smoke.cases_done(out) == {"env", "plain_before"}
