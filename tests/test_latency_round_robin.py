"""Whole networks timed round-robin (`target.rounds`, `Backend.time_round_robin`): every network sees
the machine's whole drift instead of its own minute.

The drift is faked: a clock that the fake networks advance by their work times the machine's speed at
that moment, a speed that falls steadily over the pass (a shared VM slowing down as neighbours load it).
Timed one after another, the networks timed last look slower than they are; round-robin, each one's p10
comes from the same fast start, so their ratios hold.
"""
from __future__ import annotations

import numpy as np
import pytest

import search_spaces
from hwnas.errors import ConfigError
from hwnas.latency import LatencyTable, default_table_path, get_backend
from hwnas.latency.adapt import adapt, measure_held_out
from hwnas.latency.backends import OnnxRuntimeCPU
from hwnas.latency.correction import kendall_tau
from hwnas.latency.keys import block_keys
from hwnas.latency.profiler import held_out_set, measure_networks
from hwnas.latency.table import networks_path, read_networks

SPACE = "efficientformerv2"


class Clock:
    """Fake time in seconds; `work(ms)` advances it by ms times the speed factor at that moment, which
    rises by `drift` (e.g. 0.3: 30 % slower) per `span` seconds of fake time."""

    def __init__(self, drift: float = 0.3, span: float = 10.0):
        self.t, self.drift, self.span = 0.0, drift, span

    def __call__(self) -> float:
        return self.t

    def work(self, ms: float) -> None:
        self.t += ms * (1 + self.drift * self.t / self.span) / 1e3


class DriftingCPU(OnnxRuntimeCPU):
    """`onnxruntime_cpu` whose networks are callables that spend a known time on the fake clock."""

    def __init__(self, clock: Clock, work_ms, **kw):
        super().__init__(**{"canary": False, "repeats": 30, "min_runs": 30, "max_seconds": 60.0, "warmup": 2, **kw})
        self.fake_clock, self.work_ms, self.log = clock, work_ms, []

    def _timer(self):
        return self.fake_clock

    def prepare(self, model, input_shape):
        self.log.append(("prepare", model.id) if isinstance(model, search_spaces.Arch) else ("prepare_unit", None))
        ms, key = self.work_ms(model), getattr(model, "id", None)

        def run():
            self.log.append(("run", key))
            self.fake_clock.work(ms)
        return run, None

    def measure(self, model, input_shape):  # one after another: the same fake networks through `_time_loop`
        run, fp = self.prepare(model, input_shape)
        return {**self._time_loop(run), "fingerprint": fp}


def test_round_robin_keeps_the_ratios_that_drift_breaks_one_after_another():
    work = {f"n{i}": 10.0 + 0.1 * i for i in range(10)}  # 10.0 ... 10.9 ms, 1 % apart
    order = sorted(work, key=work.get, reverse=True)  # the slowest timed first: drift then flips the order
    seq = DriftingCPU(Clock(), work.get)
    one_by_one = {k: seq.measure(k, (1, 3, 8, 8))["p10_ms"] for k in order}
    rr = DriftingCPU(Clock(), work.get, rounds=20)
    together = rr.time_round_robin({k: rr.prepare(k, (1, 3, 8, 8))[0] for k in order}, rounds=20)
    truth = [work[k] for k in order]
    assert kendall_tau(truth, [one_by_one[k] for k in order]) < 0  # the drift reorders them ...
    assert kendall_tau(truth, [together[k]["p10_ms"] for k in order]) == pytest.approx(1.0)  # ... not here
    def spread(times):
        r = np.array([times[k] / work[k] for k in order])
        return r.max() / r.min() - 1
    assert spread(one_by_one) > 0.05  # the last one timed looks 5+ % slower than the first ...
    assert spread({k: v["p10_ms"] for k, v in together.items()}) < 0.01  # ... round-robin, all on one scale
    assert {r["runs"] for r in together.values()} == {20 * rr.round_robin_runs}
    assert {r["rounds"] for r in together.values()} == {20}


def test_the_canary_scales_a_round_robin_pass_to_its_reference():
    clock = Clock(drift=0.0)
    b = DriftingCPU(clock, lambda k: 10.0, rounds=3, canary=True)
    b.canary_ref_ms = 1.0
    b._canary = lambda: clock.work(2.0)  # the canary runs 2x its reference: the machine is 2x slower now
    out = b.time_round_robin({"a": lambda: clock.work(8.0), "b": lambda: clock.work(4.0)}, rounds=3)
    assert out["a"]["p10_ms"] == pytest.approx(4.0) and out["b"]["p10_ms"] == pytest.approx(2.0)


def test_rounds_are_checked_and_recorded():
    with pytest.raises(ConfigError, match="rounds"):
        get_backend("onnxruntime_cpu", rounds=-1)
    with pytest.raises(ConfigError, match="rounds"):  # another target's schema does not take it
        get_backend("torch_cuda", rounds=5)
    b = get_backend("onnxruntime_cpu", rounds=7)
    assert b.rounds == 7 and b.info()["rounds"] == 7


@pytest.fixture
def no_build(monkeypatch):
    monkeypatch.setattr("hwnas.latency.profiler._build", lambda what, device: what)


def _slower(source, state: dict):
    """The fake device's time of `arch`: 1.7x what the source table predicts, ±1 % by arch, times
    `state["load"]` (a neighbour's memory traffic that slows networks and not the canary)."""
    def ms(arch):
        if not isinstance(arch, search_spaces.Arch):
            return 3.0  # MobileNetV2, the MES unit (timed one by one)
        return 1.7 * state["load"] * source.predict(arch) * (1 + 0.01 * ((sum(map(ord, arch.id)) % 21) / 10 - 1))
    return ms


@pytest.mark.parametrize("anchored", [True, False])
def test_adapt_and_its_held_out_subnets_timed_round_robin_in_groups(tmp_path, no_build, monkeypatch, anchored):
    space = search_spaces.get_space(SPACE)
    source = LatencyTable.load(default_table_path("onnxruntime_cpu", SPACE), target="onnxruntime_cpu", space=SPACE)
    state = {"load": 1.0}
    b = DriftingCPU(Clock(drift=0.05, span=30.0), _slower(source, state), rounds=6, canary=True)
    b.round_robin_group = 5
    b.calibrate_canary = lambda runs=200: setattr(b, "canary_ref_ms", 3.0) or 3.0
    b._canary = lambda: b.fake_clock.work(3.0)
    out = tmp_path / "onnxruntime_cpu" / "here.adapted.csv"
    table = adapt(b, space, source, out, 10, stop_loo=1.0, min_networks=4, progress=False)
    # the stop rule (met as soon as it is checked) is checked after each group of 5, not after the 4th network
    prepared = [x for x in b.log if x[0] == "prepare"]
    assert len(prepared) == 5
    first_run = next(i for i, x in enumerate(b.log) if x[0] == "run")
    assert all(b.log.index(p) < first_run for p in prepared)  # the group is prepared, then timed together
    ids = [x[1] for x in b.log[first_run:first_run + 200] if x[0] == "run" and x[1] is not None]
    assert len(set(ids[-15:])) > 1  # interleaved: no network timed through on its own
    rec = table.provenance["adapted"]["scopes"][SPACE]
    assert rec["networks"] == 5 and "leave-one-out" in rec["stopped_early"]
    assert table.provenance["rounds"] == 6
    nets = [r for r in read_networks(networks_path(table.path)) if r["role"] == "fit"]
    assert {r["runs"] for r in nets} == {6 * b.round_robin_runs}
    # then a neighbour loads the machine: networks run 10 % slower, the canary does not notice
    state["load"] = 1.1
    if not anchored:
        monkeypatch.setattr("hwnas.latency.adapt.held_out_anchors", lambda table, scope: [])
    held = measure_held_out(b, space, table, source, 10, seed=3, progress=False)
    fid = table.provenance["fidelity"][SPACE]
    assert held["adapted"]["n"] == 10 and fid["timing"].startswith("round-robin, 6 rounds, groups of 5")
    if anchored:  # 3 fit networks timed again in each group scale it back to the state of the fit
        assert held["adapted"]["within_5pct"] == 1.0 and "3 of the fit networks as anchors" in fid["timing"]
        assert fid["anchor_factors"] == pytest.approx([1 / 1.1] * 2, rel=0.01)
        assert len([x for x in b.log if x[0] == "prepare"]) == 5 + 2 * (5 + 3)
    else:  # without them the held-out subnets look 10 % slower than the adapted table predicts
        assert held["adapted"]["within_5pct"] == 0.0 and held["adapted"]["mean_signed_pct_error"] < -0.08
        assert len([x for x in b.log if x[0] == "prepare"]) == 5 + 10


def test_real_onnxruntime_sessions_timed_round_robin_keep_their_fingerprints(tmp_path):
    space = search_spaces.get_space(SPACE)
    archs = held_out_set(space, 2, exclude=[], seed=5)
    b = get_backend("onnxruntime_cpu", rounds=3, warmup=1, canary=False)
    recs = measure_networks(b, archs, "fidelity", tmp_path / "n.csv", progress=False)
    assert [r["arch_id"] for r in recs] == [a.id for a in archs]
    assert all(r["runs"] == 3 * b.round_robin_runs and r["p10_ms"] > 0 for r in recs)
    from hwnas.latency.fingerprint import cache_for
    fps = cache_for(b.form)
    assert [r["fingerprint"] for r in recs] == [fps.network(block_keys(a)) for a in archs]
    # written together, and a second call measures nothing again
    again = measure_networks(b, archs, "fidelity", tmp_path / "n.csv", progress=False)
    assert [r["p10_ms"] for r in again] == pytest.approx([r["p10_ms"] for r in recs], rel=1e-5)
