"""The accuracy experiments' job runner (`hwnas.training._accuracy_jobs`, moved out of experiments/ in
issue 26): recipe ids, JSON-lines results read back after a kill, strict atomic JSON, and one real
process tree on the CPU -- a stand-alone worker training one arch from the queue, its record and the
run summary on disk."""
from __future__ import annotations

import json
import math

import pytest

import search_spaces
from hwnas.training._accuracy_jobs import KINDS, clean, read_jsonl, read_results, recipe_id, run_tree, write_json


def test_recipe_id_names_the_parts_whatever_their_key_order():
    a = recipe_id({"epochs": 6, "lr": 2e-3}, "fashion_mnist")
    assert len(a) == 12 and int(a, 16) >= 0
    assert recipe_id({"lr": 2e-3, "epochs": 6}, "fashion_mnist") == a
    assert recipe_id({"epochs": 7, "lr": 2e-3}, "fashion_mnist") != a
    assert recipe_id("fashion_mnist", {"epochs": 6, "lr": 2e-3}) != a  # the parts' order does count


def test_results_are_read_back_after_a_kill_and_once_across_resumed_runs(tmp_path):
    first, second = tmp_path / "run1", tmp_path / "run2"
    for d in (first, second):
        d.mkdir()
    rec = {"key": "a", "seed": 0, "val_top1": 50.0}
    (first / "standalone.jsonl").write_text(json.dumps(rec) + "\n\n" + '{"key": "b", "se')  # torn last line
    (second / "standalone.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "seed": 1}) + "\n")
    (second / "inherited.jsonl").write_text(json.dumps({"key": "a", "kind": "ranking"}) + "\n")
    assert read_jsonl(first / "standalone.jsonl") == [rec]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    res = read_results([first, second])
    assert set(res) == set(KINDS)
    assert res["standalone"] == [rec, {**rec, "seed": 1}]  # the line copied forward counts once
    assert res["inherited"] == [{"key": "a", "kind": "ranking"}] and res["supernet"] == []


def test_write_json_is_strict_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"a": math.nan, "b": [1.0, math.inf, (2, -math.inf)], "c": {"d": 0.5}})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None, [2, None]], "c": {"d": 0.5}}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    assert clean(3) == 3 and clean("x") == "x"
    with pytest.raises(TypeError):  # not JSON at all: an error, not a half-written file
        write_json(path, {"a": object()})
    assert json.loads(path.read_text())["c"] == {"d": 0.5}


def test_run_tree_trains_a_queued_arch_on_the_cpu_and_writes_its_record_and_summary(tmp_path):
    space = search_spaces.get_space("efficientformerv2")
    arch = space.min_arch()
    data = {"name": "synthetic", "image_size": 32, "num_classes": 2, "num_train": 8, "num_val": 4}
    recipe = {"epochs": 1, "batch_size": 4, "max_steps_per_epoch": 1, "eval_batch_size": 4, "cuda_graph": False}
    job = dict(space=space.name, key=arch.id, name="min", arch=arch.to_dict(), seed=0, recipe=recipe,
               recipe_id=recipe_id(recipe), macs=arch.macs(2), role="test")
    common = dict(device="cpu", data=data, smoke=True, min_job_s=0, eval_margin_s=0)
    carried = {"standalone": [{"key": "earlier", "status": "done"}]}
    summary = run_tree(tmp_path / "out", common, [job], [], workers=2, deadline_s=300, carried=carried,
                       meta={"what": "test"})
    res = read_results([tmp_path / "out"])
    [earlier, rec] = res["standalone"]
    assert earlier == carried["standalone"][0]  # carried first, so the folder alone holds everything
    assert rec["status"] == "done", rec
    assert rec["key"] == arch.id and rec["role"] == "test" and rec["worker"] == "sa0" and rec["smoke"] is True
    assert rec["arch"] == arch.with_resolution(32).to_dict()  # trained at the data's image size
    assert 0 <= rec["val_top1"] <= 100 and rec["test_top1"] is None  # synthetic data holds no test split
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run == json.loads(json.dumps(summary))
    assert run["what"] == "test" and run["workers"] == 1 and run["records"] == {"standalone": 1, "inherited": 0, "supernet": 0}
    assert run["jobs_total"] == 1 and run["jobs_not_started"] == 0 and run["device"].startswith("CPU")
    assert "sa0" in (tmp_path / "out" / "log.txt").read_text()
