"""One search for several targets (targets=[...]): one accuracy and size per arch, one latency and
MES per target, per-target budgets, fronts and picks across targets -- real searches on the shipped
latency tables (Optuna + SQLite), with the proxy evaluator."""
from __future__ import annotations

import csv
import itertools
import json

import pytest
import yaml

import search_spaces
from search_spaces import Arch
from hwnas.errors import HwnasError
from hwnas.search import dominates

THREE = ["coreml", "onnxruntime_cpu", "torch_cuda"]
ONE_TARGET_COLUMNS = ["number", "arch_id", "accuracy", "latency_ms", "params", "macs", "mes", "feasible",
                      "repaired", "greedy_step", "greedy_action", "arch"]


def _compose(*overrides):
    from hwnas.search.app import compose_config
    return compose_config(["evaluator=proxy", "progress=false", *overrides])


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _tables():
    from hwnas.latency import LatencyTable, default_table_path
    from hwnas.latency.backends import this_device
    return {t: LatencyTable.load(default_table_path(t, "efficientformerv2", None, this_device=this_device(t)),
                                 target=t, space="efficientformerv2") for t in THREE}


def test_three_target_front_is_non_dominated_and_picks_meet_every_target(tmp_path, counting_proxy):
    from hwnas.search.app import run
    out = run(_compose(f"targets=[{','.join(THREE)}]", "search.n_trials=40", "search.population_size=10"),
              tmp_path)
    assert out["study"].metric_names == ["accuracy", *(f"latency.{t}" for t in THREE), "params"]
    assert len(out["records"]) == 40
    assert all(n == 1 for n in counting_proxy.values())  # one accuracy per arch, whatever the targets

    trials = _rows(tmp_path / "trials.csv")
    lat_cols = [f"latency_ms.{t}" for t in THREE]
    assert list(trials[0]) == ["number", "arch_id", "accuracy", *lat_cols, "params", "macs", "mes",
                               *(f"mes.{t}" for t in THREE), "feasible", "repaired", "greedy_step",
                               "greedy_action", "arch"]
    tables = _tables()
    for r in trials[:10]:  # each column is that target's table, for the same arch
        arch = Arch.from_dict(json.loads(r["arch"]))
        for t in THREE:
            assert float(r[f"latency_ms.{t}"]) == pytest.approx(tables[t].predict(arch), rel=1e-12)
        assert float(r["mes"]) == pytest.approx(min(float(r[f"mes.{t}"]) for t in THREE), rel=1e-12)

    front = _rows(tmp_path / "pareto.csv")
    dirs = ["maximize"] + ["minimize"] * 4
    pts = [[float(r["accuracy"]), *(float(r[c]) for c in lat_cols), float(r["params"])] for r in front]
    assert len(pts) >= 5
    assert not any(dominates(a, b, dirs) for a, b in itertools.permutations(pts, 2))
    # ... and no completed trial dominates a front point
    everyone = [[float(r["accuracy"]), *(float(r[c]) for c in lat_cols), float(r["params"])] for r in trials]
    assert not any(dominates(a, b, dirs) for a in everyone for b in pts)

    picks = yaml.safe_load((tmp_path / "picks.yaml").read_text())
    assert set(picks) == set(search_spaces.get_space("efficientformerv2").reference_names)
    found = 0
    for name, entry in picks.items():
        ref, pick = entry["reference"], entry["pick"]
        assert set(entry["per_target"]) == set(THREE)
        if pick is not None:
            found += 1
            assert all(pick[c] <= ref[c] for c in lat_cols) and pick["params"] <= ref["params"]
            assert Arch.from_dict(pick["arch"]).id == pick["arch_id"]
            for t, q in entry["per_target"].items():  # the best for one target is at least as accurate
                assert q is not None and q["accuracy"] >= pick["accuracy"]
        for t, q in entry["per_target"].items():
            if q is not None:
                assert q[f"latency_ms.{t}"] <= ref[f"latency_ms.{t}"] and q["params"] <= ref["params"]
    assert found >= 2
    report = (tmp_path / "report.md").read_text()
    assert "coreml latency table is ESTIMATED" in report
    assert "## Best per target, and what the cross-target constraint costs" in report
    assert "What the cross-target constraint costs in accuracy" in report
    assert (tmp_path / "pareto.png").stat().st_size > 0


def test_per_target_budgets_are_constraints_on_those_targets_only(tmp_path):
    from hwnas.search.app import run
    out = run(_compose("targets=[coreml,torch_cuda]", "search=tpe", "search.n_trials=24",
                       "budget.latency_ms={coreml:1.0}", "budget.params_m=8"), tmp_path)
    for t in out["study"].trials:
        if t.state.name == "COMPLETE":
            assert set(t.constraints) == {"latency.coreml", "params"}
    for r in out["records"]:
        assert r["feasible"] == (r["latency_ms.coreml"] <= 1.0 and r["params"] <= 8e6)
    assert any(not r["feasible"] for r in out["records"]) and any(r["feasible"] for r in out["records"])
    assert all(float(r["latency_ms.coreml"]) <= 1.0 for r in _rows(tmp_path / "pareto.csv"))


def test_worst_mes_objective_and_target_settings(tmp_path):
    from hwnas.search.app import run
    base = ["targets=[coreml,onnxruntime_cpu]", "search=random", "search.n_trials=8",
            "search.objectives=[accuracy,mes]"]
    out = run(_compose(*base), tmp_path / "a")
    for t in out["study"].trials:
        a = t.user_attrs
        assert t.values[1] == pytest.approx(min(a["mes.coreml"], a["mes.onnxruntime_cpu"]))
        assert a["latency_source.coreml"] == "estimated" and a["latency_source.onnxruntime_cpu"] == "measured"
    # a per-target setting changes that target only: twice the MES unit, twice its MES
    again = run(_compose(*base, "+target_settings.coreml.mes.u_latency_ms=1.8"), tmp_path / "b")
    first = {r["arch_id"]: r for r in out["records"]}
    for r in again["records"]:
        if r["arch_id"] in first:
            assert r["mes.coreml"] == pytest.approx(2 * first[r["arch_id"]]["mes.coreml"])
            assert r["mes.onnxruntime_cpu"] == pytest.approx(first[r["arch_id"]]["mes.onnxruntime_cpu"])


def test_mes_greedy_slims_until_every_target_meets_the_budget(tmp_path):
    from hwnas.search.app import run
    # the max arch already meets the loose Core ML budget (2.7 ms): only the GPU budget makes it slim
    budget = {"coreml": 5.0, "torch_cuda": 1.5}
    out = run(_compose("targets=[coreml,torch_cuda]", "search=mes_greedy", "search.candidates_per_step=6",
                       "budget.latency_ms={coreml:5.0,torch_cuda:1.5}"), tmp_path)
    path = out["greedy_path"]
    assert len(path) > 2 and all(b["mes"] > a["mes"] for a, b in zip(path, path[1:]))
    assert all(path[-1][f"latency_ms.{t}"] <= ms for t, ms in budget.items())
    assert all(any(s[f"latency_ms.{t}"] > ms for t, ms in budget.items()) for s in path[:-1])
    assert "mes_greedy path (MES: the worst across targets)" in (tmp_path / "report.md").read_text()


def test_one_target_keeps_its_columns_and_picks(tmp_path):
    from hwnas.search.app import run
    run(_compose("+target=onnxruntime_cpu", "search=random", "search.n_trials=6"), tmp_path)
    with open(tmp_path / "trials.csv") as f:
        assert next(csv.reader(f)) == ONE_TARGET_COLUMNS
    with open(tmp_path / "pareto.csv") as f:
        assert next(csv.reader(f)) == ONE_TARGET_COLUMNS
    picks = yaml.safe_load((tmp_path / "picks.yaml").read_text())
    for entry in picks.values():
        assert set(entry) == {"reference", "pick"}
        assert set(entry["reference"]) == {"arch_id", "accuracy", "latency_ms", "params", "mes"}
    assert "## Picks vs references" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("overrides, message", [
    (["targets=[coreml,torch_cuda]", "budget.latency_ms=2"], "one budget per target"),
    (["targets=[coreml,torch_cuda]", "budget.latency_ms={onnxruntime_cpu:2}"], "'onnxruntime_cpu' is not a target"),
    (["targets=[coreml,iphone99]"], "unknown target 'iphone99'"),
    (["targets=[coreml,coreml]"], "each target once"),
    (["targets=[coreml,torch_cuda]", "+target=onnxruntime_cpu"], "not both"),
    (["targets=[coreml,torch_cuda]", "+target_settings.tensorrt.batch=1"], "not one of targets"),
    (["targets=[coreml,torch_cuda]", "+target_settings.coreml.batchsize=1"], "target_settings.coreml"),
    # the target's own ranges hold under target_settings as under +target= (a NaN MES constant was searched with)
    (["targets=[coreml,torch_cuda]", "+target_settings.coreml.mes.score=nan"], r"target_settings\.coreml\.mes\.score=nan: must be a finite number > 0"),
    (["targets=[coreml,torch_cuda]", "+target_settings.torch_cuda.batch=0"], r"target_settings\.torch_cuda\.batch=0: must be >= 1"),
])
def test_bad_target_settings_fail_clearly(tmp_path, overrides, message):
    from hwnas.search.app import run
    with pytest.raises(HwnasError, match=message):
        run(_compose("search.n_trials=2", *overrides), tmp_path)
    assert not (tmp_path / "study.db").exists()


def test_the_several_target_report_states_task_input_and_skipped_images(tmp_path):
    """One report for one target and several (issue 26): a backbone search over two targets on an image
    folder with unreadable images says, like a one-target one, the task, the input size and the files
    left out, in report.md and in the printed summary; pareto.png has a panel per target."""
    from hwnas.search.report import ReportContext, TargetReport, summary_text, write_outputs
    lat = {"latency_ms.x": 1.0, "latency_ms.y": 2.0}
    records = [dict(number=0, arch_id="a0", accuracy=50.0, **lat, params=1e6, macs=10, mes=1.0, **{"mes.x": 1.0, "mes.y": 2.0},
                    feasible=True, repaired=False, greedy_step="", greedy_action="", arch="{}")]
    references = {"ref_s": dict(arch_id="r0", accuracy=40.0, **{"latency_ms.x": 2.0, "latency_ms.y": 3.0}, params=2e6,
                                mes=0.5, **{"mes.x": 0.5, "mes.y": 0.6})}
    skipped = {"training": {"/img/train/cat/noise.jpg": "cannot identify image"},
               "evaluation": {"/img/val/dog/cut.png": "truncated"}}
    ctx = ReportContext(targets=[TargetReport(t, f"{t}.csv", f"table {t}.", False, f"MES of {t}") for t in "xy"],
                        space="efficientformerv2", strategy="random",
                        objectives=["accuracy", "latency.x", "latency.y", "params"], resolution=(512, 384),
                        eval_resolution=32, accuracy_label="top-1 % on imagefolder val", num_classes=1000,
                        study_name="s", storage="sqlite:///s.db", task="backbone", skipped_images=skipped)
    picks = write_outputs(tmp_path, records, ctx.objectives, references, ctx)
    assert picks["ref_s"]["pick"]["arch_id"] == "a0" and set(picks["ref_s"]["per_target"]) == {"x", "y"}
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Search report: efficientformerv2 backbone at 512×384 on x, y (random)")
    assert "- **task**: `backbone` -- latency and params are those of the backbone" in report
    assert ("**unreadable images skipped** (data.on_bad_image=skip): 2 file(s) (1 in the supernet's training; "
            "1 in this search's evaluation): `/img/train/cat/noise.jpg`, `/img/val/dog/cut.png`") in report
    assert "What the cross-target constraint costs in accuracy" in report
    summary = summary_text(picks, references, ctx, tmp_path, 1)
    assert "latency/params of the backbone at 512×384" in summary
    assert "data: 2 unreadable image(s) skipped (data.on_bad_image=skip)" in summary
    assert (tmp_path / "pareto.png").stat().st_size > 0
