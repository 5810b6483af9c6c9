"""A table for a target from a sibling target's table (`hwnas.latency.adapt` across targets): a
`torch_inductor` table adapted from the shipped `torch_cuda` one. The block rows stay the eager
`torch_cuda` rows of the very module AOTInductor compiles; the correction is fitted on whole networks
timed as `torch_inductor` ships them. A table checks its rows against the form they were timed in and
its networks against the form that ships.

The GPU is faked: compiling is recorded, not done, and a network's "compiled" latency is a known
per-kind multiple of what the `torch_cuda` table predicts (compiling helps convolutions more than
attention), so what the adaptation must recover is known exactly.
"""
from __future__ import annotations

import json
import shutil
import zlib

import pytest

import search_spaces
from hwnas.latency import LatencyTable, LatencyTableError, default_table_path
from hwnas.latency.adapt import adapt, default_source, measure_held_out
from hwnas.latency.backends import Backend, TorchInductor
from hwnas.latency.correction import kind_of
from hwnas.latency.keys import block_keys
from hwnas.latency.table import StaleRowsError

SPACE = "efficientformerv2"
COMPILED = {"efficientformerv2.attn": 0.85}  # compiled / eager, per block kind; every other kind 0.6
COMPILED_DEFAULT = 0.6


class FakeCompiledGPU(TorchInductor):
    """`torch_inductor` on a fake GPU (no CUDA, no compiler): `precompile` records what it compiles (each
    package once); a network measures COMPILED x the `torch_cuda` table's prediction per block kind, ±0.5 %
    deterministic noise."""

    def __init__(self, source: LatencyTable, device: str = "Fake GPU", batch: int = 8, compile_workers: int = 3):
        Backend.__init__(self, precision="fp16", batch=batch, warmup=10, repeats=100, max_seconds=0.5,
                         min_runs=20, clock="wall", canary=False)  # the shipped torch_cuda table's setup
        self.cuda_graphs, self.channels_last, self.depthwise, self.autotune = True, True, "auto", False
        self.attention = "matmul"
        self.compile_workers = compile_workers
        self.compile_stats = {"packages": 0, "seconds": 0.0, "wall_seconds": 0.0}
        self.source, self._device = source, device
        self.events: list[tuple[str, object]] = []
        self.cache: set[str] = set()

    def device(self) -> str:
        return self._device

    def runtime_version(self) -> str:
        return "fake AOTInductor"

    def precompile(self, items, progress=True, deadline=None):  # a package cache, as compile_all's: each once
        new = [w.id for w, _, fp in items if fp not in self.cache]
        self.cache.update(fp for _, _, fp in items)
        if new:
            self.events.append(("compile", new))
        return {"packages": len(new), "seconds": 30.0 * len(new), "wall_seconds": 30.0 if new else 0.0}

    def true_ms(self, arch) -> float:
        corr = self.source.correction(arch.scope)
        t = COMPILED_DEFAULT * corr["b"]
        for k in block_keys(arch):
            t += COMPILED.get(kind_of(k), COMPILED_DEFAULT) * corr["a"].get(kind_of(k), 1.0) * self.source.rows[k]["median_ms"]
        return t * (1 + 0.005 * ((zlib.crc32(arch.id.encode()) % 201) / 100 - 1))

    def measure(self, model, input_shape):
        self.events.append(("time", model.id))
        t = self.true_ms(model)
        return {"median_ms": t, "p10_ms": t * 0.98, "spread": 0.01, "runs": 100}


@pytest.fixture(scope="module")
def source():
    return LatencyTable.load(default_table_path("torch_cuda", SPACE), target="torch_cuda", space=SPACE)


@pytest.fixture(scope="module")
def space():
    return search_spaces.get_space(SPACE)


@pytest.fixture(scope="module")
def across(tmp_path_factory, source, space):
    """The shipped torch_cuda table adapted to the fake compiled GPU: 7 networks, then 12 held-out subnets."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("hwnas.latency.profiler._build", lambda what, device: what)  # the fake gets the arch itself
        mp.setattr("hwnas.latency.adapt.measure_mes_unit", lambda backend: {"mes_unit_latency_ms": 0.5})
        backend = FakeCompiledGPU(source)
        out = tmp_path_factory.mktemp("across") / "torch_inductor" / "fake-gpu.adapted.csv"
        table = adapt(backend, space, source, out, 7, progress=False)
        held = measure_held_out(backend, space, table, source, 12, seed=5, progress=False)
    return table, held, backend


def test_a_compiled_table_adapted_from_the_eager_one_recovers_the_compiled_scale(across):
    table, held, _ = across
    a, s = held["adapted"], held["source"]
    assert s["within_10pct"] == 0  # the eager table as it is: 1.2-1.7x the compiled networks
    assert a["within_5pct"] == 1 and a["mape"] < 0.02 and a["kendall_tau"] > 0.9
    assert 0.55 <= table.correction(SPACE)["device_scale_common"] <= 0.9


def test_its_provenance_says_rows_of_which_target_and_networks_timed_as_shipped(across, source):
    table, _, backend = across
    prov = json.loads(table.path.with_suffix(".json").read_text())
    assert prov["target"] == "torch_inductor" and table.target == "torch_inductor"
    rows = prov["adapted"]["rows"]
    assert rows["target"] == "torch_cuda" and rows["fingerprint"] == source.provenance["fingerprint"]
    assert prov["fingerprint"]["form"] == backend.form.settings() and "autotune" in prov["fingerprint"]["form"]
    assert prov["adapted"]["from"]["target"] == "torch_cuda"
    comp = prov["adapted"]["scopes"][SPACE]["compile"]
    assert comp["compiled_packages"] == 7 and comp["compile_seconds"] == 210.0  # the fit networks only
    assert prov["profiling"][SPACE]["compiled_packages"] == 7 + 12  # and the held-out ones after them
    assert table.rows_target == "torch_cuda" and table.rows_form().target == "torch_cuda"
    assert table.deploy_form().target == "torch_inductor"
    assert "block rows of the torch_cuda table" in table.describe()
    assert "timed as torch_inductor ships them" in table.describe()


def test_networks_are_compiled_a_worker_round_ahead_of_their_timing(across):
    _, _, backend = across
    fit = [e for e in backend.events[:10]]
    # 3 workers: compile 3, time 3, compile 3, time 3, compile the 7th, time it
    assert [e[0] for e in fit] == ["compile", "time", "time", "time", "compile", "time", "time", "time", "compile", "time"]
    assert fit[0][1] == [e[1] for e in fit[1:4]]
    held = backend.events[10:]
    assert held[0][0] == "compile" and len(held[0][1]) == 12  # held-out: 4 per worker in one chunk


def test_the_adapted_table_loads_checked_rows_against_their_form_networks_against_the_shipped(across, space):
    table, held, _ = across
    loaded = LatencyTable.load(table.path, target="torch_inductor", space=SPACE)
    assert loaded.check
    for net in held["networks"]:
        assert loaded.predict(search_spaces.Arch.from_dict(net["arch"])) == pytest.approx(net["predicted_ms"])
    # the rows are torch_cuda's: checked against the torch_inductor form they would all be stale
    prov = dict(loaded.provenance)
    prov["adapted"] = {k: v for k, v in prov["adapted"].items() if k != "rows"}
    with pytest.raises(StaleRowsError):
        LatencyTable(loaded.rows, prov, loaded.path, check=True).predict(space.min_arch())


def test_default_source_falls_back_to_the_targets_it_adapts_from(tmp_path):
    assert default_source("torch_inductor", SPACE) == default_table_path("torch_cuda", SPACE)
    assert default_source("onnxruntime_cpu", SPACE) == default_table_path("onnxruntime_cpu", SPACE)
    # a user's tables folder (the profile app's default) without a table: the shipped ones are the source
    assert default_source("torch_inductor", SPACE, tables_dir=tmp_path) == default_table_path("torch_cuda", SPACE)
    assert default_source("onnxruntime_cpu", SPACE, tables_dir=tmp_path) == default_table_path("onnxruntime_cpu", SPACE)
    with pytest.raises(LatencyTableError, match=f"of target 'tensorrt' for {SPACE} under {tmp_path} or "):
        default_source("tensorrt", SPACE, tables_dir=tmp_path)
    # a complete full profile of the user's own is a candidate too (the newer one wins)
    src = default_table_path("onnxruntime_cpu", SPACE)
    mine = tmp_path / "onnxruntime_cpu" / "my-cpu.csv"
    mine.parent.mkdir()
    shutil.copyfile(src, mine)
    prov = json.loads(src.with_suffix(".json").read_text())
    mine.with_suffix(".json").write_text(json.dumps(dict(prov, date="2999-01-01")))
    assert default_source("onnxruntime_cpu", SPACE, tables_dir=tmp_path) == mine
    assert default_source("torch_inductor", SPACE, tables_dir=tmp_path) == default_table_path("torch_cuda", SPACE)


def test_adapting_across_targets_refuses_a_foreign_target_or_another_form(tmp_path, source, space):
    ort = LatencyTable.load(default_table_path("onnxruntime_cpu", SPACE))
    with pytest.raises(LatencyTableError, match="adapts only its own tables or those of 'torch_cuda'"):
        adapt(FakeCompiledGPU(source), space, ort, tmp_path / "a.adapted.csv", 4, progress=False)
    with pytest.raises(LatencyTableError, match="batch"):
        adapt(FakeCompiledGPU(source, batch=1), space, source, tmp_path / "b.adapted.csv", 4, progress=False)
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_a_search_on_it_says_whose_rows_and_how_the_networks_were_timed(across, space):
    from hwnas.search.app import table_warnings
    table, _, _ = across
    notes = " ".join(table_warnings(LatencyTable.load(table.path), space, str(table.path)))
    assert "ADAPTED TABLE" in notes and "target torch_cuda" in notes
    assert "as torch_inductor ships them" in notes


def test_an_export_says_its_rows_were_timed_eager_and_its_networks_as_shipped(across, space):
    import supernet
    from hwnas.extract import deployed_latencies
    table, _, _ = across
    arch = space.references()["efficientformerv2_s0"]
    dep = deployed_latencies(supernet.build_model(arch).eval(), arch, tables=[table.path])
    d = dep[f"torch_inductor/{table.path.name}"]["deploy"]
    assert d["timed_what_ships"] and d["blocks_timed_as_shipped"] == d["blocks"]
    assert d["rows_target"] == "torch_cuda" and "autotune" in d["settings"]
    assert "whole networks were timed as torch_inductor ships them" in d["what"]


def test_the_committed_first_look_at_compiled_networks_is_reproduced_from_their_measurements():
    """experiments/archive/inductor_adapt_loo.py on GPU call 23's state (14 EfficientFormerV2 networks compiled and timed on
    an H100): the committed leave-one-out figures follow from the committed measurements alone."""
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "experiments" / "archive"))
    import inductor_adapt_loo
    committed = json.loads((root / "experiments/archive/results/inductor_adapt_loo_efficientformerv2_call23.json").read_text())
    res = inductor_adapt_loo.loo(SPACE, inductor_adapt_loo.networks_of(root / "experiments/logs/inductor_adapt_call23/state.tgz"))
    assert res["networks"] == committed["networks"] == 14
    for k in ("within_10pct", "within_5pct", "kendall_tau"):
        assert res["leave_one_out"][k] == pytest.approx(committed["leave_one_out"][k], abs=1e-9)
    assert res["leave_one_out"]["mape"] == pytest.approx(committed["leave_one_out"]["mape"], rel=1e-6)
    assert res["correction_on_all"]["form"] == committed["correction_on_all"]["form"]


def test_a_torch_inductor_search_runs_on_it_and_its_report_says_whose_rows(across, tmp_path):
    """`python -m hwnas.search +target=torch_inductor` on the adapted table (no GPU needed to search): the console
    and report.md say it is adapted from torch_cuda's rows, and the picks' latencies are its predictions."""
    import subprocess
    import sys
    table, _, _ = across
    r = subprocess.run([sys.executable, "-m", "hwnas.search", "+target=torch_inductor", f"space={SPACE}",
                        f"target.table={table.path}", f"hydra.run.dir={tmp_path / 'run'}", "evaluator=proxy",
                        "search.n_trials=4"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "ADAPTED TABLE" in report and "target torch_cuda" in report and "as torch_inductor ships them" in report
    s0 = search_spaces.get_space(SPACE).references()["efficientformerv2_s0"]
    assert f"{LatencyTable.load(table.path).predict(s0):.3f}" in r.stdout  # the reference's latency: this table's
