"""Adapting a latency table to another device (`hwnas.latency.adapt`), the table choice between full,
adapted and other devices' tables, and device-mismatch notices for GPU targets.

The "other device" is a fake backend that times nothing: its latency of a network is a known
per-kind multiple of what the shipped table predicts (slower, and more so for attention), so what
the adaptation must recover is known exactly.
"""
from __future__ import annotations

import json
import shutil
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import search_spaces
from hwnas.latency import LatencyTable, LatencyTableError, default_table_path
from hwnas.latency.adapt import adapt, adapted_path, measure_held_out, pick_networks
from hwnas.latency.backends import OnnxRuntimeCPU, cpu_name
from hwnas.latency.correction import kind_of
from hwnas.latency.keys import block_keys
from hwnas.latency.profiler import partial_path
from hwnas.latency.table import choose_table, networks_path, read_networks

SPACE = "efficientformerv2"
SLOWER = {"efficientformerv2.attn": 2.2}  # per block kind; every other kind 1.6x
SLOWER_DEFAULT = 1.6


class SlowerCPU(OnnxRuntimeCPU):
    """`onnxruntime_cpu` on a device whose every network runs SLOWER x what the source table predicts
    per block kind (±0.5 % deterministic noise per network); counts what it measures."""

    def __init__(self, source: LatencyTable, device: str, **kw):
        super().__init__(**{"canary": True, **kw})  # the shipped table's setup
        self.source, self._device, self.measured = source, device, []

    def device(self) -> str:
        return self._device

    def calibrate_canary(self, runs: int = 200) -> float:
        self.canary_ref_ms = 1.0
        return 1.0

    def true_ms(self, arch) -> float:
        corr = self.source.correction(arch.scope)
        t = SLOWER_DEFAULT * corr["b"]
        for k in block_keys(arch):
            kind = kind_of(k)
            t += SLOWER.get(kind, SLOWER_DEFAULT) * corr["a"].get(kind, 1.0) * self.source.rows[k]["p10_ms"]
        return t * (1 + 0.005 * ((zlib.crc32(arch.id.encode()) % 201) / 100 - 1))

    def measure(self, model, input_shape):
        t = self.true_ms(model) if isinstance(model, search_spaces.Arch) else 3.0  # MobileNetV2 (MES unit)
        self.measured.append(getattr(model, "id", "mobilenet_v2"))
        return {"median_ms": t * 1.02, "p10_ms": t, "spread": 0.01, "runs": 20}


@pytest.fixture(scope="module")
def source():
    return LatencyTable.load(default_table_path("onnxruntime_cpu", SPACE), target="onnxruntime_cpu", space=SPACE)


@pytest.fixture(scope="module")
def space():
    return search_spaces.get_space(SPACE)


@pytest.fixture
def no_build(monkeypatch):
    """Networks are not built: the fake backend gets the arch itself."""
    monkeypatch.setattr("hwnas.latency.profiler._build", lambda what, device: what)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, source, space):
    """The shipped table adapted to a fake, slower device named like this machine's CPU: 8 networks,
    then 16 fresh held-out subnets."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("hwnas.latency.profiler._build", lambda what, device: what)
        backend = SlowerCPU(source, cpu_name())
        out = tmp_path_factory.mktemp("adapt") / "tables" / "onnxruntime_cpu" / "here.adapted.csv"
        table = adapt(backend, space, source, out, 8, progress=False)
        held = measure_held_out(backend, space, table, source, 16, seed=3, progress=False)
    return table, held, backend


def test_adapting_to_a_slower_device_recovers_its_scale(adapted, source, space):
    table, held, backend = adapted
    a, s = held["adapted"], held["source"]
    # the shipped table as it is misses every subnet (the fake device is 1.6-2.2x slower) ...
    assert s["within_10pct"] == 0 and s["mean_signed_pct_error"] < -0.3
    # ... the adapted one predicts them within the fake device's noise, ranking included
    assert a["within_5pct"] == 1 and a["mape"] < 0.02 and a["kendall_tau"] > 0.95
    corr = table.correction(SPACE)
    assert 1.6 <= corr["device_scale_common"] <= 2.2
    for net in held["networks"]:  # predictions are the table's own, from its file
        assert LatencyTable.load(table.path).predict(search_spaces.Arch.from_dict(net["arch"])) == \
            pytest.approx(net["predicted_ms"])
    # fresh held-out subnets: none was measured for the fit, here or in the source table
    fit = set(corr["fit_arch_ids"]) | set(source.correction(SPACE)["fit_arch_ids"])
    assert not fit & {n["arch_id"] for n in held["networks"]}


def test_adapted_provenance_says_from_what_how_many_and_how_long(adapted, source):
    table, held, backend = adapted
    prov = json.loads(table.path.with_suffix(".json").read_text())
    ad = prov["adapted"]
    assert ad["from"]["table"] == "latency_tables/onnxruntime_cpu/amd-epyc.csv"
    assert ad["from"]["device"] == source.device and ad["from"]["date"] == source.provenance["date"]
    rec = ad["scopes"][SPACE]
    assert rec["networks"] == 8 and rec["asked"] == 8 and rec["seconds"] >= 0 and not rec["stopped_early"]
    assert rec["transfer"]["within_10pct"] == 0  # the unadapted table, measured on the same subnets
    assert prov["device"] == cpu_name() and prov["complete"][SPACE] is True
    assert prov["fidelity"][SPACE]["n"] == 16
    assert table.path.name == "here.adapted.csv" and not partial_path(table.path).exists()
    assert LatencyTable.load(table.path).describe().startswith("ADAPTED latency table")
    # every block row is the source's (measured there); only the correction is this device's
    assert table.rows == source.rows
    nets = [l for l in networks_path(table.path).read_text().splitlines()[1:]]
    assert sum(",fit," in l for l in nets) == 8 and sum(",fidelity," in l for l in nets) == 16


def test_networks_spread_over_size_and_block_mix(source, space):
    picked = pick_networks(space, source, 8)
    pool = [space.min_arch(), space.max_arch(), *space.sample_many(300, seed=30_000)]
    sums = [source.block_sum(a) for a in pool]
    assert source.block_sum(picked[0]) == pytest.approx(min(sums))  # the smallest and the largest first
    assert source.block_sum(picked[1]) == pytest.approx(max(sums))
    assert len({a.id for a in picked}) == 8
    assert pick_networks(space, source, 5) == picked[:5]  # a run stopped after k networks is `adapt=k`
    attn = [sum(k.startswith("efficientformerv2.attn") for k in block_keys(a)) for a in picked]
    assert max(attn) - min(attn) >= 4  # with attention and (almost) without


def test_a_killed_adapt_resumes_measuring_nothing_twice_and_can_stop_early(tmp_path, source, space, no_build):
    out = tmp_path / "onnxruntime_cpu" / "here.adapted.csv"
    backend = SlowerCPU(source, "Fake CPU")

    class Kill(Exception):
        pass

    def kill_after_3(rec):
        if rec["i"] == 3:
            raise Kill
    with pytest.raises(Kill):
        adapt(backend, space, source, out, 10, progress=False, on_network=kill_after_3)
    assert not out.exists() and partial_path(out).exists()  # nothing half-made where a search looks
    first = list(backend.measured)
    assert len(first) == 3
    backend.measured.clear()
    table = adapt(backend, space, source, out, 10, stop_loo=0.5, min_networks=6, progress=False)
    again = [m for m in backend.measured if m != "mobilenet_v2"]
    assert not set(again) & set(first) and len(first) + len(again) == 6  # stopped at 6 networks: fit good enough
    rec = table.provenance["adapted"]["scopes"][SPACE]
    assert rec["networks"] == 6 and "leave-one-out" in rec["stopped_early"]
    assert out.exists() and not partial_path(out).exists()


def test_adapt_refuses_another_setup(tmp_path, source, space):
    backend = SlowerCPU(source, "Fake CPU", clock="wall")
    with pytest.raises(LatencyTableError, match="clock"):
        adapt(backend, space, source, tmp_path / "x.adapted.csv", 4, progress=False)


def _table(folder: Path, name: str, **prov) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.csv").write_text("key,median_ms,p10_ms,spread,runs,fingerprint\n")
    (folder / f"{name}.json").write_text(json.dumps({"target": "onnxruntime_cpu", "spaces": ["nextvit"],
                                                     "source": "measured", "complete": {"nextvit": True}, **prov}))


def test_table_choice_this_device_first_full_over_adapted(tmp_path):
    folder = tmp_path / "onnxruntime_cpu"
    _table(folder, "far", device="Far CPU", date="2020-01-01")
    _table(folder, "here.adapted", device="Here CPU", date="2020-01-01", adapted={"from": {"device": "Far CPU"}})
    c = choose_table("onnxruntime_cpu", "nextvit", tmp_path, this_device="Here CPU")
    assert c["path"].name == "here.adapted.csv" and "adapted" in c["reason"] and "Here CPU" in c["reason"]
    # elsewhere, the full profile is preferred over a table adapted to yet another device
    assert choose_table("onnxruntime_cpu", "nextvit", tmp_path, this_device="Third CPU")["path"].name == "far.csv"
    # a newer adapted table never replaces a complete full profile of the same device
    _table(folder, "here", device="Here CPU", date="2019-01-01")
    c = choose_table("onnxruntime_cpu", "nextvit", tmp_path, this_device="Here CPU")
    assert c["path"].name == "here.csv" and "full profile" in c["reason"]
    _table(folder, "here.adapted.partial", device="Here CPU", date="2030-01-01", adapted={"x": 1})
    assert default_table_path("onnxruntime_cpu", "nextvit", tmp_path, this_device="Here CPU").name == "here.csv"


def test_gpu_device_mismatch_names_both_gpus_the_transfer_and_the_adapt_command(monkeypatch):
    from hwnas.latency.backends import device_note, this_device
    table = LatencyTable.load(default_table_path("torch_cuda", "nextvit"))
    assert table.device == "NVIDIA H200"
    monkeypatch.setattr("hwnas.latency.backends.cuda_device_name", lambda: "NVIDIA L4")
    assert this_device("torch_cuda") == "NVIDIA L4"
    note = device_note(table, "nextvit")
    assert "NVIDIA H200" in note and "NVIDIA L4" in note and "not been measured" in note
    assert "python -m hwnas.profile +target=torch_cuda space=nextvit adapt=" in note
    table.provenance["transfers"] = {"NVIDIA L4": {"nextvit": {"n": 40, "within_10pct": 0.25, "kendall_tau": 0.91,
                                                               "predicted_over_measured": [0.41, 0.52]}}}
    note = device_note(table, "nextvit")
    assert "25% of 40 subnets within ±10%" in note and "0.41-0.52" in note
    monkeypatch.setattr("hwnas.latency.backends.cuda_device_name", lambda: "NVIDIA H200")
    assert device_note(table, "nextvit") is None  # the table's own GPU
    monkeypatch.setattr("hwnas.latency.backends.cuda_device_name", lambda: None)
    assert device_note(table, "nextvit") is None and this_device("torch_cuda") is None  # no GPU: nothing to compare


def test_search_on_an_adapted_table_says_so(adapted, tmp_path, capsys):
    """This machine's adapted table is chosen over another device's full profile, and report.md says
    it is adapted (from what, on how many networks) and why it was chosen."""
    from hwnas.search.app import compose_config, run
    table, held, backend = adapted
    tables = tmp_path / "tables" / "onnxruntime_cpu"
    tables.mkdir(parents=True)
    for f in (table.path, table.path.with_suffix(".json"), networks_path(table.path)):
        shutil.copyfile(f, tables / f.name)
    src = default_table_path("onnxruntime_cpu", SPACE)
    for f in (src, networks_path(src)):
        shutil.copyfile(f, tables / f"far{f.name[len(src.stem):]}")
    prov = json.loads(src.with_suffix(".json").read_text())
    (tables / "far.json").write_text(json.dumps({**prov, "device": "Far CPU"}))
    cfg = compose_config(["+target=onnxruntime_cpu", "evaluator=proxy", "progress=false", "search=random",
                          "search.n_trials=3", f"target.tables_dir={tables.parent}", "references=[efficientformerv2_s0]"])
    run(cfg, tmp_path / "search")
    report = (tmp_path / "search" / "report.md").read_text()
    err = capsys.readouterr().err
    for text in (report, err):
        assert "ADAPTED TABLE" in text and "here.adapted.csv" in text and "from latency_tables/onnxruntime_cpu/amd-epyc.csv" in text
        assert "8 whole networks" in text and "16 fresh held-out subnets" in text
    assert "adapted table" in report and "of this machine's device" in report  # why it was chosen
    assert np.isfinite(table.predict(search_spaces.get_space(SPACE).min_arch()))


def test_the_mismatch_notice_quotes_a_measured_transfer_from_an_adapted_table_beside(adapted, tmp_path):
    """A table of another device, with a table adapted from it to this machine's device beside it:
    the notice says how the table did on this device, measured on the adapted table's held-out subnets."""
    from hwnas.latency.backends import device_note
    table, held, backend = adapted
    folder = tmp_path / "onnxruntime_cpu"
    folder.mkdir()
    src = default_table_path("onnxruntime_cpu", SPACE)
    shutil.copyfile(src, folder / "far.csv")
    prov = json.loads(src.with_suffix(".json").read_text())
    (folder / "far.json").write_text(json.dumps({**prov, "device": "Far CPU"}))
    far = LatencyTable.load(folder / "far.csv")
    assert "has not been measured" not in device_note(far, SPACE)
    assert "0.57-0.73x" in device_note(far, SPACE)  # what is known of an AMD table on an Intel CPU, said as such
    ad = json.loads(table.path.with_suffix(".json").read_text())
    ad["adapted"]["from"]["device"] = "Far CPU"
    (folder / "here.adapted.json").write_text(json.dumps(ad))
    shutil.copyfile(table.path, folder / "here.adapted.csv")
    note = device_note(far, SPACE)
    assert "Far CPU" in note and cpu_name() in note
    assert "0% of 16 subnets within ±10%" in note and "here.adapted.json" in note
    assert f"+target=onnxruntime_cpu space={SPACE} adapt=24 target.rounds=50" in note  # round-robin, as measured best
    assert note.endswith("search with `target.tables_dir=outputs/latency_tables` then.")  # where the command writes


def test_profile_app_adapt_on_real_onnxruntime(tmp_path):
    """`python -m hwnas.profile ... adapt=N` on a fresh machine: real ONNX Runtime timings of N networks
    (round-robin, as the adapt command suggests), the shipped table adapted into the user's (empty) tables
    folder and left as it was, its held-out result in the run directory."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[1]
    tables = tmp_path / "tables"  # empty: what the search's device warning sends a new user to
    src = default_table_path("onnxruntime_cpu", SPACE)
    shipped = {f: f.read_bytes() for f in (src, src.with_suffix(".json"), networks_path(src))}
    cmd = [sys.executable, "-m", "hwnas.profile", "+target=onnxruntime_cpu", f"space={SPACE}", "adapt=4",
           "fidelity=2", f"tables_dir={tables}", f"hydra.run.dir={tmp_path / 'run'}", "progress=false",
           "target.warmup=1", "target.repeats=5", "target.min_runs=3", "target.max_seconds=0.05", "target.rounds=2"]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    from hwnas.latency.backends import slug
    out = tables / "onnxruntime_cpu" / f"{slug(cpu_name())}.adapted.csv"
    assert all(f.read_bytes() == b for f, b in shipped.items())  # the shipped table is the source, untouched
    t = LatencyTable.load(out, target="onnxruntime_cpu", space=SPACE)
    assert t.provenance["adapted"]["from"]["table"].endswith(f"onnxruntime_cpu/{src.name}")
    rec = t.provenance["adapted"]["scopes"][SPACE]
    assert rec["networks"] == 4 and rec["seconds"] > 0 and t.provenance["device"] == cpu_name()
    assert t.provenance["fidelity"][SPACE]["n"] == 2 and t.provenance["rounds"] == 2
    assert t.provenance["fidelity"][SPACE]["timing"].startswith("round-robin, 2 rounds")
    assert {r["runs"] for r in read_networks(networks_path(out)) if r["role"] in ("fit", "fidelity")} == {4}
    res = json.loads((tmp_path / "run" / f"latency_adapt_onnxruntime_cpu_{SPACE}.json").read_text())
    assert res["held_out"]["adapted"]["n"] == 2 and len(res["held_out"]["networks"]) == 2
    assert "adapted from 4 networks" in p.stdout + p.stderr
    assert f"to search with this table: python -m hwnas.search +target=onnxruntime_cpu target.tables_dir={tables}" \
        in p.stdout + p.stderr


ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
sys.path.insert(0, str(ROOT / "experiments"))  # the experiments' scripts, imported by the tests below
ADAPT_RESULTS = sorted(p.name for p in RESULTS.glob("latency_adapt_*_*_*.json"))  # <target>_<space>_<device>


@pytest.mark.parametrize("result_file", ADAPT_RESULTS)
def test_committed_adapt_results_are_reproduced_from_their_measurements(result_file):
    """The fit and the held-out figures of every committed adapt result, recomputed from the networks it
    measured and the source table it names."""
    from hwnas.latency.adapt import refit_result, result_source_table
    res = json.loads((RESULTS / result_file).read_text())
    source = result_source_table(res, ROOT)  # its own target: the adapted one's, or a sibling's (torch_cuda)
    assert source.provenance["date"] == res["source_table"]["date"]  # the very table it was adapted from
    again = refit_result(res, source)
    corr = res["adapt"]["correction"]
    assert again["correction"]["form"] == corr["form"] and again["correction"]["b"] == pytest.approx(corr["b"], abs=1e-9)
    assert again["correction"]["a"] == pytest.approx(corr["a"], rel=1e-9)
    assert again["predicted_ms"] == pytest.approx([n["predicted_ms"] for n in res["held_out"]["networks"]], rel=1e-9)
    for k in ("n", "within_5pct", "within_10pct", "kendall_tau"):
        assert again["held_out"][k] == pytest.approx(res["held_out"]["adapted"][k]), k


@pytest.mark.parametrize("result_file", ADAPT_RESULTS)
def test_the_committed_comparison_of_adapt_forms_is_reproduced(result_file):
    """experiments/latency_adapt_forms.py refits every form from one committed adapt result's measurements
    and gets the committed comparison (latency_adapt_forms.json); its "library's choice" row is the
    committed adapt result's own fit and held-out figures."""
    import latency_adapt_forms as forms
    committed = {r["result_file"]: r for r in json.loads((RESULTS / "latency_adapt_forms.json").read_text())}
    assert set(committed) == set(ADAPT_RESULTS)
    again, was = forms.compare(RESULTS / result_file), committed[result_file]
    assert list(again["forms"]) == list(was["forms"])
    for name, f in again["forms"].items():
        assert f["loo_mape"] == pytest.approx(was["forms"][name]["loo_mape"], rel=1e-9) and f["ridge"] == was["forms"][name]["ridge"]
        assert f["held_out"] == pytest.approx(was["forms"][name]["held_out"], rel=1e-9, abs=1e-12), name
    for k, v in again["ceilings"].items():
        if k == "per_kind_tau_maximising_scales":
            continue  # an argmax on a plateau of τ: another CPU's float rounding (Intel vs AMD BLAS) picks another point
        assert v == (pytest.approx(was["ceilings"][k], rel=1e-9) if v is not None else None), k
    # the committed maximising scales reach the committed ceiling on this machine too
    ceiling = was["ceilings"]["per_kind_tau_maximised_on_held_out"]
    assert forms.tau_of_scales(RESULTS / result_file, was["ceilings"]["per_kind_tau_maximising_scales"]) == \
        pytest.approx(ceiling, abs=1e-9)
    assert set(again["ceilings"]["per_kind_tau_maximising_scales"]) == set(was["ceilings"]["per_kind_tau_maximising_scales"])
    res = json.loads((RESULTS / result_file).read_text())
    lib = again["forms"][forms.LIBRARY]
    assert lib["is"] == {"scale": "one scale + b (default)", "per_kind": "per kind, ridge 0.05 (library)"}[res["adapt"]["correction"]["form"]]
    assert lib["loo_mape"] == pytest.approx(res["adapt"]["correction"]["loo_mape"][res["adapt"]["correction"]["form"]], rel=1e-9)
    for k in ("n", "within_5pct", "within_10pct", "mape", "kendall_tau"):
        assert lib["held_out"][k] == pytest.approx(res["held_out"]["adapted"][k], rel=1e-9), k


def test_the_committed_block_refresh_simulation_is_reproduced():
    """experiments/latency_adapt_refresh.py replays every committed onnxruntime_cpu adapt that has a full profile
    of its machine with k blocks re-measured, or more networks fitted, and gets the committed figures
    (latency_adapt_refresh.json); with nothing re-measured it is the committed adapt itself."""
    import latency_adapt_refresh as refresh
    committed = json.loads((RESULTS / "latency_adapt_refresh.json").read_text())
    pairs = refresh.pairs()
    assert [r.name for r, _ in pairs] == [c["result_file"] for c in committed] and len(pairs) >= 5
    for (result, full), was in zip(pairs, committed):
        again = refresh.simulate(result, full)
        assert again["k0_matches_committed"], result.name
        assert len(again["rows"]) == len(was["rows"]) and len(again["more_networks"]) == len(was["more_networks"])
        for a, w in zip(again["rows"] + again["more_networks"], was["rows"] + was["more_networks"]):
            assert (a["form"], a["blocks"], a.get("networks")) == (w["form"], w["blocks"], w.get("networks"))
            assert a["held_out"] == pytest.approx(w["held_out"], rel=1e-9, abs=1e-12), result.name


def test_a_search_on_a_gpu_table_of_another_gpu_names_both_in_the_report(monkeypatch, tmp_path, capsys):
    from hwnas.search.app import compose_config, run
    monkeypatch.setattr("hwnas.latency.backends.cuda_device_name", lambda: "NVIDIA RTX 4090")
    cfg = compose_config(["+target=torch_cuda", "evaluator=proxy", "progress=false", "search=random",
                          "search.n_trials=3", "references=[efficientformerv2_s0]"])
    run(cfg, tmp_path / "search")
    report = (tmp_path / "search" / "report.md").read_text()
    err = capsys.readouterr().err
    for text in (report, err):
        assert "DEVICE MISMATCH" in text and "NVIDIA H200" in text and "NVIDIA RTX 4090" in text
        assert "+target=torch_cuda space=efficientformerv2 adapt=" in text
    assert "no table of this machine's device (NVIDIA RTX 4090) exists" in report  # why this table


def test_the_adapt_experiment_times_its_held_out_networks_with_their_own_settings():
    """experiments/latency_adapt.py --held-out-set: the held-out truth is timed longer than the few-shot
    networks (after --set, for that target only); without it both use the same backend."""
    import latency_adapt as exp
    args = exp.parse(["--out", "unused", "--set", "onnxruntime_cpu.repeats=30",
                      "--held-out-set", "onnxruntime_cpu.max_seconds=3", "--held-out-set", "torch_cuda.repeats=999"])
    fast, s_fast = exp.make_backend("onnxruntime_cpu", args)
    held, s_held = exp.make_backend("onnxruntime_cpu", args, held_out=True)
    assert (s_fast["repeats"], s_fast["max_seconds"]) == (30, exp.FAST["onnxruntime_cpu"]["max_seconds"])
    assert (s_held["repeats"], s_held["max_seconds"]) == (30, 3)
    assert (fast.repeats, fast.max_seconds, held.repeats, held.max_seconds) == (30, 0.4, 30, 3)


def test_a_full_table_profiled_beside_the_adapt_run_is_scored_on_its_held_out_networks(tmp_path):
    """latency_adapt.py --score-full-table: scoring the very table the result was adapted from on its held-out
    networks gives the result's own "source as it is" figures (the same predictions, the same truth)."""
    import latency_adapt as exp
    name = "latency_adapt_onnxruntime_cpu_efficientformerv2_intel-xeon-r15.json"
    result = tmp_path / name
    shutil.copy(RESULTS / name, result)
    res = json.loads(result.read_text())
    src = ROOT / res["source_table"]["table"]
    assert exp.main(["--score-full-table", str(src), "--result", str(result)]) == 0
    full = json.loads(result.read_text())["full_profile"]
    fit = set(LatencyTable.load(src, target=res["target"], space=res["scope"]).correction(res["scope"])["fit_arch_ids"])
    assert not fit & {n["arch_id"] for n in res["held_out"]["networks"]}  # (held out from the source's fit too)
    for k in ("n", "within_5pct", "within_10pct", "mape", "kendall_tau"):
        assert full["held_out"][k] == pytest.approx(res["held_out"]["source"][k], rel=1e-9), k
    assert full["table"] == str(src) and full["n_blocks"] == len(search_spaces.get_space("efficientformerv2").all_blocks())
    # in the held-out networks' canary units: the table's predictions times ref(held out) / ref(table)
    refs = full["canary_ref_p10_ms"]
    assert refs["held_out"] == res["adapt"]["canary_ref"]["p10_ms"] and refs["held_out"] != refs["full_table"]
    ratio = refs["held_out"] / refs["full_table"]
    err = [n["source_predicted_ms"] * ratio / n["measured_ms"] - 1 for n in res["held_out"]["networks"]]
    aligned = full["held_out_canary_aligned"]
    assert aligned["within_10pct"] == pytest.approx(np.mean(np.abs(err) <= 0.10))
    assert aligned["mean_signed_pct_error"] == pytest.approx(np.mean(err), rel=1e-9)
    assert aligned["kendall_tau"] == pytest.approx(full["held_out"]["kendall_tau"])  # a scale keeps the ranking
    with pytest.raises(SystemExit):
        exp.parse(["--score-full-table", str(src)])  # no --result: one argparse error


def test_the_truth_reproducibility_passes_are_measured_compared_and_resumed(tmp_path):
    """experiments/latency_truth_reproducibility.py on real ONNX Runtime: each pass times every held-out subnet of
    an adapt result, the passes are compared with each other and with the committed truth and predictions, and a
    rerun measures no pass twice; another result's passes are never mixed into the same file."""
    import latency_truth_reproducibility as truth
    space = search_spaces.get_space(SPACE, resolution=64)
    archs = [space.min_arch(), *space.sample_many(2, seed=3)]
    res = {"target": "onnxruntime_cpu", "scope": SPACE,
           "source_table": {"table": "latency_tables/onnxruntime_cpu/amd-epyc.csv"},
           "adapt": {"canary_ref": {"p10_ms": 2.0}},
           "held_out": {"networks": [{"arch_id": a.id, "arch": a.to_dict(), "measured_ms": 1.0 + i,
                                      "predicted_ms": 1.1 + i, "source_predicted_ms": 3.0 - i}
                                     for i, a in enumerate(archs)]}}
    result = tmp_path / "latency_adapt_onnxruntime_cpu_x_here.json"
    result.write_text(json.dumps(res))
    argv = ["--result", str(result), "--max-seconds", "0.05", "--min-runs", "3", "--repeats", "5", "--rounds", "2",
            "--out", str(tmp_path / "out")]
    assert truth.main(argv) == 0
    out = json.loads(next((tmp_path / "out").glob("latency_truth_*.json")).read_text())
    assert set(out["passes"]) == {"sequential_a", "sequential_b", "interleaved"}
    assert all(set(p["times"]) == {a.id for a in archs} and min(p["times"].values()) > 0 for p in out["passes"].values())
    assert out["tau_adapted_table_vs"]["committed"] == 1.0 and out["tau_source_table_vs"]["committed"] == -1.0
    assert set(out["tau_between"]) >= {"sequential_a vs sequential_b", "sequential_b vs interleaved"}
    before = {k: p["seconds"] for k, p in out["passes"].items()}
    assert truth.main(argv) == 0  # resumed: every pass measured already
    again = json.loads(next((tmp_path / "out").glob("latency_truth_*.json")).read_text())
    assert {k: p["seconds"] for k, p in again["passes"].items()} == before
    other = tmp_path / "latency_adapt_onnxruntime_cpu_y_here.json"
    other.write_text(json.dumps(res))
    with pytest.raises(SystemExit, match="holds passes of"):
        truth.main(["--result", str(other), "--out", str(tmp_path / "out")])
    # raw passes keep every run of a subnet and of the canary before it, and compare the statistics on them
    assert truth.main([*argv[:-2], "--passes", "raw_a,raw_b", "--out", str(tmp_path / "raw")]) == 0
    raw = json.loads(next((tmp_path / "raw").glob("latency_truth_*.json")).read_text())
    for p in raw["passes"].values():
        assert set(p["runs"]) == {a.id for a in archs} and p["canary_ref_ms"] == 2.0
        for a in archs:
            r = p["runs"][a.id]
            assert len(r["runs_ms"]) == len(r["canary_runs_ms"]) >= 3
            # what the pass reports for a subnet is the shipped statistic of those very runs
            assert p["times"][a.id] == pytest.approx(truth.STATISTICS["p10 x canary p10 (shipped)"](
                r["runs_ms"], r["canary_runs_ms"], 2.0), rel=1e-3)
    assert set(raw["statistics"]) == set(truth.STATISTICS)
    assert all(-1 <= v["tau raw_a vs raw_b"] <= 1 for v in raw["statistics"].values())
    # round-robin passes: every subnet visited once a round, each keeping its rr_runs timed runs a round
    assert truth.main([*argv[:-2], "--passes", "rr_a,rr_b", "--rr-rounds", "3", "--rr-runs", "2",
                       "--out", str(tmp_path / "rr")]) == 0
    rr = json.loads(next((tmp_path / "rr").glob("latency_truth_*.json")).read_text())
    for p in rr["passes"].values():
        assert {k: len(v["runs_ms"]) for k, v in p["runs"].items()} == {**{a.id: 6 for a in archs}, "canary": 9}
        canary_p10 = np.percentile(p["runs"]["canary"]["runs_ms"], 10)
        for a in archs:  # the p10 of its runs, in the canary's reference units
            assert p["times"][a.id] == pytest.approx(np.percentile(p["runs"][a.id]["runs_ms"], 10) * 2.0 / canary_p10,
                                                     rel=1e-3)
    assert "rr_a vs rr_b" in rr["tau_between"]
