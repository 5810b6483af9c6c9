"""Stand-alone training (hwnas.training.standalone) on the CPU, where the step runs eagerly: the step it
trains is the documented one, it learns, it is reproducible, and a deadline stops it cleanly."""
import time

import pytest
import torch
import torch.nn.functional as F

import search_spaces
import supernet
from hwnas.data import EvalBatches, TrainBatches, derive_seed, stored_splits
from hwnas.training.standalone import gives_up, recipe_config, train_standalone
from hwnas.training.trainer import lr_at


@pytest.fixture(scope="module")
def data(fashion_root):
    cfg = {"name": "fashion_mnist", "root": str(fashion_root), "image_size": 32, "val_size": 40}
    return cfg, stored_splits(cfg, splits=("train", "val", "test"))


def test_the_training_step_is_the_documented_one(data):
    """Two steps by hand (the epoch plan's batches, crops and flips; cross-entropy with label smoothing;
    AdamW on the scheduled LR, decay on conv/linear weights only) give the loss train_standalone reports."""
    cfg, splits = data
    arch = search_spaces.get_space("efficientformerv2").min_arch()
    # a large weight decay, so that decaying the wrong tensors would show in the second step's loss
    recipe = dict(epochs=1, batch_size=16, max_steps_per_epoch=2, warmup_epochs=0.5, lr=3e-3, weight_decay=2.0)
    got = train_standalone(arch, cfg, recipe, seed=3, device="cpu", splits=splits)
    assert got["status"] == "done" and got["steps"] == 2 and got["epochs_done"] == 1

    train = splits["train"]
    torch.manual_seed(derive_seed(3, 0x57A))
    model = supernet.build_model(arch.with_resolution(32), num_classes=10).train()
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and not n.endswith("attention_biases")]
    rest = [p for n, p in model.named_parameters() if not (p.ndim > 1 and not n.endswith("attention_biases"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 2.0}, {"params": rest, "weight_decay": 0.0}],
                            foreach=True)
    idx, shift, flip = TrainBatches(train, 16, 3, max_steps=2).plan(0)
    losses = []
    for s in range(2):
        for g in opt.param_groups:
            g["lr"] = lr_at(s, 2, 1, 3e-3, 1e-5)
        sl = slice(16 * s, 16 * s + 16)
        opt.zero_grad()
        loss = F.cross_entropy(model(train.batch(idx[sl], shift[sl], flip[sl])), train.labels[idx[sl]],
                               label_smoothing=0.1)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert got["train_loss"] == pytest.approx(sum(losses) / 2, rel=1e-6)
    from hwnas.evaluate import top1
    model.eval()
    assert got["val_top1"] == pytest.approx(top1(model, EvalBatches(splits["val"], 1000)), abs=1e-9)


def test_learns_reproducibly_and_reports_its_speed(data):
    cfg, splits = data
    arch = search_spaces.get_space("efficientformerv2").min_arch()
    a = train_standalone(arch, cfg, dict(epochs=4, batch_size=16, lr=5e-3, warmup_epochs=0.5, weight_decay=0.0),
                         seed=0, device="cpu", splits=splits)
    assert a["test_top1"] > 40 and a["val_top1"] > 40, a  # 10 classes: chance is 10 %
    assert a["images_per_s"] > 0 and a["cuda_graph"] is False and a["stream_busy_share"] is None
    assert a["arch_id"] == arch.with_resolution(32).id and a["params"] == arch.with_resolution(32).params(10)
    short = dict(epochs=1, batch_size=16, max_steps_per_epoch=3)
    b, b2, c = (train_standalone(arch, cfg, short, seed=s, device="cpu", splits=splits) for s in (0, 0, 1))
    assert (b["train_loss"], b["val_top1"], b["test_top1"]) == (b2["train_loss"], b2["val_top1"], b2["test_top1"])
    assert c["train_loss"] != b["train_loss"]


def test_a_deadline_stops_between_epochs(data):
    cfg, splits = data
    arch = search_spaces.get_space("efficientformerv2").min_arch()
    r = train_standalone(arch, cfg, dict(epochs=50, batch_size=32), seed=0, device="cpu", splits=splits,
                         deadline=time.time() + 0.5)
    assert r["status"] == "timeout" and r["epochs_done"] == 1 and r["test_top1"] is None


def test_recipe_errors_name_the_key():
    with pytest.raises(ValueError, match=r"recipe\.epoch: unknown key"):
        recipe_config({"epoch": 3})
    with pytest.raises(ValueError, match="fp16 needs a loss scaler"):
        recipe_config({"amp": "fp16"})


def test_own_data_through_imagefolder_with_a_test_split(tmp_path):
    import numpy as np
    from PIL import Image
    from hwnas.data import DataError, build_test_loader
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 2), ("test", 3)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray((rng.random((36, 40, 3)) * 255).astype(np.uint8)).save(tmp_path / split / c / f"{i}.png")
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 32, "test_dir": "test"}
    arch = search_spaces.get_space("efficientformerv2").min_arch()
    r = train_standalone(arch, cfg, dict(epochs=1, batch_size=4), seed=0, device="cpu")
    assert r["status"] == "done" and r["steps"] == 4 and r["cuda_graph"] is False
    assert r["test_top1"] in (0.0, 100 / 6, 200 / 6, 50.0, 400 / 6, 500 / 6, 100.0)  # 6 test images
    assert sum(len(y) for _, y in build_test_loader(cfg, batch_size=4)) == 6
    assert build_test_loader(dict(cfg, test_dir=None)) is None
    with pytest.raises(DataError, match="no such folder"):
        build_test_loader(dict(cfg, test_dir="holdout"))


def test_a_run_slowed_by_the_start_of_its_neighbours_is_not_given_up():
    """The rule behind the deadline: give up only where the run could not finish even at twice its rate so
    far (runs sharing a GPU slow each other most at the start). Measured case: one epoch of 20 done in 8 s
    beside 8 starting neighbours, 127 s to the deadline; the run finished in 48 s in all."""
    kw = dict(seconds=8.0, steps_done=39, steps_left=19 * 39, epochs_left=19)
    assert not gives_up(0.0, 127.0, **kw)  # 152 s at the first epoch's rate; 76 s (+ evaluation) at twice it
    assert gives_up(0.0, 60.0, **kw)  # not even at twice the rate
    assert gives_up(0.0, 80.0, **kw)  # at twice the rate the training fits, the evaluation does not


def test_zero_init_residual_starts_every_nextvit_block_from_its_shortcut(data, monkeypatch):
    """Recipe.zero_init_residual: each NCB starts as its patch embedding, each NTB as its patch embedding
    concatenated with the MHCA channels' projection; the option reaches the model train_standalone builds."""
    space = search_spaces.get_space("nextvit", resolution=32)
    model = supernet.build_model(space.min_arch(), num_classes=10).eval()
    assert supernet.zero_init_residual(model) == len(model.blocks())
    kinds = set()
    with torch.no_grad():
        h = model.stem(torch.randn(2, 3, 32, 32))
        for stage in model.stages:
            h = stage.downsample(h)
            for block in stage.blocks:
                kinds.add(type(block).__name__)
                e = block.patch_embed(h)
                want = torch.cat([e, block.projection(e)], dim=1) if getattr(block, "mhca_chs", 0) else e
                h = block(h)
                assert torch.equal(h, want), type(block).__name__
    assert kinds == {"NextConvBlock", "NextTransformerBlock"}
    # the option is passed through to the model trained, and only when asked for
    calls = []
    real = supernet.zero_init_residual
    monkeypatch.setattr(supernet, "zero_init_residual", lambda m: calls.append(real(m)))
    cfg, splits = data
    short = dict(epochs=1, batch_size=16, max_steps_per_epoch=2)
    r = train_standalone(space.min_arch(), cfg, short, seed=0, device="cpu", splits=splits)
    assert calls == [] and r["recipe"]["zero_init_residual"] is False
    r = train_standalone(space.min_arch(), cfg, dict(short, zero_init_residual=True), seed=0, device="cpu", splits=splits)
    assert len(calls) == 1 and calls[0] > 0 and r["recipe"]["zero_init_residual"] is True


def test_the_zero_init_pilot_trains_each_arch_both_ways_and_resumes(tmp_path, fashion_root):
    """experiments/archive/zero_init_pilot.py: one run with the option off and one on per arch, appended as they end,
    and a rerun trains nothing again."""
    import json
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "archive"))
    import zero_init_pilot
    out = tmp_path / "pilot.jsonl"
    argv = ["--archs", "min", "--epochs", "1", "--batch", "16", "--limit-train", "32", "--val-size", "40",
            "--data-root", str(fashion_root), "--out", str(out)]
    assert zero_init_pilot.main(argv) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["name"], r["zero_init_residual"], r["recipe"]["zero_init_residual"]) for r in rows] == \
        [("min", False, False), ("min", True, True)]
    assert rows[0]["train_loss"] != rows[1]["train_loss"]  # the same seed and data: only the init differs
    assert "| min |" in out.with_suffix(".md").read_text()
    assert zero_init_pilot.main(argv) == 0 and len(out.read_text().splitlines()) == 2  # resumed: nothing again
    with pytest.raises(SystemExit, match="not in"):
        zero_init_pilot.main(["--archs", "nextvit_xl", "--out", str(out)])
