"""A table keeps one way of timing (real ONNX Runtime timings on tiny settings): a profile or an adapt
resumed with other timing settings is refused before it measures anything, settings that decide nothing
of what is kept are not; a rerun that measures nothing says what it kept and how it was timed. A table
whose rows and provenance were not written together (a kill between the two files) is refused on load."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

import search_spaces
from hwnas.latency import LatencyTable, LatencyTableError, default_table_path, get_backend
from hwnas.latency.adapt import adapt
from hwnas.latency.profiler import TimingSettingsError, check_timing, measure_networks, partial_path, run_profile
from hwnas.latency.table import TABLES_DIR, networks_path, read_networks, read_rows

SPACE = "efficientformerv2"
#: the tiny settings a table is made with here: exactly 3 timed runs of everything
TINY = dict(warmup=1, repeats=3, min_runs=3, max_seconds=0.05, canary=False, clock="wall")


def backend(**changes):
    return get_backend("onnxruntime_cpu", **{**TINY, **changes})


@pytest.fixture(scope="module")
def space():
    return search_spaces.get_space(SPACE)


@pytest.fixture(scope="module")
def s0(space):
    return space.reference("efficientformerv2_s0")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, space, s0):
    """A finished table of the blocks of EfficientFormerV2-S0 (no fit networks), timed with TINY."""
    path = tmp_path_factory.mktemp("finished") / "t.csv"
    run_profile(backend(), space, path, archs=[s0], n_fit=0, progress=False)
    return path


def copy_table(src: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in (src, src.with_suffix(".json")):
        shutil.copyfile(f, folder / f.name)
    return folder / src.name


def test_a_profile_resumed_with_other_timing_settings_is_refused_a_setting_that_decides_no_row_is_not(
        tmp_path, space, s0, caplog):
    path = tmp_path / "t.csv"
    run_profile(backend(), space, path, archs=[s0], n_fit=0, progress=False, limit=4)
    before = read_rows(partial_path(path))
    assert len(before) == 4 and {r["runs"] for r in before.values()} == {3}

    with pytest.raises(TimingSettingsError) as e:  # 40 runs a row beside rows of 3: refused, nothing measured
        run_profile(backend(repeats=40, min_runs=40), space, path, archs=[s0], n_fit=0, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "block rows timed with repeats=3, min_runs=3" in msg
    assert "this run times with repeats=40, min_runs=40" in msg
    assert "target.repeats=3 target.min_runs=3" in msg and "out=PATH" in msg
    assert read_rows(partial_path(path)) == before and not path.exists()

    # round-robin rounds decide how whole networks are timed, never a block row: resuming with them is fine
    table = run_profile(backend(rounds=2), space, path, archs=[s0], n_fit=0, progress=False)
    rows = read_rows(path)
    assert len(rows) == 14 and {r["runs"] for r in rows.values()} == {3} and table.path == path
    assert (table.provenance["repeats"], table.provenance["min_runs"]) == (3, 3)

    # the finished table rerun with 40 runs a row: nothing is measured, and one line says so and how to re-time
    csv_bytes = path.read_bytes()
    caplog.set_level(logging.INFO, logger="hwnas.profile")
    run_profile(backend(repeats=40, min_runs=40), space, path, archs=[s0], n_fit=0, progress=False)
    assert path.read_bytes() == csv_bytes
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("nothing measured")]
    assert len(said) == 1 and "\n" not in said[0], said
    assert f"the 14 block rows of {SPACE} in {path} are kept as timed with the table's settings" in said[0]
    assert "repeats=3" in said[0] and "this run's min_runs=40, repeats=40 would time them otherwise" in said[0]
    assert "out=PATH or tables_dir=DIR" in said[0]


def test_fit_networks_keep_their_timing_held_out_networks_may_have_their_own(tmp_path, finished, space, s0):
    """Whole networks are checked per scope and role: fit networks timed one after another refuse
    round-robin ones beside them; held-out networks (the truth a table is checked against, which an
    experiment may time longer) record their own settings."""
    table = LatencyTable.load(copy_table(finished, tmp_path))
    nets = networks_path(table.path)
    measure_networks(backend(), [s0], "fit", nets, progress=False, table=table)
    assert LatencyTable.load(table.path).provenance["network_timing"][SPACE]["fit"] == {
        "warmup": 1, "repeats": 3, "min_runs": 3, "max_seconds": 0.05, "rounds": 0}
    with pytest.raises(TimingSettingsError, match=r"keeps the fit networks of efficientformerv2 timed with "
                                                  r"rounds=0; this run times with rounds=2.*target\.rounds=0"):
        measure_networks(backend(rounds=2), [space.min_arch()], "fit", nets, progress=False, table=table)
    assert [r["arch_id"] for r in read_networks(nets)] == [s0.id]

    measure_networks(backend(repeats=4, min_runs=4), [space.min_arch()], "fidelity", nets, progress=False,
                     table=table)
    timing = LatencyTable.load(table.path).provenance["network_timing"][SPACE]
    assert timing["fidelity"]["repeats"] == 4 and timing["fit"]["repeats"] == 3
    assert [r["runs"] for r in read_networks(nets)] == [3, 4]


def test_which_settings_decide_what(finished):
    """Blocks: warm-up and the stopping rule, never `rounds`; round-robin networks: warm-up and `rounds`,
    never the stopping rule; networks timed one by one: all of them."""
    table = LatencyTable.load(finished)
    rr = {"warmup": 1, "rounds": 2}
    one_by_one = {"warmup": 1, "repeats": 3, "min_runs": 3, "max_seconds": 0.05, "rounds": 0}
    assert check_timing(backend(rounds=5), table, "rows", {**one_by_one, "rounds": None})["repeats"] == 3
    assert check_timing(backend(rounds=2, repeats=99), table, "networks", rr, networks=True) == rr
    for changed, kept in (({"rounds": 3}, rr), ({"warmup": 2, "rounds": 2}, rr), ({"rounds": 2}, one_by_one),
                          ({"max_seconds": 1.0}, one_by_one)):
        with pytest.raises(TimingSettingsError, match=next(iter(changed))):
            check_timing(backend(**changed), table, "networks", kept, networks=True)


def test_an_adapt_resumed_with_other_rounds_is_refused(tmp_path, space):
    """A killed adapt timed its networks one after another; resumed round-robin, it would fit on both."""
    from hwnas.latency.backends import OnnxRuntimeCPU

    class Here(OnnxRuntimeCPU):  # the shipped table's setup (canary, thread clock), its reference fixed
        def calibrate_canary(self, runs: int = 200) -> float:
            self.canary_ref_ms = 1.0
            return 1.0

    source = LatencyTable.load(default_table_path("onnxruntime_cpu", SPACE), space=SPACE)
    out = tmp_path / "here.adapted.csv"

    class Kill(Exception):
        pass

    def kill(rec):
        raise Kill
    settings = {**TINY, "canary": True, "clock": "thread"}
    with pytest.raises(Kill):
        adapt(Here(**settings), space, source, out, 2, progress=False, on_network=kill)
    before = read_networks(networks_path(partial_path(out)))
    assert len(before) == 1
    with pytest.raises(TimingSettingsError, match=r"rounds=0; this run times with rounds=2.*target\.rounds=0, "):
        adapt(Here(**{**settings, "rounds": 2}), space, source, out, 2, progress=False)
    assert read_networks(networks_path(partial_path(out))) == before and not out.exists()


def test_rows_and_provenance_written_apart_are_refused_on_load_and_the_rerun_repairs(
        tmp_path, finished, space, s0, monkeypatch):
    """A profile killed while it replaces a table, between its provenance and its rows: `load` refuses the
    pair (a search would otherwise predict with rows under another correction), naming the file and the
    command; that command finishes the promotion. Tables written before the digest load as they are."""
    import hwnas.latency.table as table_mod
    path = copy_table(finished, tmp_path)
    table = LatencyTable.load(path)
    stale = next(iter(table.rows))
    table.rows[stale]["fingerprint"] = "0" * 16  # measured with other code: the rerun times it again
    table.save()
    prov = json.loads(path.with_suffix(".json").read_text())
    del prov["rows_sha256"]  # a table written before the digest was: the first profile over it is covered too
    path.with_suffix(".json").write_text(json.dumps(prov))

    class Kill(Exception):
        pass
    real, written = table_mod.atomic_write_text, []

    def kill_between(p, text):
        if Path(p).parent == tmp_path and Path(p).stem == "t":  # the final table's own two files
            if written:
                raise Kill
            written.append(p)
        real(p, text)
    monkeypatch.setattr(table_mod, "atomic_write_text", kill_between)
    with pytest.raises(Kill):
        run_profile(backend(), space, path, archs=[s0], n_fit=0, progress=False)
    monkeypatch.undo()
    with pytest.raises(LatencyTableError) as e:
        LatencyTable.load(path)
    msg = str(e.value)
    assert "\n" not in msg and f"latency table {path} does not hold the rows its provenance t.json describes" in msg
    assert f"python -m hwnas.profile +target=onnxruntime_cpu space={SPACE} out={path}" in msg

    run_profile(backend(), space, path, archs=[s0], n_fit=0, progress=False)  # resumes: promotes again
    t = LatencyTable.load(path, space=SPACE)
    assert t.rows[stale]["fingerprint"] != "0" * 16 and not partial_path(path).exists()
    assert t.predict(s0) > 0

    shipped = [p for p in TABLES_DIR.glob("*/*.csv") if not p.name.endswith(".networks.csv")]
    assert shipped and all(LatencyTable.load(p).rows for p in shipped)  # no digest: loaded as before
