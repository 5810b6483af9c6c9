"""A search on your own images (issue 18, 1 and 2), as a new user types it: `python -m hwnas.search
+target=onnxruntime_cpu data=imagefolder data.root=DIR data.image_size=32` with no checkpoint trains
the built-in supernet on those images and searches with it, end to end, at a tiny size. One
training image and one validation image do not decode: the run leaves them out, and the supernet's
checkpoint, the report and the summary count them; with data.on_bad_image=error it stops naming
the file, in one line, and leaves nothing in the supernet cache. The same folder searched for
backbones over two targets (issue 26) states the task and the skipped images in its report too.
"""
from __future__ import annotations

import csv
import subprocess
import sys

import pytest
import torch

from conftest import make_image_folder

PRETRAIN = ('pretrain.overrides=["train.epochs=1","train.max_steps_per_epoch=1","train.batch_size=7",'
            '"train.num_random=0","train.eval_calib_batches=0","train.progress=false"]')


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """2 classes: 3 + 1 unreadable training images each side (7 files: one batch of 7 sees them all),
    2 + 1 unreadable validation images."""
    root = tmp_path_factory.mktemp("own_images")
    bad = make_image_folder(root, n_train=3, n_val=2, corrupt=["train/cat/noise.jpg", "val/dog/photo-cut.png"])
    return root, [str(p) for p in bad]


def search(root, tmp_path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "hwnas.search", "+target=onnxruntime_cpu", "data=imagefolder", f"data.root={root}",
         "data.image_size=32", "data.num_workers=0", "progress=false", "search=random", "search.n_trials=2",
         "search.seed_archs=[]", "references=[efficientformerv2_s0]", "evaluator=supernet", "evaluator.recalib_batches=1",
         "evaluator.batch_size=4", PRETRAIN, f"pretrain.cache_dir={tmp_path / 'cache'}",
         f"hydra.run.dir={tmp_path / 'run'}", *extra],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)


def test_search_on_own_images_without_a_checkpoint_skips_and_counts_unreadable_ones(images, tmp_path):
    root, (bad_train, bad_val) = images
    r = search(root, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "Traceback" not in out, out[-4000:]
    # the built-in supernet was trained on these images (no data.root error), without the bad one
    [ckpt] = (tmp_path / "cache").glob("efficientformerv2-*/supernet.pt")
    rec = torch.load(ckpt, weights_only=True)
    assert rec["num_classes"] == 2 and rec["resolution"] == 32
    assert list(rec["meta"]["skipped_images"]) == [bad_train]
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir() and p.name.startswith(".")]
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["metrics.csv", "supernet.pt", "train_config.yaml"]
    # ... and the search evaluated with it on the val images
    with open(tmp_path / "run" / "trials.csv") as f:
        assert len(list(csv.DictReader(f))) == 2
    report = (tmp_path / "run" / "report.md").read_text()
    assert "top-1 % on imagefolder val, at **32×32**" in report
    assert "SMOKE TEST (built-in short supernet, not an accuracy): top-1 % on imagefolder val" in report  # issue 25
    assert ("**unreadable images skipped** (data.on_bad_image=skip): 2 file(s) (1 in the supernet's training; "
            f"2 in this search's evaluation): `{bad_train}`, `{bad_val}`") in report, report
    assert "data: 2 unreadable image(s) skipped (data.on_bad_image=skip)" in r.stdout
    # (the evaluation reads the training images too, to recalibrate BatchNorm: both files there)
    assert f"skipped an unreadable image (data.on_bad_image=skip): {bad_val}" in out


def test_on_bad_image_error_stops_naming_the_file_and_leaves_no_partial_training(images, tmp_path):
    root, (bad_train, _) = images
    r = search(root, tmp_path, "data.on_bad_image=error")
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("hwnas.search: error: ")]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-4000:]
    assert f"{bad_train}: unreadable image" in lines[0] and "data.on_bad_image=skip" in lines[0]
    # the training failed before its first checkpoint: nothing to resume, nothing left in the cache
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]


# ---- the same, as a backbone search over two targets (issue 26, acceptance 3) ---------------------------
SECOND = "onnxruntime_cpu_twin"


@pytest.fixture
def twin_target(tmp_path):
    """A second CPU target, registered here: ONNX Runtime CPU under another name, whose table is the
    shipped onnxruntime_cpu one relabelled (the only shipped table with backbone rows), so that a
    several-target backbone search runs on this machine in seconds. Its rows' fingerprints name the
    shipped target, so the search uses them with `allow_stale=true`."""
    import json
    import shutil
    from dataclasses import dataclass

    from hwnas.latency import default_table_path
    from hwnas.latency.backends import OnnxRuntimeCPU
    from hwnas.latency.config import OnnxRuntimeCPUConfig
    from hwnas.latency.target import register_target, unregister_target
    from hwnas.latency.targets import OnnxRuntimeCPUTarget

    @dataclass
    class TwinConfig(OnnxRuntimeCPUConfig):
        name: str = SECOND

    class TwinBackend(OnnxRuntimeCPU):
        name = SECOND

    class TwinTarget(OnnxRuntimeCPUTarget):
        name = SECOND
        schema = TwinConfig
        backend = TwinBackend

    shipped = default_table_path("onnxruntime_cpu", "efficientformerv2:backbone@512x512")
    table = tmp_path / "tables" / shipped.name
    table.parent.mkdir()
    for src in shipped.parent.glob(shipped.stem + ".*"):
        shutil.copy(src, table.parent / src.name)
    prov = table.with_suffix(".json")
    prov.write_text(json.dumps({**json.loads(prov.read_text()), "target": SECOND}))
    register_target(TwinTarget)
    yield table
    unregister_target(SECOND)


def test_several_target_backbone_search_reports_the_task_and_the_skipped_images(images, twin_target, tmp_path, capsys):
    """`task=backbone` over two targets on the folder with unreadable images, through the search app:
    report.md and the printed summary state the task, the input size and the files left out, as a
    one-target report does."""
    from hwnas.search.app import compose_config, run
    root, (bad_train, bad_val) = images
    cfg = compose_config([
        f"targets=[onnxruntime_cpu,{SECOND}]", f"+target_settings.{SECOND}.table={twin_target}",
        f"+target_settings.{SECOND}.allow_stale=true", "task=backbone",
        "input=[512,512]", "data=imagefolder", f"data.root={root}", "data.image_size=32", "data.num_workers=0",
        "progress=false", "search=random", "search.n_trials=2", "search.seed_archs=[]",
        "references=[efficientformerv2_s0]", "evaluator=supernet", "evaluator.recalib_batches=1",
        "evaluator.batch_size=4", PRETRAIN, f"pretrain.cache_dir={tmp_path / 'cache'}"])
    out = run(cfg, tmp_path / "run")
    assert out["targets"] == ["onnxruntime_cpu", SECOND] and len(out["records"]) == 2
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.startswith(f"# Search report: efficientformerv2 backbone at 512×512 on onnxruntime_cpu, {SECOND}")
    assert "- **task**: `backbone` -- latency and params are those of the backbone" in report, report
    assert ("**unreadable images skipped** (data.on_bad_image=skip): 2 file(s) (1 in the supernet's training; "
            f"2 in this search's evaluation): `{bad_train}`, `{bad_val}`") in report, report
    summary = capsys.readouterr().out  # the summary the app prints
    assert "latency/params of the backbone at 512×512" in summary, summary
    assert "data: 2 unreadable image(s) skipped (data.on_bad_image=skip)" in summary, summary
