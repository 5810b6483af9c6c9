"""The accuracy predictor (`hwnas.predictor`) and `evaluator=predictor`: pairs read as the GPU runs write
them, a seeded fit that round-trips through its JSON file, a search over it end to end on the shipped
tables, the shipped predictors, measuring pairs on a supernet (resumed), and the errors."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import search_spaces
import supernet
from hwnas.checkpoint import save_supernet
from hwnas.predictor import (SHIPPED_DIR, AccuracyPredictor, PredictorError, encode, feature_names, fit,
                             main as predictor_main, measure_pairs, read_pairs)
from hwnas.search.app import compose_config, run
from search_spaces import Arch

ROOT = Path(__file__).resolve().parents[1]
SPACE = "efficientformerv2"


def truth(space, arch) -> float:
    """A learnable accuracy: more for a wider, deeper stage 3, as a supernet's would be (roughly)."""
    v = space.encode(arch)
    depth = sum(1 for k, x in v.items() if k.startswith("s2.e") and x)
    return 70.0 + 0.02 * v["s2.width"] + 0.3 * depth


def write_pairs(folder: Path, n: int = 48, seed: int = 1) -> list:
    space = search_spaces.get_space(SPACE)
    archs = list({a.id: a for a in space.sample_many(n, seed=seed)}.values())
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for a in archs:
        lines.append(dict(space=SPACE, arch=a.to_dict(), key=a.id, kind="random", variant="base",
                          recipe_id="r1", val_top1=truth(space, a) + float(rng.normal(0, 0.05))))
    # what must be left out: a smoke run, another recipe, another variant, another space
    lines.append(dict(lines[0], smoke=True, val_top1=0.0))
    lines.append(dict(lines[1], recipe_id="r0", val_top1=0.0))
    lines.append(dict(lines[2], variant="alpha", recipe_id="r2", val_top1=0.0))
    nv = search_spaces.get_space("nextvit").min_arch()
    lines.append(dict(space="nextvit", arch=nv.to_dict(), key=nv.id, kind="random", variant="base", recipe_id="r1",
                      val_top1=50.0))
    # the same arch measured again later (a longer run): the later line wins
    lines.append(dict(lines[3], val_top1=lines[3]["val_top1"] + 0.5))
    (folder / "inherited.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"torn')
    (folder / "run.json").write_text(json.dumps({"data": {"name": "fashion_mnist", "image_size": 32}}))
    return lines


def test_pairs_are_read_as_the_gpu_runs_write_them(tmp_path):
    lines = write_pairs(tmp_path / "run")
    pairs = read_pairs([tmp_path / "run"], SPACE)
    n = len(lines) - 5
    assert len(pairs) == n and pairs.recipe_ids == ["r1"] and pairs.data["name"] == "fashion_mnist"
    by_id = dict(zip((a.id for a in pairs.archs), pairs.top1))
    assert by_id[lines[3]["key"]] == pytest.approx(lines[-1]["val_top1"])  # the later line
    assert 0.0 not in pairs.top1 and 50.0 not in pairs.top1
    assert len(read_pairs([tmp_path / "run"], SPACE, recipe_id="r0")) == 1
    assert len(read_pairs([tmp_path / "run"], SPACE, variant="alpha")) == 1  # its own recipe, never mixed in
    assert len(read_pairs([tmp_path / "run"], SPACE, variant="base")) == n
    with pytest.raises(PredictorError, match="no inherited.jsonl"):
        read_pairs([tmp_path], SPACE)
    with pytest.raises(PredictorError, match="no .arch, inherited top-1. pairs of space 'efficientformerv2'"):
        read_pairs([tmp_path / "run"], SPACE, variant="warmup")


def test_pairs_of_a_recipe_trained_twice_are_the_longest_trainings(tmp_path):
    """A deadline-cut run and its full rerun share a recipe id: the cut run's pairs (fewer epochs) never
    count, whichever folder comes first (a glob puts run10 before run8)."""
    space = search_spaces.get_space(SPACE)
    archs = list({a.id: a for a in space.sample_many(12, seed=3)}.values())
    for name, epochs, archs_here, top1 in (("full", 10, archs[:8], 80.0), ("cut", 5, archs[4:], 60.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "inherited.jsonl").write_text("".join(json.dumps(dict(
            space=SPACE, arch=a.to_dict(), key=a.id, kind="random", variant="studentw", recipe_id="r1",
            epochs_done=epochs, val_top1=top1 + i)) + "\n" for i, a in enumerate(archs_here)))
    for order in (["full", "cut"], ["cut", "full"]):
        pairs = read_pairs([tmp_path / d for d in order], SPACE)
        assert sorted(a.id for a in pairs.archs) == sorted(a.id for a in archs[:8])
        assert pairs.top1.min() >= 80.0


def test_fit_round_trips_through_its_file_and_is_deterministic(tmp_path):
    write_pairs(tmp_path / "run")
    pairs = read_pairs([tmp_path / "run"], SPACE)
    pred = fit(pairs, folds=3, seed=0)
    prov = pred.provenance
    assert prov["n_pairs"] == len(pairs) and prov["recipe_ids"] == ["r1"] and prov["chosen"] in prov["candidates"]
    assert prov["heldout"]["kendall_tau"] > 0.6  # a learnable target is learnt, on archs it did not see
    assert prov["heldout"]["mae"] < 0.6
    path = pred.save(tmp_path / "p.json")
    loaded = AccuracyPredictor.load(path)
    space = search_spaces.get_space(SPACE)
    others = space.sample_many(20, seed=99) + [space.min_arch(), space.max_arch()]
    assert list(loaded.predict(others)) == list(pred.predict(others))  # exactly: the same numbers, read back
    assert loaded.digest == pred.digest
    assert loaded.evaluate(space.max_arch()) > loaded.evaluate(space.min_arch())
    assert not pairs.consistent_only and prov["consistent_only"] is False and loaded.consistent_only is False
    pairs.consistent_only = True  # pairs of a train.consistent_only supernet: the file says so, read back
    assert AccuracyPredictor.load(fit(pairs, folds=3, seed=0).save(tmp_path / "c.json")).consistent_only is True
    again = fit(read_pairs([tmp_path / "run"], SPACE), folds=3, seed=0)
    assert json.dumps(again.doc, sort_keys=True) == json.dumps(pred.doc, sort_keys=True)
    # the resolution of an arch does not change its features (the deployment arch is encoded)
    a = others[0]
    assert list(encode(space, a.with_resolution(32))) == list(encode(space, a))
    assert len(encode(space, a)) == len(feature_names(space))


def test_fit_command_line(tmp_path, capsys):
    write_pairs(tmp_path / "run")
    out = tmp_path / "cli.json"
    assert predictor_main(["fit", "--space", SPACE, str(tmp_path / "run"), "--out", str(out), "--folds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "held-out (3-fold): Kendall tau" in printed and out.is_file()
    assert AccuracyPredictor.load(out).provenance["command"].startswith("python -m hwnas.predictor fit")
    # too few pairs: one clear line, exit status 2
    (tmp_path / "few.jsonl").write_text("".join(
        json.dumps(dict(space=SPACE, arch=a.to_dict(), val_top1=70.0 + i)) + "\n"
        for i, a in enumerate(search_spaces.get_space(SPACE).sample_many(3, seed=0))))
    assert predictor_main(["fit", "--space", SPACE, str(tmp_path / "few.jsonl"), "--out", str(out),
                           "--variant", "any"]) == 2
    assert "too few for 5-fold selection" in capsys.readouterr().err
    # fewer than 2 folds hold no pair out: --folds 0 wrote a predictor of held-out tau 1.00 from np.empty memory
    out.unlink()
    for folds in ("0", "1", "-3"):
        assert predictor_main(["fit", "--space", SPACE, str(tmp_path / "run"), "--out", str(out), "--folds", folds]) == 2
        assert f"--folds {folds}: at least 2" in capsys.readouterr().err and not out.exists()
    # pairs: counts checked before anything loads
    for flag, value, low in (("--batch-size", "0", 1), ("--n", "0", 1), ("--calib-batches", "-1", 0)):
        assert predictor_main(["pairs", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "p.jsonl"),
                               flag, value]) == 2
        assert f"{flag}={value}: must be >= {low}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def predictor_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("pred")
    write_pairs(d / "run")
    return fit(read_pairs([d / "run"], SPACE), folds=3).save(d / "efficientformerv2.json")


def test_search_with_evaluator_predictor_end_to_end(tmp_path, predictor_file):
    cfg = compose_config(["+target=onnxruntime_cpu", f"space={SPACE}", "evaluator=predictor",
                          f"evaluator.path={predictor_file}", "search.n_trials=6", "progress=false"])
    out = run(cfg, tmp_path / "s")
    pred = AccuracyPredictor.load(predictor_file)
    assert len(out["records"]) == 6
    for r in out["records"]:
        assert r["accuracy"] == pytest.approx(pred.evaluate(Arch.from_dict(json.loads(r["arch"]))), abs=1e-9)
    report = (tmp_path / "s" / "report.md").read_text()
    assert "accuracy predictor" in report and "fashion_mnist at 32 px" in report
    # the study remembers which predictor scored it: another one is refused
    other = AccuracyPredictor(json.loads(Path(predictor_file).read_text()))
    other.doc["model"]["y_mean"] += 1.0
    other.save(tmp_path / "other.json")
    cfg2 = compose_config(["+target=onnxruntime_cpu", f"space={SPACE}", "evaluator=predictor",
                           f"evaluator.path={tmp_path / 'other.json'}", "search.n_trials=6", "progress=false"])
    with pytest.raises(Exception, match="evaluated with another checkpoint, evaluator or data"):
        run(cfg2, tmp_path / "s")


def test_shipped_predictor_is_the_default(tmp_path, space_name):
    pred = AccuracyPredictor.shipped(space_name)
    assert pred.space_name == space_name and (SHIPPED_DIR / f"{space_name}.json").is_file()
    prov = pred.provenance
    assert prov["n_pairs"] >= 10 and prov["heldout"]["kendall_tau"] is not None
    assert all(Path(ROOT / s).is_file() for s in prov["sources"])  # its data is committed
    cfg = compose_config(["+target=onnxruntime_cpu", f"space={space_name}", "evaluator=predictor",
                          "search=random", "search.n_trials=3", "search.seed_archs=[]", "progress=false"])
    out = run(cfg, tmp_path / "s")
    assert all(r["accuracy"] == pytest.approx(pred.evaluate(Arch.from_dict(json.loads(r["arch"]))), abs=1e-9)
               for r in out["records"])


def test_predictor_of_another_space_is_refused(tmp_path, predictor_file):
    cfg = compose_config(["+target=onnxruntime_cpu", "space=nextvit", "evaluator=predictor",
                          f"evaluator.path={predictor_file}", "search.n_trials=2", "progress=false"])
    with pytest.raises(PredictorError, match="fitted on space 'efficientformerv2', not 'nextvit'"):
        run(cfg, tmp_path / "s")
    pred = AccuracyPredictor.load(predictor_file)
    with pytest.raises(PredictorError, match="fitted on space 'efficientformerv2'"):
        pred.evaluate(search_spaces.get_space("nextvit").min_arch())
    # from the command line: one line naming the fix, exit status 2 -- also on a machine that is not the
    # device the shipped table was measured on (its device-mismatch warning comes first there), which
    # this machine pretends to be
    elsewhere = ("import runpy, hwnas.latency.backends as b; b.cpu_name = lambda: 'Another CPU (test)'; "
                 "runpy.run_module('hwnas.search', run_name='__main__', alter_sys=True)")
    r = subprocess.run([sys.executable, "-c", elsewhere, "+target=onnxruntime_cpu", "space=nextvit",
                        "evaluator=predictor", f"evaluator.path={predictor_file}", f"hydra.run.dir={tmp_path / 'cli'}",
                        "progress=false"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("hwnas.search: error:")]
    assert len(errors) == 1 and "search space=efficientformerv2" in errors[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr and "Another CPU (test)" in r.stderr  # the warning was there


def test_bad_predictor_files(tmp_path):
    with pytest.raises(PredictorError, match="no such predictor file"):
        AccuracyPredictor.load(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(PredictorError, match="not an accuracy predictor"):
        AccuracyPredictor.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_bytes(b"\x00\xff garbage")
    with pytest.raises(PredictorError, match="not an accuracy predictor"):
        AccuracyPredictor.load(tmp_path / "y.json")
    flat = tmp_path / "flat.jsonl"
    flat.write_text("".join(json.dumps(dict(space=SPACE, arch=a.to_dict(), val_top1=71.0)) + "\n"
                            for a in search_spaces.get_space(SPACE).sample_many(12, seed=0)))
    with pytest.raises(PredictorError, match="all have the same accuracy"):
        fit(read_pairs([flat], SPACE, variant=None))
    # non-finite numbers are refused where they enter, naming the file (and line): Python's json reads NaN
    good = write_pairs(tmp_path / "pairs")[0]
    (tmp_path / "nan.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(dict(good, val_top1=float("nan"))) + "\n")
    with pytest.raises(PredictorError, match=r"nan.jsonl, line 2: val_top1=nan is no top-1 %"):
        read_pairs([tmp_path / "nan.jsonl"], SPACE)
    doc = fit(read_pairs([tmp_path / "pairs"], SPACE)).doc
    (tmp_path / "nan.json").write_text(json.dumps(doc).replace(str(doc["model"]["y_mean"]), "NaN", 1))
    with pytest.raises(PredictorError, match=r"nan.json: holds NaN where a number belongs"):
        AccuracyPredictor.load(tmp_path / "nan.json")
    # a model with parts missing, of an unknown kind or of the wrong shapes: one line, not a KeyError or matmul error
    import copy
    broken = {"nomodel": lambda d: d.pop("model"), "kind": lambda d: d["model"].update(kind="xgboost"),
              "shape": lambda d: d["model"].update(x_mean=d["model"]["x_mean"][:3]),
              "nospace": lambda d: d.pop("space")}
    for name, damage in broken.items():
        d = copy.deepcopy(doc)
        damage(d)
        (tmp_path / f"{name}.json").write_text(json.dumps(d))
        with pytest.raises(PredictorError, match=rf"{name}.json: (its model is not one .* writes|fitted on space None)"):
            AccuracyPredictor.load(tmp_path / f"{name}.json")


def test_pairs_measured_on_a_supernet_resume(tmp_path):
    torch.manual_seed(0)
    net = supernet.build_supernet(SPACE, num_classes=4, resolution=32)
    ckpt = tmp_path / "supernet.pt"
    save_supernet(net, ckpt, {"data": "synthetic"})
    data = {"name": "synthetic", "image_size": 32, "num_classes": 4, "num_train": 16, "num_val": 8}
    out = tmp_path / "pairs.jsonl"
    measure_pairs(ckpt, data, out, n=3, device="cpu", calib_batches=1, batch_size=8, log=lambda s: None)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    space = search_spaces.get_space(SPACE)
    assert len(lines) == 3 and lines[0]["key"] == space.max_arch().id and lines[1]["key"] == space.min_arch().id
    assert all(0 <= r["val_top1"] <= 100 and r["variant"] == "checkpoint" for r in lines)
    from hwnas.evaluate import SubnetEvaluator
    ev = SubnetEvaluator.from_checkpoint(ckpt, data, calib_batches=1, batch_size=8, device="cpu")
    assert lines[2]["val_top1"] == ev.evaluate(Arch.from_dict(lines[2]["arch"]))
    measure_pairs(ckpt, data, out, n=3, device="cpu", calib_batches=1, batch_size=8,
                  log=lambda s: pytest.fail("an arch already measured was measured again"))
    assert len(out.read_text().splitlines()) == 3
    pairs = read_pairs([out], SPACE, variant="checkpoint")
    assert len(pairs) == 3 and pairs.data["name"] == "synthetic"


def test_pairs_of_a_consistent_only_supernet_are_consistent_archs(tmp_path):
    """A supernet trained with train.consistent_only never trained the other archs: its pairs (the
    predictor's training data) are drawn from the consistent ones, and say so."""
    torch.manual_seed(0)
    space = search_spaces.get_space("nextvit")
    net = supernet.build_supernet("nextvit", num_classes=4, resolution=32)
    data = {"name": "synthetic", "image_size": 32, "num_classes": 4, "num_train": 8, "num_val": 4}
    for flag in (True, False):
        ckpt = tmp_path / f"supernet_{flag}.pt"
        save_supernet(net, ckpt, {"data": "synthetic", "config": {"train": {"consistent_only": flag}}})
        out = tmp_path / f"pairs_{flag}.jsonl"
        measure_pairs(ckpt, data, out, n=6, device="cpu", calib_batches=1, batch_size=4, log=lambda s: None)
        lines = [json.loads(x) for x in out.read_text().splitlines()]
        archs = [Arch.from_dict(r["arch"]) for r in lines]
        assert len(lines) == 6 and all(r["consistent_only"] is flag for r in lines)
        assert read_pairs([out], "nextvit").consistent_only is flag  # fit() records it: the search then stays inside
        if flag:
            assert all(space.is_consistent(a) for a in archs) and archs[1] == space.min_consistent_arch()
        else:  # uniform draws: inconsistent ones among them (0.16 % of the space is consistent)
            assert not all(space.is_consistent(a) for a in archs) and archs[1] == space.min_arch()


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A tiny supernet's checkpoint, its data, and the bytes of 3 pairs `measure_pairs` wrote on it."""
    d = tmp_path_factory.mktemp("measured")
    torch.manual_seed(0)
    net = supernet.build_supernet(SPACE, num_classes=4, resolution=32)
    save_supernet(net, d / "supernet.pt", {"data": "synthetic"})
    data = {"name": "synthetic", "image_size": 32, "num_classes": 4, "num_train": 16, "num_val": 8}
    measure_pairs(d / "supernet.pt", data, d / "pairs.jsonl", n=3, device="cpu", calib_batches=1, batch_size=8,
                  log=lambda s: None)
    return d / "supernet.pt", data, (d / "pairs.jsonl").read_bytes()


def test_pairs_under_other_settings_are_refused_not_appended(tmp_path, measured, capsys):
    """F5 of the pairs QA pass: a resume into a file of pairs measured under other data or BatchNorm
    calibration, or on another supernet, appended its pairs there (archs were skipped by the weights
    alone), and `fit` then fitted one predictor on the mixture."""
    ckpt, data, text = measured
    lines = [json.loads(x) for x in text.splitlines()]
    assert len({r["measure_id"] for r in lines}) == 1
    assert lines[0]["measure"]["calib_batches"] == 1 and lines[0]["measure"]["data"]["num_val"] == 8
    out = tmp_path / "p.jsonl"
    out.write_bytes(text)
    never = lambda s: pytest.fail(f"measured into a file of other settings: {s}")  # noqa: E731
    torch.manual_seed(1)
    save_supernet(supernet.build_supernet(SPACE, num_classes=4, resolution=32), tmp_path / "other.pt",
                  {"data": "synthetic"})
    for kw, named in [(dict(calib_batches=2), "calib_batches 1 vs 2"), (dict(batch_size=4), "batch_size 8 vs 4"),
                      (dict(data=dict(data, num_val=4)), "data.num_val 8 vs 4"),
                      (dict(checkpoint=tmp_path / "other.pt"), "recipe_id")]:
        kw = dict(dict(checkpoint=ckpt, data=data, calib_batches=1, batch_size=8), **kw)
        with pytest.raises(PredictorError, match=rf"p.jsonl, line 1: a pair measured under other settings \(the "
                                                 rf"file's vs this run's: {named}.*give another --out file"):
            measure_pairs(kw.pop("checkpoint"), kw.pop("data"), out, n=4, device="cpu", log=never, **kw)
        assert out.read_bytes() == text
    # the command line: one line, exit status 2
    assert predictor_main(["pairs", "--checkpoint", str(ckpt), "--data", *(f"{k}={v}" for k, v in data.items()),
                           "--n", "4", "--out", str(out), "--calib-batches", "2", "--batch-size", "8",
                           "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hwnas.predictor: error: --out") and "calib_batches 1 vs 2" in err
    # the same measurement spelled otherwise (a default given; another seed draws other calibration images of
    # the same data, as the pairs processes run side by side do) resumes
    measure_pairs(ckpt, dict(data, limit_train=0, num_workers=0), out, n=2, seed=1, device="cpu", calib_batches=1,
                  batch_size=8, log=never)
    assert out.read_bytes() == text
    # a file written before ids (its lines record none) is not appended to either
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("measure_id", "measure")}) + "\n"
                              for r in lines))
    with pytest.raises(PredictorError, match="legacy.jsonl, line 1: a pair measured by an earlier hwnas, which "
                                             "recorded no measurement id"):
        measure_pairs(ckpt, data, legacy, n=4, device="cpu", calib_batches=1, batch_size=8, log=never)


def test_fit_refuses_pairs_of_one_supernet_measured_under_several_settings(tmp_path, measured, capsys):
    """F5: pairs of one supernet measured under other settings, in one file (as the old resume wrote them) or
    in several, are refused by `fit` with the settings that differ, never fitted as one measurement;
    --measure-id picks one. Lines that record no id (older files) are one group, 'legacy', and load as before."""
    ckpt, data, text = measured
    measure_pairs(ckpt, data, tmp_path / "b.jsonl", n=2, device="cpu", calib_batches=2, batch_size=8,
                  log=lambda s: None)
    a_id = json.loads(text.splitlines()[0])["measure_id"]
    b_id = json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])["measure_id"]
    assert a_id != b_id
    (tmp_path / "a.jsonl").write_bytes(text)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_bytes(text + (tmp_path / "b.jsonl").read_bytes())
    refusal = (rf"measured under 2 settings .*{a_id}: 3 pairs in .*{b_id}: 2 pairs in .*\(against {a_id}: "
               rf"calib_batches 2 vs 1\); fit the pairs of one setting with --measure-id ID")
    with pytest.raises(PredictorError, match=refusal):
        read_pairs([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], SPACE)
    assert predictor_main(["fit", "--space", SPACE, str(mixed), "--out", str(tmp_path / "pred.json"),
                           "--folds", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "calib_batches 2 vs 1" in err and not (tmp_path / "pred.json").exists()
    pairs = read_pairs([mixed], SPACE, measure_id=a_id)
    assert len(pairs) == 3 and pairs.measure_ids == [a_id] and pairs.measure["calib_batches"] == 1
    assert len(read_pairs([mixed], SPACE, measure_id=b_id)) == 2
    legacy = tmp_path / "legacy.jsonl"
    legacy.write_text("".join(json.dumps({k: v for k, v in json.loads(x).items() if k not in ("measure_id", "measure")})
                              + "\n" for x in text.splitlines()))
    pairs = read_pairs([legacy], SPACE)
    assert len(pairs) == 3 and pairs.measure_ids == [] and pairs.measure is None
    with pytest.raises(PredictorError, match=rf"legacy: 3 pairs in .*legacy.jsonl, settings not recorded"):
        read_pairs([legacy, tmp_path / "b.jsonl"], SPACE)
    assert len(read_pairs([legacy, tmp_path / "b.jsonl"], SPACE, measure_id="legacy")) == 3


def test_a_torn_last_line_is_cut_before_a_resume_appends(tmp_path, measured):
    """F7 of the pairs QA pass: a write cut mid-line (power loss, a full disk) leaves a last line without its
    newline; the resume glued the next pair onto it (that pair lost), and a later `fit` failed on it."""
    ckpt, data, text = measured
    out = tmp_path / "p.jsonl"
    out.write_bytes(text[:-40])
    torn = len(text) - 40 - (text[:-40].rfind(b"\n") + 1)
    logged = []
    measure_pairs(ckpt, data, out, n=3, device="cpu", calib_batches=1, batch_size=8, log=logged.append)
    lines = [json.loads(x) for x in out.read_text().splitlines()]  # every line whole
    want = [json.loads(x) for x in text.splitlines()]
    assert [r["key"] for r in lines] == [r["key"] for r in want] and lines[2]["val_top1"] == want[2]["val_top1"]
    assert len(read_pairs([out], SPACE)) == 3
    assert logged[0] == (f"{out}: removed a torn last line ({torn} bytes) left by a cut write; its arch is "
                         "measured again")


# ---- issue 25, 4: the main job's default evaluator --------------------------------------------------
def test_the_main_job_scores_with_the_shipped_predictor_and_says_where_its_accuracy_comes_from(tmp_path, capsys):
    """`python -m hwnas.search +target=coreml` (no evaluator=, no checkpoint=) scores with the shipped
    predictor, not the 40-step digits supernet; the console summary, report.md and the run folder's
    accuracy_source.json say in one line: data, resolution, supernet recipe, held-out tau (from the JSON)."""
    cfg = compose_config(["+target=coreml", "search.n_trials=3", "search=random", "search.seed_archs=[]",
                          "progress=false"])
    assert cfg.evaluator.name == "predictor"
    out = run(cfg, tmp_path / "s")
    pred = AccuracyPredictor.shipped(SPACE)
    p = pred.provenance
    assert all(r["accuracy"] == pytest.approx(pred.evaluate(Arch.from_dict(json.loads(r["arch"]))), abs=1e-9)
               for r in out["records"])
    line = (f"predicted inherited top-1 % on {p['data']['name']} at {p['data']['image_size']} px val (shipped "
            f"accuracy predictor of supernet recipe {p['recipe_ids'][0]}{f' ({v})' if (v := p.get('variant')) else ''}, "
            f"{p['n_pairs']} pairs, "
            f"held-out Kendall tau {p['heldout']['kendall_tau']:.2f})")
    assert f"- **accuracy**: {line}" in (tmp_path / "s" / "report.md").read_text()
    assert f"  accuracy: {line};" in capsys.readouterr().out
    record = json.loads((tmp_path / "s" / "accuracy_source.json").read_text())
    assert record["evaluator"] == "predictor" and record["weights"] is None
    assert record["predictor"]["digest"] == pred.digest
    assert record["caution"] is None and "hardly ranks" not in (tmp_path / "s" / "report.md").read_text()


def test_a_search_on_a_predictor_that_hardly_ranks_says_so(tmp_path, capsys):
    """A predictor that ranks held-out pairs at tau 0.11 (Next-ViT's shipped one until 2026-12-07): a search
    on it warns, in the console and in report.md, that its accuracy objective is close to noise (and how to
    fix that); the same file with a held-out tau of 0.7 raises no warning, nor does the shipped one now."""
    assert AccuracyPredictor.shipped("nextvit").caution is None  # refitted: held-out tau 0.76
    doc = json.loads(json.dumps(AccuracyPredictor.shipped("nextvit").doc))
    doc["provenance"]["heldout"]["kendall_tau"] = 0.11
    (tmp_path / "weak.json").write_text(json.dumps(doc))
    pred = AccuracyPredictor.load(tmp_path / "weak.json")
    tau = pred.provenance["heldout"]["kendall_tau"]
    assert tau < 0.5 and pred.caution is not None and f"{tau:.2f}" in pred.caution
    cfg = compose_config(["+target=coreml", "space=nextvit", "search.n_trials=2", "search=random",
                          "search.seed_archs=[]", "progress=false", f"evaluator.path={tmp_path / 'weak.json'}"])
    run(cfg, tmp_path / "nv")
    captured = capsys.readouterr()
    assert f"WARNING: {pred.caution}" in captured.err
    assert f"  WARNING: {pred.caution}" in captured.out  # the summary at the end
    assert f"- **WARNING**: {pred.caution}." in (tmp_path / "nv" / "report.md").read_text()
    assert json.loads((tmp_path / "nv" / "accuracy_source.json").read_text())["caution"] == pred.caution
    doc = json.loads(json.dumps(pred.doc))
    doc["provenance"]["heldout"]["kendall_tau"] = 0.7
    assert AccuracyPredictor(doc).caution is None
    del doc["provenance"]["heldout"]
    assert "never measured" in AccuracyPredictor(doc).caution


def test_a_predictor_file_missing_a_field_says_unknown(predictor_file):
    doc = json.loads(Path(predictor_file).read_text())
    for key in ("data", "recipe_ids", "heldout", "variant", "n_pairs"):
        doc["provenance"].pop(key, None)
    pred = AccuracyPredictor(doc)
    assert pred.source == {"data": "unknown", "resolution": "unknown resolution", "recipe": "unknown",
                           "pairs": "unknown", "heldout_tau": "unknown"}
    assert pred.label == ("predicted inherited top-1 % on unknown at unknown resolution val (accuracy predictor of "
                          "supernet recipe unknown, unknown pairs, held-out Kendall tau unknown)")
