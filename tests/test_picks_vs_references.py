"""experiments/picks_vs_references.py and search_vs_random.py on the CPU at a tiny size: the picks chosen with
the shipped predictor, the GPU command of ranking_fidelity.py training them from the archs file (as the lead
runs it on the H200, here on the CPU), the analysis; and the strategies' statistics."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import picks_vs_references as pvr  # noqa: E402
import search_vs_random as svr  # noqa: E402

import search_spaces  # noqa: E402
from hwnas.latency import LatencyTable, default_table_path  # noqa: E402
from hwnas.predictor import AccuracyPredictor  # noqa: E402

SPACE = "efficientformerv2"


def test_picks_chosen_trained_by_the_gpu_command_and_analysed(tmp_path, fashion_root):
    archs_file = tmp_path / "archs.json"
    chosen = pvr.main(["choose", "--spaces", SPACE, "--n-trials", "40", "--out", str(archs_file)])
    space = search_spaces.get_space(SPACE)
    table = LatencyTable.load(default_table_path("torch_cuda", SPACE), target="torch_cuda", space=SPACE)
    pred = AccuracyPredictor.shipped(SPACE)
    by_key = {c["key"]: c for c in chosen["spaces"][SPACE]}
    assert set(chosen["pairs"][SPACE]) == set(space.reference_names)
    for ref, pair in chosen["pairs"][SPACE].items():
        r, p = by_key[pair["reference"]], by_key[pair["pick"]]
        assert r["key"] == space.reference(ref).id and p["key"] != r["key"]
        pick = search_spaces.Arch.from_dict(p["arch"])
        assert table.predict(pick) == pytest.approx(p["latency_ms"]) and p["latency_ms"] <= r["latency_ms"]
        assert pick.params(1000) == p["params_deploy"] <= r["params_deploy"] and p["params"] == pick.params(10)
        assert p["predicted_top1"] == pytest.approx(pred.evaluate(pick))
    # keep one pair (the smallest reference) so the tiny run trains both with two seeds
    ref = "efficientformerv2_s0"
    pair = chosen["pairs"][SPACE][ref]
    small = dict(chosen, spaces={SPACE: [by_key[pair["reference"]], by_key[pair["pick"]]]}, pairs={SPACE: {ref: pair}})
    archs_file.write_text(json.dumps(small))
    out = tmp_path / "gpu"
    cmd = [sys.executable, str(ROOT / "experiments" / "ranking_fidelity.py"), "gpu", "--variants", "none",
           "--archs", str(archs_file), "--sa-seeds", "0,1", "--sa-epochs", "1", "--sa-batch", "8", "--image-size", "32",
           "--workers", "1", "--repeat-archs", "0", "--out", str(out), "--data-root", str(fashion_root),
           "--device", "cpu", "--spaces", SPACE, "--sa-max-steps", "1", "--val-size", "40", "--eval-batch", "20",
           "--deadline-s", "400", "--work", str(tmp_path / "work")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "plan: 0 supernet(s) [], 4 stand-alone run(s)" in r.stdout
    rep = pvr.main(["analyze", str(out), "--spaces", SPACE, "--archs", str(archs_file), "--out", str(tmp_path)])[SPACE]
    sa = [json.loads(x) for x in (out / "standalone.jsonl").read_text().splitlines()]
    mean = lambda key: sum(x["test_top1"] for x in sa if x["key"] == key) / 2  # noqa: E731
    row = rep["rows"][0]
    assert row["reference_top1"]["seeds"] == [0, 1] and row["pick_top1"]["seeds"] == [0, 1]
    assert row["difference"] == pytest.approx(mean(pair["pick"]) - mean(pair["reference"]))
    assert rep["goal_met"] == (row["difference"] >= 0)
    assert "| efficientformerv2_s0 |" in (tmp_path / f"picks_vs_references_{SPACE}.md").read_text()


def test_search_vs_random_statistics(tmp_path):
    res = svr.main(["--space", SPACE, "--seeds", "3", "--n-trials", "12", "--out", str(tmp_path)])[SPACE]
    from scipy.stats import mannwhitneyu
    for strat in ("nsga2", "tpe", "mes_greedy"):
        p = mannwhitneyu(res["strategies"][strat]["hypervolume"], res["strategies"]["random"]["hypervolume"],
                         alternative="greater", method="exact").pvalue
        assert res["tests_vs_random"][strat]["hypervolume"]["p_value"] == pytest.approx(p)
    for strat, v in res["strategies"].items():
        assert len(v["hypervolume"]) == 3 and max(v["archs_per_run"]) <= 12
        assert all(0 <= h <= 1 for h in v["hypervolume"])
    saved = json.loads((tmp_path / f"search_vs_random_{SPACE}.json").read_text())
    assert saved["predictor"]["digest"] == AccuracyPredictor.shipped(SPACE).digest


@pytest.mark.parametrize("strategy", ["nsga2", "mes_greedy"])
def test_in_memory_runs_evaluate_what_the_search_app_evaluates(tmp_path, strategy):
    from omegaconf import OmegaConf
    from hwnas.config import get_space_from_cfg
    from hwnas.mes import MES
    from hwnas.search.app import build_evaluator, compose_config, load_table, run
    base = ["+target=torch_cuda", f"space={SPACE}", "evaluator=predictor", "progress=false", "seed=3"]
    cfg = compose_config(base + svr.strategy_overrides(strategy, 10, 2))
    space = get_space_from_cfg(cfg.space)
    acc = build_evaluator(cfg, space)
    table, _ = load_table(cfg.target, space)
    mes = MES.for_target(OmegaConf.to_container(cfg.target.mes), table.provenance, "torch_cuda")
    mine = svr.run_once(cfg, space, table, mes, acc, seed=3)
    app = run(cfg, tmp_path, accuracy=acc)["records"]
    assert [r["arch_id"] for r in mine] == [r["arch_id"] for r in app] and len(mine) >= 10
    assert [r["accuracy"] for r in mine] == [r["accuracy"] for r in app]


def test_budgeted_search_is_constrained_by_the_reference(tmp_path):
    """`choose --budgeted`: the per-reference searches run under the reference's latency and params, as
    `python -m hwnas.search budget.latency_ms=... budget.params=...` does (Optuna constraints)."""
    from omegaconf import OmegaConf
    from hwnas.mes import MES
    from hwnas.search.app import build_evaluator, compose_config, load_table
    from hwnas.search.strategies import Budget
    base = ["+target=torch_cuda", f"space={SPACE}", "evaluator=predictor", "progress=false",
            "search.n_trials=24", "search.seed_archs=[min]", "search=tpe"]
    cfg = compose_config(base)
    space = search_spaces.get_space(SPACE)
    acc = build_evaluator(cfg, space)
    table, _ = load_table(cfg.target, space)
    mes = MES.for_target(OmegaConf.to_container(cfg.target.get("mes") or {}, resolve=True), table.provenance,
                         cfg.target.name)
    ref = space.reference("efficientformerv2_s0")
    lat, params = table.predict(ref), ref.params(1000)
    free = svr.run_once(cfg, space, table, mes, acc, 0)
    tight = svr.run_once(cfg, space, table, mes, acc, 0, Budget({"torch_cuda": lat}, params))
    assert all(r["feasible"] for r in free)  # no budget: nothing is infeasible
    for r in tight:  # under the budget: feasible exactly when at or under the reference's latency and params
        assert r["feasible"] == (r["latency_ms"] <= lat and r["params"] <= params)
    assert any(not r["feasible"] for r in tight)  # the search did try archs over the budget, and knew it
    chosen = pvr.main(["choose", "--spaces", SPACE, "--n-trials", "24", "--strategy", "tpe", "--budgeted",
                       "--out", str(tmp_path / "archs.json")])
    assert chosen["budgeted"] and "under that reference's latency and params" in chosen["method"]
    by_key = {c["key"]: c for c in chosen["spaces"][SPACE]}
    for pair in chosen["pairs"][SPACE].values():
        p, r = by_key[pair["pick"]], by_key[pair["reference"]]
        assert p["latency_ms"] <= r["latency_ms"] and p["params_deploy"] <= r["params_deploy"]


def test_search_vs_random_and_picks_stay_inside_the_archs_a_consistent_only_predictor_knows(tmp_path, monkeypatch):
    """A predictor fitted on pairs of a train.consistent_only supernet knows the consistent archs only: the
    experiments search them as `python -m hwnas.search` does (`searched_space`), never the rest."""
    doc = json.loads((ROOT / "hwnas" / "accuracy_predictors" / "nextvit.json").read_text())
    doc["provenance"]["consistent_only"] = True
    path = tmp_path / "nextvit_consistent.json"
    path.write_text(json.dumps(doc))
    space = search_spaces.get_space("nextvit")
    seen, run_once = [], svr.run_once

    def recording(*a, **kw):
        recs = run_once(*a, **kw)
        seen.extend(search_spaces.Arch.from_dict(json.loads(r["arch"])) for r in recs)
        return recs
    monkeypatch.setattr(svr, "run_once", recording)
    res = svr.main(["--space", "nextvit", "--seeds", "2", "--n-trials", "8", "--strategies", "tpe,random",
                    "--predictor", str(path), "--out", str(tmp_path)])["nextvit"]
    assert res["consistent_archs_only"] is True
    assert len(seen) >= 2 * 2 * 8 and all(space.is_consistent(a) for a in seen)
    chosen = pvr.main(["choose", "--spaces", "nextvit", "--n-trials", "16", "--predictor", str(path),
                       "--strategy", "tpe", "--out", str(tmp_path / "archs.json")])
    picks = [search_spaces.Arch.from_dict(a["arch"]) for a in chosen["spaces"]["nextvit"]]
    assert picks and all(space.is_consistent(a) for a in picks)
