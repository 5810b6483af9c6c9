"""experiments/ranking_fidelity.py end to end on the CPU at a tiny size: the GPU command's whole process
tree (a supernet process and a stand-alone worker under one deadline), its JSON lines, the analysis,
and a resumed run that redoes nothing; plus the statistics themselves."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))

import ranking_fidelity as rf  # noqa: E402

TINY = ["--device", "cpu", "--image-size", "32", "--val-size", "40", "--spaces", "efficientformerv2",
        "--max-archs", "3", "--sn-epochs", "1", "--sn-batch", "16", "--sn-max-steps", "2", "--sa-epochs", "1",
        "--sa-batch", "16", "--sa-max-steps", "2", "--random-archs", "2", "--workers", "1", "--repeat-archs", "1",
        "--calib-batches", "1", "--eval-batch", "20", "--deadline-s", "240"]


def gpu_command(tmp_path, fashion_root, out, *extra):
    cmd = [sys.executable, str(ROOT / "experiments" / "ranking_fidelity.py"), "gpu", "--out", str(out),
           "--data-root", str(fashion_root), "--work", str(tmp_path / "work"), *TINY, *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout


def test_gpu_command_on_cpu_then_analysis_then_resume(tmp_path, fashion_root):
    out = tmp_path / "run1"
    log = gpu_command(tmp_path, fashion_root, out)
    assert "plan: 1 supernet(s) [efficientformerv2/base], 4 stand-alone run(s)" in log
    res = rf.read_results([out])
    chosen = {c["key"] for c in rf.load_archs(rf.ARCHS_FILE, ["efficientformerv2"], 3)["efficientformerv2"]}
    sa = [r for r in res["standalone"] if r["status"] == "done"]
    assert {r["key"] for r in sa} == chosen and sorted(r["seed"] for r in sa) == [0, 0, 0, 1]
    assert all(0 <= r["test_top1"] <= 100 and r["data"] == "fashion_mnist" for r in sa)
    inh = res["inherited"]
    assert {r["key"] for r in inh if r["kind"] == "ranking"} == chosen
    assert sum(r["kind"] == "random" for r in inh) == 2 and not {r["key"] for r in inh if r["kind"] == "random"} & chosen
    assert all(r["consistent_only"] is False for r in inh)  # what a predictor fitted on them records (the base variant)
    summary = [r for r in res["supernet"] if r["kind"] == "summary"]
    assert len(summary) == 1 and summary[0]["epochs_done"] == 1
    run = json.loads((out / "run.json").read_text())
    assert run["records"] == {"standalone": 4, "inherited": 5, "supernet": 2} and run["jobs_not_started"] == 0

    results = tmp_path / "results"
    rf.main(["analyze", str(out), "--spaces", "efficientformerv2", "--out", str(results)])
    rep = json.loads((results / "ranking_fidelity_efficientformerv2.json").read_text())
    base = rep["variants"]["base"]
    assert base["vs_test"]["n"] == 3 and base["random_pairs"] == 2
    rows = rep["archs"]
    from scipy.stats import kendalltau
    want = kendalltau([a["inherited_val"]["base"] for a in rows], [a["standalone_test"] for a in rows])[0]
    if base["vs_test"]["kendall_tau"] is None:
        assert want != want  # NaN: all ties on a tiny run
    else:
        assert base["vs_test"]["kendall_tau"] == pytest.approx(want)
    assert rep["seed_noise"]["archs"] == 1 and rep["gpu_minutes"]["standalone_runs"] == 4
    assert (results / "ranking_fidelity_efficientformerv2.png").stat().st_size > 1000
    assert "Kendall tau" in (results / "ranking_fidelity_efficientformerv2.md").read_text()

    again = tmp_path / "run2"
    log = gpu_command(tmp_path, fashion_root, again, "--resume-from", str(out))
    assert "plan: 0 supernet(s) [], 0 stand-alone run(s) (4 of this recipe already done)" in log
    assert rf.read_results([again]) == res  # everything carried over, nothing redone


def test_rank_statistics_and_their_intervals():
    x = [1, 2, 3, 4, 5, 6, 7, 8]
    s = rf.rank_stats(x, [2, 1, 4, 3, 6, 5, 8, 7])
    assert s["kendall_tau"] == pytest.approx(1 - 2 * 4 / 28)  # 4 discordant pairs of 28
    assert s["spearman_rho"] == pytest.approx(1 - 6 * 8 / (8 * 63))
    lo, hi = s["kendall_tau_ci95"]
    assert lo <= s["kendall_tau"] <= hi and hi <= 1.0 and lo > 0
    assert rf.rank_stats(x, x[::-1])["kendall_tau"] == pytest.approx(-1)
    assert rf.rank_stats([1, 2], [1, 2])["kendall_tau"] is None  # too few archs for a statement


def test_recipe_ids_stay_those_of_the_committed_h200_runs():
    """--resume-from matches records by recipe id: a change to how ids are computed would silently orphan
    the stand-alone runs already paid for (experiments/results/ranking_fidelity_raw/h200-run1, -run2)."""
    args = rf.main.__globals__["argparse"].Namespace(
        image_size=32, val_size=10000, data_root=".data/fashion-mnist", data=None, sa_epochs=6, sa_batch=512,
        sa_lr=2e-3, sa_warmup_epochs=1.0, sa_max_steps=0, no_graph=False, sn_epochs=5, sn_batch=1024, sn_lr=3e-3,
        sn_warmup_epochs=1.0, sn_num_random=2, sn_max_steps=0)
    ident = rf.data_identity(rf.data_cfg(args))
    assert rf.recipe_id("standalone", rf.standalone_recipe(args), ident) == "9b295e25b37a"
    assert rf.supernet_recipe_id(rf.supernet_train_cfg(args, "base"), ident, 0) == "0514c967b124"
    assert rf.supernet_train_cfg(args, "base")["student_weight"] == 1.0  # the papers' sandwich, stated
    # every arch, stated (Next-ViT's default is now its consistent archs), and the id is the same as before
    assert rf.supernet_train_cfg(args, "base")["consistent_only"] is False
    assert rf.supernet_train_cfg(args, "consistent")["consistent_only"] is True
    args.sn_epochs, args.sn_lr = 10, 1e-3  # the 10-epoch runs: h200-run6 (lowlr), h200-run7 and run10 (studentw)
    assert rf.supernet_recipe_id(rf.supernet_train_cfg(args, "lowlr"), ident, 0) == "39e9dffa0983"
    assert rf.supernet_recipe_id(rf.supernet_train_cfg(args, "studentw"), ident, 0) == "cb4bfcbb9c60"
    assert rf.supernet_recipe_id(rf.supernet_train_cfg(args, "studentw"), ident, 2) == "83fb96fae8a8"
    # the probe benchmark (10,000 images, 20 epochs at lr 1e-3, batch 256): its id is the committed one, and
    # the two-item task (data.items=2) is another benchmark with its own
    args.data, args.sa_epochs, args.sa_batch, args.sa_lr = ["limit_train=10000"], 20, 256, 1e-3
    assert rf.recipe_id("standalone", rf.standalone_recipe(args), rf.data_identity(rf.data_cfg(args))) == "04c46a20c706"
    args.data = ["limit_train=10000", "items=2"]
    pairs = rf.data_identity(rf.data_cfg(args))
    assert pairs["items"] == 2 and pairs["hflip"] == 0.0
    assert rf.recipe_id("standalone", rf.standalone_recipe(args), pairs) != "04c46a20c706"
    # zero-initialised residual branches are another recipe; without the flag the key is left out (the ids above)
    args.data = ["limit_train=10000"]
    assert "zero_init_residual" not in rf.standalone_recipe(args)
    args.sa_zero_init_residual = True
    assert rf.standalone_recipe(args)["zero_init_residual"] is True
    assert rf.recipe_id("standalone", rf.standalone_recipe(args), rf.data_identity(rf.data_cfg(args))) != "04c46a20c706"


def test_an_explicit_supernet_lr_is_not_replaced_by_the_variants():
    """--sn-lr was dropped silently wherever a variant names its own lr (call 6 asked for 2e-3, `studentw`
    trained at 1e-3). Now: the command line's lr wins; without one, the variant's; else SN_LR."""
    args = rf.main.__globals__["argparse"].Namespace(
        sn_epochs=20, sn_batch=512, sn_lr=2e-3, sn_warmup_epochs=1.0, sn_num_random=2, sn_max_steps=0)
    assert rf.VARIANTS["studentw"]["lr"] == 1e-3 and "lr" not in rf.VARIANTS["base"]
    assert rf.supernet_train_cfg(args, "studentw")["lr"] == 2e-3
    args.sn_lr = None
    assert rf.supernet_train_cfg(args, "studentw")["lr"] == 1e-3
    assert rf.supernet_train_cfg(args, "base")["lr"] == rf.SN_LR


def test_the_goal_is_judged_on_the_recipe_each_space_trains_by_default():
    """Next-ViT's supernet trains its consistent archs by default (SearchSpace.trains_consistent_only): its
    ranking goal is judged on the `consistent` variant where one was run; EfficientFormerV2's on `studentw`."""
    both = {"studentw": {}, "consistent": {}, "base": {}}
    assert rf.default_variant("nextvit", both) == "consistent"
    assert rf.default_variant("efficientformerv2", both) == "studentw"
    assert rf.default_variant("nextvit", {"studentw": {}, "base": {}}) == "studentw"
    assert rf.default_variant("efficientformerv2", {"base": {}}) == "base"
    committed = json.loads((ROOT / "experiments" / "results" / "accuracy_bench" / "probe"
                            / "ranking_fidelity_nextvit.json").read_text())
    assert committed["default_variant"] == "consistent"  # the committed analysis, regenerated with it


def test_each_arch_is_judged_on_its_best_recipe_chosen_on_val():
    """`analyze --standalone-recipe SPACE=A+B`: per arch the recipe whose seeds reach the highest mean val
    top-1, never the highest test top-1 (that would pick the luckiest test figure); a tie goes to the first."""
    def rec(key, rid, seed, val, test):
        return {"key": key, "recipe_id": rid, "seed": seed, "val_top1": val, "test_top1": test}
    records = [rec("x", "A", 0, 90.0, 80.0), rec("x", "A", 1, 91.0, 80.0),  # A: val 90.5, test 80
               rec("x", "B", 0, 90.2, 99.0),                               # B: val 90.2, test 99
               rec("y", "A", 0, 88.0, 88.0), rec("y", "B", 0, 89.0, 87.0), rec("y", "C", 0, 99.0, 99.0),
               rec("z", "B", 0, 85.0, 85.0), rec("z", "A", 0, 85.0, 84.0)]  # a tie: the first listed, A
    sa, chosen = rf.best_recipe_per_arch(records, ["A", "B"])
    assert chosen == {"x": "A", "y": "B", "z": "A"}  # C is not one of the recipes given
    assert sorted(sa["x"]) == [0, 1] and all(r["recipe_id"] == "A" for r in sa["x"].values())
    assert sa["y"][0]["test_top1"] == 87.0


def test_the_analysis_is_the_same_in_every_process(tmp_path):
    """Archs outside the archs file tie on latency; sorted from a set, their order (and with it the bootstrap
    intervals) followed the process's string-hash seed. The committed pilot analysis, run in two processes with
    different hash seeds, now comes out the same."""
    raw = ROOT / "experiments" / "results" / "accuracy_bench_raw"
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        cmd = [sys.executable, str(ROOT / "experiments" / "ranking_fidelity.py"), "analyze",
               str(raw / "h100-call14-nv32" / "nv"), str(raw / "h100-call22-lr" / "nv_lr5e-4"),
               str(raw / "h100-call22-lr" / "nv_lr2.5e-4"),
               "--standalone-recipe", "nextvit=04c46a20c706+2272821e3119+4838bfa36da0",
               "--archs", str(ROOT / "experiments" / "results" / "accuracy_bench_nv_pilot_archs.json"),
               "--spaces", "nextvit", "--out", str(out)]
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "PYTHONHASHSEED": seed})
        assert r.returncode == 0, r.stderr[-2000:]
        rep = json.loads((out / "ranking_fidelity_nextvit.json").read_text())
        rep.pop("analyze_options")  # names --out
        outs.append(rep)
    assert outs[0] == outs[1]
    assert outs[0]["variants"]["consistent"]["vs_test"]["n"] == 24
