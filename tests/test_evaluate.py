"""The evaluator's mechanics on a small static model and an untrained supernet (cheap); accuracy
after training and recalibration vs shared statistics is in test_train.py."""
import json

import pytest
import torch
import torch.nn as nn

import search_spaces
import supernet
from hwnas.checkpoint import CheckpointError, save_supernet
from hwnas.evaluate import SubnetEvaluator, recalibrate_bn, top1


def test_recalibration_is_the_exact_average_over_the_batches():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    batches = [(torch.randn(5, 3, 2, 2) + i, torch.zeros(5, dtype=torch.long)) for i in range(3)]
    recalibrate_bn(model, batches, batches=2)
    bn = model[1]
    with torch.no_grad():
        means = [model[0](x).mean((0, 2, 3)) for x, _ in batches[:2]]
    torch.testing.assert_close(bn.running_mean, (means[0] + means[1]) / 2)
    assert bn.momentum == 0.1 and not model.training  # restored, left in eval mode
    assert int(bn.num_batches_tracked) == 2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    net = supernet.build_supernet("efficientformerv2", num_classes=10, resolution=32)
    path = tmp_path_factory.mktemp("ev") / "supernet.pt"
    save_supernet(net, path, {"data": "digits"})
    return path


def test_cache_by_arch_id_in_memory_and_on_disk(ckpt, tmp_path):
    cache = tmp_path / "acc.json"
    data = {"name": "digits", "limit_train": 64}
    ev = SubnetEvaluator.from_checkpoint(ckpt, data, calib_batches=1, batch_size=32, cache_path=cache,
                                         max_val_batches=2)
    arch = search_spaces.get_space("efficientformerv2").min_arch()  # resolution 224
    acc = ev.evaluate(arch)
    assert 0 <= acc <= 100 and ev.resolution == 32
    saved = json.loads(cache.read_text())
    assert saved["top1"] == {arch.with_resolution(32).id: acc}
    ev2 = SubnetEvaluator.from_checkpoint(ckpt, data, recalib_batches=1, batch_size=32, cache_path=cache,
                                          max_val_batches=2)
    assert ev2.cache == ev.cache  # same checkpoint and settings: read back
    ev2.net = None  # a cached arch needs no model at all
    assert ev2.evaluate(arch.with_resolution(64)) == acc  # the same arch at the data's resolution
    ev3 = SubnetEvaluator.from_checkpoint(ckpt, data, calib_batches=2, batch_size=32, cache_path=cache,
                                          max_val_batches=2)
    assert ev3.cache == {}  # other settings: the file's results do not apply


def test_checkpoint_and_data_must_agree(ckpt):
    with pytest.raises(CheckpointError, match="10 classes, but the data has 3"):
        SubnetEvaluator.from_checkpoint(ckpt, {"name": "synthetic", "image_size": 32, "num_classes": 3,
                                               "num_train": 64, "num_val": 8})


def test_a_supernet_scored_on_other_data_than_it_was_trained_on_is_refused(ckpt, fashion_root):
    """Issue 24: a supernet trained on digits scored on Fashion-MNIST (both 10 classes at 32 px) gave
    numbers that looked like accuracies."""
    with pytest.raises(CheckpointError, match=r"a supernet trained on data=digits \(32 px\), scored on "
                                              r"data=fashion_mnist: .* give data=digits"):
        SubnetEvaluator.from_checkpoint(ckpt, {"name": "fashion_mnist", "root": str(fashion_root), "val_size": 40},
                                        calib_batches=1, batch_size=32)


def test_top1_counts_correct_predictions():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    loader = [(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.tensor([0, 1, 1]))]
    assert top1(model, loader) == pytest.approx(200 / 3)
