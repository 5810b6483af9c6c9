"""Search internals in-process: arch <-> params, slimming actions, Pareto/hypervolume, and small
real searches (Optuna + SQLite + the shipped ONNX Runtime table) with a cached toy evaluator."""
from __future__ import annotations

import itertools
import json
import os
import random
import re

import numpy as np
import pytest
import yaml

import search_spaces
from search_spaces import Arch, ArchError
from hwnas.search import codec, dominates, hypervolume, non_dominated, slimming_actions

# extra overrides for every composed config (empty in CI; a developer may point Hydra elsewhere)
EXTRA = os.environ.get("HWNAS_TEST_SEARCH_OVERRIDES", "").split()


# ---- arch <-> Optuna parameters ----------------------------------------------------------------
def test_encode_decode_round_trips(space_name):
    space = search_spaces.get_space(space_name)
    archs = [space.max_arch(), space.min_arch(), *space.references().values(), *space.sample_many(200, 1)]
    for arch in archs:
        params = codec.encode(arch, space)
        assert set(params) == set(codec.distributions(space))
        assert codec.decode(params, space) == arch


def test_random_parameters_decode_or_fail_clearly(space_name):
    space = search_spaces.get_space(space_name)
    dists = codec.distributions(space)
    rng = random.Random(0)
    ok = 0
    for _ in range(500):
        params = {k: rng.choice(d.choices) for k, d in dists.items()}
        try:
            arch = codec.decode(params, space)
        except ArchError as e:
            assert "stages[" in str(e)
            continue
        space.validate(arch)
        ok += 1
    assert ok >= 450  # repairs keep almost every sample in the space


def test_decode_repairs_attention_count_and_rejects_an_empty_stage():
    space = search_spaces.get_space("efficientformerv2")
    params = codec.encode(space.max_arch(), space)
    params["s3.e9"] = 0  # L's last stage-3 attention position dropped: 5 attention blocks remain
    assert codec.decode(params, space).stages[3]["attn"] == 5
    for p in range(5):
        params[f"s0.e{p}"] = 0
    with pytest.raises(ArchError, match=r"stages\[0\].expansion"):
        codec.decode(params, space)


# ---- slimming actions -------------------------------------------------------------------------
def test_slimming_actions_are_valid_single_step_reductions(space_name):
    space = search_spaces.get_space(space_name)
    for arch in [space.max_arch(), *space.sample_many(20, 3)]:
        actions = slimming_actions(space, arch)
        assert actions
        for a in actions:
            space.validate(a.arch)
            changed = [s for s in range(4) if a.arch.stages[s] != arch.stages[s]]
            assert len(changed) == 1 and a.name.startswith(f"s{changed[0]}.")
            assert a.arch.macs() < arch.macs() or a.arch.params() < arch.params(), a.name


def test_slimming_reaches_the_smallest_arch(space_name):
    space = search_spaces.get_space(space_name)
    arch, rng = space.max_arch(), random.Random(0)
    for _ in range(500):
        actions = slimming_actions(space, arch)
        if not actions:
            break
        arch = rng.choice(actions).arch
    assert not slimming_actions(space, arch)
    assert arch.params() == space.min_arch().params()


def test_efficientformerv2_action_kinds():
    space = search_spaces.get_space("efficientformerv2")
    names = [a.name for a in slimming_actions(space, space.max_arch())]
    assert "s3.width 384->336" in names and "s2.drop[0]" in names
    assert "s2.expansion[0] 4->3" in names and "s3.attn 6->5" in names
    dropped = next(a for a in slimming_actions(space, space.max_arch()) if a.name == "s3.drop[9]")
    assert dropped.arch.stages[3]["attn"] == 5  # dropping an attention block takes one attention


# ---- Pareto / hypervolume -----------------------------------------------------------------------
def test_non_dominated_matches_brute_force():
    rng = np.random.default_rng(0)
    dirs = ["maximize", "minimize", "minimize"]
    pts = rng.integers(0, 6, size=(80, 3)).tolist()
    front = set(non_dominated(pts, dirs))
    for i, p in enumerate(pts):
        assert (i in front) == (not any(dominates(q, p, dirs) for q in pts))


def test_hypervolume_known_values():
    mm = ["minimize", "minimize"]
    assert hypervolume([[1, 1]], [2, 2], mm) == pytest.approx(1)
    assert hypervolume([[0, 2], [1, 1], [2, 0]], [3, 3], mm) == pytest.approx(6)
    assert hypervolume([[0, 2], [1, 1], [2, 0], [2, 2]], [3, 3], mm) == pytest.approx(6)
    # maximise accuracy, minimise latency: points (acc 90, 1 ms) and (80, 0.5 ms), ref (0, 2)
    assert hypervolume([[90, 1], [80, 0.5]], [0, 2], ["maximize", "minimize"]) == pytest.approx(
        90 * 1 + 80 * 0.5)
    mmm = ["minimize"] * 3
    assert hypervolume([[0, 0, 0]], [1, 2, 3], mmm) == pytest.approx(6)
    pts = [[0, 1, 1], [1, 0, 1], [1, 1, 0]]  # three 2x1x1 boxes overlapping in one unit cube
    assert hypervolume(pts, [2, 2, 2], mmm) == pytest.approx(3 * 2 - 3 * 1 + 1)  # inclusion-exclusion
    rng = np.random.default_rng(1)  # Monte-Carlo cross-check in 3-D
    pts = rng.random((12, 3)).tolist()
    samples = rng.random((200_000, 3))
    dominated = np.zeros(len(samples), bool)
    for p in pts:
        dominated |= np.all(samples >= p, axis=1)
    assert hypervolume(pts, [1, 1, 1], mmm) == pytest.approx(dominated.mean(), abs=0.01)


# ---- small real searches --------------------------------------------------------------------------
def _compose(*overrides):
    from hwnas.search.app import compose_config
    return compose_config(["+target=onnxruntime_cpu", "evaluator=proxy", "progress=false", *EXTRA,
                           *overrides])


def _pareto_rows(path):
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


def test_nsga2_front_is_non_dominated_and_picks_meet_their_references(tmp_path, counting_proxy):
    from hwnas.search.app import run
    cfg = _compose("search=nsga2", "search.n_trials=48", "search.population_size=12",
                   "search.seed_archs=[]")
    out = run(cfg, tmp_path)
    for name in ("trials.csv", "pareto.csv", "pareto.png", "picks.yaml", "report.md"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(out["records"]) == 48
    assert all(n == 1 for n in counting_proxy.values())  # each arch evaluated once (cache)
    front = _pareto_rows(tmp_path / "pareto.csv")
    pts = [[float(r["accuracy"]), float(r["latency_ms"]), float(r["params"])] for r in front]
    dirs = ["maximize", "minimize", "minimize"]
    assert pts and not any(dominates(a, b, dirs) for a, b in itertools.permutations(pts, 2))
    picks = yaml.safe_load((tmp_path / "picks.yaml").read_text())
    assert set(picks) == set(search_spaces.get_space("efficientformerv2").reference_names)
    found = 0
    for name, entry in picks.items():
        if entry["pick"] is None:
            continue
        found += 1
        ref, pick = entry["reference"], entry["pick"]
        assert pick["latency_ms"] <= ref["latency_ms"] and pick["params"] <= ref["params"]
        arch = Arch.from_dict(pick["arch"])
        assert arch.id == pick["arch_id"] and arch.params() == pick["params"]
    assert found >= 2
    report = (tmp_path / "report.md").read_text()
    assert "proxy score" in report and "224×224" in report
    # the table each target was predicted with, for `hwnas.extract run=` (absolute: the shipped one here)
    from hwnas.latency.predict import shipped_tables
    shipped = [p for p in shipped_tables() if p.parent.name == "onnxruntime_cpu"]
    assert json.loads((tmp_path / "latency_source.json").read_text()) == {"onnxruntime_cpu": str(shipped[0].resolve())}


def test_budget_is_an_optuna_constraint(tmp_path):
    from hwnas.search.app import run
    cfg = _compose("search=tpe", "search.n_trials=30", "budget.latency_ms=20", "budget.params_m=8")
    out = run(cfg, tmp_path)
    trials = [t for t in out["study"].trials if t.state.name == "COMPLETE"]
    assert all(set(t.constraints) == {"latency", "params"} for t in trials)
    for r in out["records"]:
        assert r["feasible"] == (r["latency_ms"] <= 20 and r["params"] <= 8e6)
    assert all(float(r["latency_ms"]) <= 20 and float(r["params"]) <= 8e6
               for r in _pareto_rows(tmp_path / "pareto.csv"))


def test_every_pick_meets_the_budget_and_the_summary_counts_the_archs_that_do(tmp_path, capsys):
    from hwnas.search.app import run
    from hwnas.search.report import build_picks
    cfg = _compose("search=random", "search.n_trials=40", "budget.latency_ms=15", "budget.params_m=6")
    out = run(cfg, tmp_path)
    records, refs = out["records"], out["references"]
    # the budget binds: without it, some reference's pick would be over it
    free = build_picks(records, refs, ["onnxruntime_cpu"])
    assert any(e["pick"] and (e["pick"]["latency_ms"] > 15 or e["pick"]["params"] > 6e6) for e in free.values())
    for name, e in out["picks"].items():
        p = e["pick"]
        if p is not None:
            assert p["latency_ms"] <= min(15, refs[name]["latency_ms"]) and p["params"] <= min(6e6, refs[name]["params"])
    assert any(e["pick"] is not None for e in out["picks"].values())
    within = {r["arch_id"] for r in records if r["latency_ms"] <= 15 and r["params"] <= 6e6}
    n = len({r["arch_id"] for r in records})
    printed = capsys.readouterr().out
    assert f"budget: latency ≤ 15 ms, params ≤ 6 M; {len(within)} of {n} distinct archs found meet it" in printed
    report = (tmp_path / "report.md").read_text()
    assert f"**{len(within)} of {n}** distinct archs found meet it" in report
    assert "every pick below meets it too" in report and "invalid (pruned" in report


def test_a_budget_no_arch_meets_gives_no_pick_and_says_so(tmp_path, capsys):
    from hwnas.search.app import run
    out = run(_compose("search=random", "search.n_trials=12", "budget.latency_ms=0.0001"), tmp_path)
    assert all(e["pick"] is None for e in out["picks"].values())
    printed = capsys.readouterr().out
    fastest = min(r["latency_ms"] for r in out["records"])
    assert f"0 of {len({r['arch_id'] for r in out['records']})} distinct archs found meet it" in printed
    assert f"(the fastest found: {fastest:.3f} ms" in printed
    assert printed.count("none within the budget") == len(out["references"])
    assert "Pareto front (within the budget): 0 archs" in (tmp_path / "report.md").read_text()


def test_a_rerun_of_a_complete_study_says_nothing_new_ran(tmp_path, capsys):
    from hwnas.search.app import run
    first = run(_compose("search=random", "search.n_trials=5"), tmp_path)
    assert "already holds" not in capsys.readouterr().err
    again = run(_compose("search=random", "search.n_trials=5", "seed=1"), tmp_path)
    assert [r["arch_id"] for r in again["records"]] == [r["arch_id"] for r in first["records"]]
    assert ("note: study 'onnxruntime_cpu-efficientformerv2-random' already holds 5 completed trials "
            "(search.n_trials=5): nothing new runs") in capsys.readouterr().err
    run(_compose("search=random", "search.n_trials=7", "seed=1"), tmp_path)  # more trials: it resumes, no note
    assert "already holds" not in capsys.readouterr().err


def test_a_study_keeps_its_budget(tmp_path):
    from hwnas.search.app import SearchError, run
    run(_compose("search=random", "search.n_trials=6", "budget.latency_ms=15"), tmp_path)
    again = run(_compose("search=random", "search.n_trials=8", "budget.latency_ms=15"), tmp_path)  # resumes
    assert len(again["records"]) == 8
    for other in (["budget.latency_ms=5"], ["budget.latency_ms=15", "budget.params_m=6"], []):
        with pytest.raises(SearchError, match=r"searched under the budget latency on onnxruntime_cpu <= 15(\.0)? ms; "
                                              r"this run asks for .*search in another folder \(hydra.run.dir="):
            run(_compose("search=random", "search.n_trials=8", *other), tmp_path)
    # another folder is another study
    assert len(run(_compose("search=random", "search.n_trials=3", "budget.latency_ms=5"), tmp_path / "b5")["records"]) == 3


def _slower_table(folder):
    """The shipped ONNX Runtime table with every row timed twice as slow (a user's own table, say)."""
    import csv
    import shutil
    from hwnas.latency import default_table_path
    src = default_table_path("onnxruntime_cpu", "efficientformerv2")
    dst = folder / "onnxruntime_cpu" / "slow-cpu.csv"
    dst.parent.mkdir(parents=True)
    with open(src) as f:
        rows = list(csv.reader(f))
    with open(dst, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(rows[0])
        w.writerows([r[0], f"{2 * float(r[1]):.6g}", f"{2 * float(r[2]):.6g}", *r[3:]] for r in rows[1:])
    for suffix in (".json", ".networks.csv"):
        shutil.copyfile(src.with_name(src.stem + suffix), dst.with_name(dst.stem + suffix))
    return dst


def test_a_table_without_a_correction_is_searched_with_a_warning(tmp_path, capsys):
    """A profile with n_fit=0 (or one stopped before its fit networks) has rows and no correction: its
    latencies are raw sums, which the search used without a word."""
    from hwnas.search.app import run
    table = _slower_table(tmp_path / "tables")
    prov = json.loads(table.with_suffix(".json").read_text())
    prov["correction"].pop("efficientformerv2")
    prov["complete"]["efficientformerv2"] = False
    table.with_suffix(".json").write_text(json.dumps(prov))
    run(_compose(f"target.table={table}", "search=random", "search.n_trials=3"), tmp_path / "s")
    assert f"NO CORRECTION: {table} has no whole-network correction for efficientformerv2" in capsys.readouterr().out
    assert "NO CORRECTION" in (tmp_path / "s" / "report.md").read_text()


def test_a_study_keeps_its_cost_model_and_the_folder_its_records(tmp_path):
    from hwnas.search.app import SearchError, run
    out = tmp_path / "s"
    run(_compose("search=random", "search.n_trials=6"), out)
    before = {f: (out / f).read_bytes() for f in ("latency_source.json", "report.md", "picks.yaml", "trials.csv")}
    slow = _slower_table(tmp_path / "tables")
    for other in ([f"target.table={slow}"], ["deploy_num_classes=10"], ["+target.mes.u_latency_ms=2"]):
        with pytest.raises(SearchError, match=r"holds trials priced by another cost model \(trial \d+, arch \w+, was "
                                              r"stored with \w+=.*; it was searched with onnxruntime_cpu: .*amd-epyc.csv"):
            run(_compose("search=random", "search.n_trials=12", *other), out)
    assert all((out / f).read_bytes() == b for f, b in before.items())  # refused before anything was written
    again = run(_compose("search=random", "search.n_trials=9"), out)  # the same settings resume it
    assert len(again["records"]) == 9
    # another study (here another strategy) into that folder would replace its outputs: refused
    with pytest.raises(SearchError, match=r"holds the outputs of study 'onnxruntime_cpu-efficientformerv2-random'; "
                                          r"this search is study 'onnxruntime_cpu-efficientformerv2-tpe'"):
        run(_compose("search=tpe", "search.n_trials=4"), out)
    assert len(run(_compose(f"target.table={slow}", "search=random", "search.n_trials=4"),
                   tmp_path / "slow")["records"]) == 4  # in a folder of its own it runs


def test_mes_greedy_slims_until_the_budget_holds_and_resumes_from_the_study(tmp_path, counting_proxy):
    from hwnas.search.app import run
    cfg = _compose("search=mes_greedy", "search.candidates_per_step=6", "references=[efficientformerv2_s2]")
    out = run(cfg, tmp_path)
    path = out["greedy_path"]
    ref = out["references"]["efficientformerv2_s2"]
    assert path[0]["action"] == "start" and len(path) > 2
    assert all(b["mes"] > a["mes"] for a, b in zip(path, path[1:]))
    last = path[-1]
    assert last["latency_ms"] <= ref["latency_ms"] and last["params"] <= ref["params"]
    assert all(a["latency_ms"] > ref["latency_ms"] or a["params"] > ref["params"] for a in path[:-1])
    assert (tmp_path / "greedy_path.csv").exists()
    n_trials, evaluated = len(out["records"]), dict(counting_proxy)
    again = run(cfg, tmp_path)  # same study: the path replays from cached accuracies
    assert [s["arch_id"] for s in again["greedy_path"]] == [s["arch_id"] for s in path]
    assert len(again["records"]) == n_trials and counting_proxy == evaluated


def test_a_study_resumes_on_a_rebuilt_supernet_of_the_same_weights(tmp_path):
    """Issue 18, 4: the study's fingerprint is what determines its accuracies (the supernet's weights,
    the evaluator, the data), not the checkpoint file, which also holds the training's timings: a
    supernet saved again with the same weights and other timings resumes the study; other weights
    are refused."""
    import torch
    import supernet
    from hwnas.checkpoint import save_supernet
    from hwnas.search.app import SearchError, compose_config, run
    torch.manual_seed(0)
    net = supernet.build_supernet("efficientformerv2", num_classes=10, resolution=32)
    first, rebuilt, other = tmp_path / "first.pt", tmp_path / "rebuilt.pt", tmp_path / "other.pt"
    save_supernet(net, first, {"history": [{"epoch": 1, "seconds": 61.2}]})
    save_supernet(net, rebuilt, {"history": [{"epoch": 1, "seconds": 58.9}]})  # the same weights, retrained
    assert first.read_bytes() != rebuilt.read_bytes()
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] += 1e-3  # one weight of millions
    save_supernet(net, other, {"history": [{"epoch": 1, "seconds": 61.2}]})

    def search(ckpt, n):
        return run(compose_config([
            "+target=onnxruntime_cpu", "progress=false", "evaluator=supernet", "evaluator.recalib_batches=1",
            "evaluator.max_val_batches=1", "evaluator.batch_size=8", "data.limit_train=16", "search=random",
            f"search.n_trials={n}", "search.seed_archs=[]", "references=[efficientformerv2_s0]",
            f"checkpoint={ckpt}", *EXTRA]), tmp_path / "run")

    search(first, 1)
    out = search(rebuilt, 2)  # resumed: one trial more, not refused as "another checkpoint"
    assert [t.state.name for t in out["study"].trials] == ["COMPLETE", "COMPLETE"]
    with pytest.raises(SearchError, match="evaluated with another checkpoint, evaluator or data"):
        search(other, 3)


def test_a_search_on_a_consistent_only_supernet_covers_the_consistent_archs_only(tmp_path, capsys):
    """Issue 25: a Next-ViT supernet trained with train.consistent_only trained 0.175 % of the space's archs
    and knows nothing of the rest: a search scoring with it (or with a predictor fitted on its pairs) walks
    the consistent archs only, says so in the console, the summary and report.md, and keeps a study of its
    own; the same supernet without the flag searches the whole space."""
    import torch
    import search_spaces
    import supernet
    from hwnas.checkpoint import save_supernet
    from hwnas.predictor import AccuracyPredictor
    from hwnas.search.app import CONSISTENT_NOTE, compose_config, run
    from search_spaces import Arch
    torch.manual_seed(0)
    space = search_spaces.get_space("nextvit")
    net = supernet.build_supernet("nextvit", num_classes=10, resolution=32)
    note = CONSISTENT_NOTE.format(space="nextvit")
    for flag in (True, False):
        ckpt = tmp_path / f"nv_{flag}.pt"
        save_supernet(net, ckpt, {"config": {"train": {"consistent_only": flag}}})
        out = run(compose_config([
            "+target=coreml", "space=nextvit", "progress=false", "evaluator=supernet", "evaluator.recalib_batches=1",
            "evaluator.max_val_batches=1", "evaluator.batch_size=8", "data.limit_train=16", "search=random",
            "search.n_trials=4", "search.seed_archs=[min]", "references=[nextvit_s]", f"checkpoint={ckpt}", *EXTRA]),
            tmp_path / f"run_{flag}")
        archs = [Arch.from_dict(json.loads(r["arch"])) for r in out["records"]]
        captured = capsys.readouterr()
        report = (tmp_path / f"run_{flag}" / "report.md").read_text()
        record = json.loads((tmp_path / f"run_{flag}" / "accuracy_source.json").read_text())
        assert len(archs) == 4 and record["consistent_only"] is flag
        if flag:
            assert all(space.is_consistent(a) for a in archs) and space.min_consistent_arch() in archs
            assert f"note: {note}" in captured.err and f"  archs: {note}" in captured.out
            assert f"- **archs searched**: {note}." in report and out["study"].study_name.endswith("-consistent-random")
        else:
            assert space.min_arch() in archs and not all(space.is_consistent(a) for a in archs)
            assert note not in captured.err + captured.out + report
            assert "-consistent" not in out["study"].study_name
    # a predictor fitted on such a supernet's pairs says so, and a search on it is restricted the same way
    doc = json.loads(json.dumps(AccuracyPredictor.shipped("nextvit").doc))
    doc["provenance"]["consistent_only"] = False
    assert AccuracyPredictor(doc).consistent_only is False
    doc["provenance"]["consistent_only"] = True
    (tmp_path / "pred.json").write_text(json.dumps(doc))
    out = run(compose_config(["+target=coreml", "space=nextvit", "progress=false", f"evaluator.path={tmp_path / 'pred.json'}",
                              "search=random", "search.n_trials=5", "search.seed_archs=[]", *EXTRA]), tmp_path / "pred")
    assert all(space.is_consistent(Arch.from_dict(json.loads(r["arch"]))) for r in out["records"])
    assert f"  archs: {note}" in capsys.readouterr().out


def test_a_worker_reading_a_new_study_between_anothers_writes_accepts_it(tmp_path):
    """Workers starting together on one new study: one reads the study while the other is between
    the writes that give it its meaning (objectives, accuracy source); both go on."""
    import optuna

    from hwnas.search import study as study_mod
    from hwnas.search.app import AccuracySource, _check_study
    url, objectives = f"sqlite:///{tmp_path / 'study.db'}", ["accuracy", "latency"]
    acc = AccuracySource(None, "proxy", None, "proxy")
    other = study_mod.open_study(url, "s", ["maximize", "minimize"], optuna.samplers.RandomSampler(seed=1))
    raced = []

    class Racing(study_mod.OwnedTrialStorage):
        def set_study_user_attr(self, study_id, key, value):
            super().set_study_user_attr(study_id, key, value)
            if not raced:  # the other worker reads the study right after this one's first write
                raced.append(key)
                _check_study(other, objectives, acc, url, "s")

    study = optuna.load_study(study_name="s", storage=Racing(study_mod.sqlite_storage(url), url))
    _check_study(study, objectives, acc, url, "s")
    assert raced and study.user_attrs == {"objectives": objectives, "accuracy_source": "proxy"}
    _check_study(other, objectives, acc, url, "s")  # and later readers


def test_a_search_on_a_table_lacking_rows_skips_the_archs_that_need_them(tmp_path):
    """A table without some blocks' rows (the shipped torch_cuda table lacks the NTB variants of
    issue 17 until the GPU measures them) still searches the archs it covers: the others are
    infeasible trials, and the report says which rows are missing and how to fill them."""
    from hwnas.latency import LatencyTable, default_table_path
    from hwnas.search.app import compose_config, run
    from hwnas.search.study import INFEASIBLE_ATTR
    tables = tmp_path / "tables" / "onnxruntime_cpu"
    tables.mkdir(parents=True)
    src = default_table_path("onnxruntime_cpu", "nextvit")
    table = LatencyTable.load(src)
    space = search_spaces.get_space("nextvit")
    dropped = {s.key for s in space.all_blocks() if s.kind == "nextvit.ntb" and s["out"] - s["mhsa"] == 0}
    rows = {k: v for k, v in table.rows.items() if k not in dropped}  # no r = 1 NTB at all
    prov = dict(table.provenance, complete=dict(table.provenance["complete"], nextvit=False),
                missing_rows={"nextvit": {"why": "dropped by this test"}})
    LatencyTable(rows, prov, tables / "amd-epyc.csv", check=False).save()
    (tables / "amd-epyc.networks.csv").write_text((src.with_name("amd-epyc.networks.csv")).read_text())
    cfg = compose_config(["+target=onnxruntime_cpu", "evaluator=proxy", "progress=false", *EXTRA, "space=nextvit",
                          "search=random", "search.n_trials=6", f"target.tables_dir={tmp_path / 'tables'}",
                          "references=[nextvit_s]"])
    out = run(cfg, tmp_path / "search")
    assert len(out["records"]) == 6
    for r in out["records"]:  # every completed trial is an arch the table covers
        assert not {b.key for b in Arch.from_dict(json.loads(r["arch"])).blocks()} & dropped
    skipped = [t for t in out["study"].trials if INFEASIBLE_ATTR in t.user_attrs]
    assert skipped and all("no latency row" in t.user_attrs[INFEASIBLE_ATTR] for t in skipped)
    report = (tmp_path / "search" / "report.md").read_text()
    assert "INCOMPLETE TABLE" in report and "dropped by this test" in report


class _NaNAfter:
    """An evaluator (a broken predictor or supernet) that gives NaN from its `good`-th arch on."""
    label, resolution, path = "nan test evaluator", None, "nan-test-evaluator.json"

    def __init__(self, good: int, bad: float = float("nan")):
        self.good, self.bad, self.calls = good, bad, 0

    def evaluate(self, arch) -> float:
        self.calls += 1
        if self.calls > 50:  # without the check the search would ask for archs forever
            raise AssertionError("the search kept asking after NaN accuracies")
        return self.bad if self.calls > self.good else 50.0


@pytest.mark.parametrize("strategy, bad", [("random", float("nan")), ("mes_greedy", float("nan")),
                                           ("random", 500.27), ("random", -5.7e306)])
def test_a_nan_accuracy_stops_the_search_naming_the_source(tmp_path, strategy, bad):
    """Issue 24: a NaN accuracy was a failed trial, which does not count toward n_trials, so the search
    asked for another forever. Now it stops at the first one, naming the source and the arch; as does a
    'top-1' outside 0-100 % (a predictor file gave 500 %)."""
    from hwnas.search.app import AccuracySource, run
    from hwnas.search.objectives import EvaluatorError
    ev = _NaNAfter(good=2, bad=bad)
    size = "search.n_trials=6" if strategy == "random" else "search.candidates_per_step=6"
    cfg = _compose(f"search={strategy}", size, "references=[efficientformerv2_s1]")
    with pytest.raises(EvaluatorError, match=rf"nan-test-evaluator.json\) returned {re.escape(str(bad))} for arch "
                                             r".*no top-1 % \(a number in \[0, 100\]\), so the search stops"):
        run(cfg, tmp_path, accuracy=AccuracySource(ev, ev.label, None, "nan-test"))
    assert ev.calls == 3


def test_run_trials_refuses_non_finite_objective_values(tmp_path):
    """Whatever produced it (an evaluator, a latency table), a trial with a NaN or inf objective ends
    the run with an error instead of a failed trial that never counts."""
    import optuna
    from hwnas.search.study import NonFiniteObjective, run_trials
    study = optuna.create_study(directions=["maximize", "minimize"], storage=f"sqlite:///{tmp_path / 's.db'}")
    calls = []

    def objective(trial):
        calls.append(trial.number)
        if len(calls) > 20:
            raise AssertionError("run_trials kept asking after a non-finite objective")
        return [1.0, float("inf") if len(calls) == 3 else 2.0]

    with pytest.raises(NonFiniteObjective, match=r"trial 2 .* \[1\.0, inf\] are not all numbers"):
        run_trials(study, 5, objective, progress=False)
    assert len(calls) == 3 and [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "FAIL"]


def test_a_search_that_finds_nothing_to_score_stops_instead_of_asking_forever(tmp_path):
    import optuna
    from hwnas.search.study import Infeasible, NothingToScore, pruned_limit, run_trials
    study = optuna.create_study(directions=["maximize"], storage=f"sqlite:///{tmp_path / 's.db'}")
    calls = []

    def objective(trial):  # one scorable arch, then none (a table of a few archs)
        calls.append(trial.number)
        if len(calls) > pruned_limit(3) + 10:
            raise AssertionError("run_trials kept asking")
        if len(calls) == 1:
            return [1.0]
        raise Infeasible("no latency row for 3 block(s) of this arch on this target, e.g. k")

    with pytest.raises(NothingToScore, match=r"200 trials in a row of study .* with 1 of 3 completed \(the last: "
                                             r"no latency row for 3 block"):
        run_trials(study, 3, objective, progress=False)
    assert len(calls) == 1 + pruned_limit(3) == 201
    # a pruned run broken by a completed trial starts the count again
    study2 = optuna.create_study(directions=["maximize"], storage=f"sqlite:///{tmp_path / 's2.db'}")
    calls.clear()

    def every_150th(trial):
        calls.append(trial.number)
        if len(calls) % 150:
            raise Infeasible("no arch")
        return [1.0]

    assert run_trials(study2, 2, every_150th, progress=False) == 2 and len(calls) == 300
