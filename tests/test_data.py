"""The data group: digits split, deterministic order, process sharding, imagefolder, clear errors."""
import pytest
import torch

from hwnas.data import DataError, SandwichBatchSampler, build_datasets, build_loaders, data_config


def test_digits_split_is_fixed_stratified_and_upscaled():
    train, val, n = build_datasets({"name": "digits", "image_size": 32})
    assert n == 10 and len(train) + len(val) == 1797 and len(val) == 359
    x, y = train[0]
    assert x.shape == (3, 32, 32) and torch.equal(x[0], x[1])
    counts = torch.bincount(val.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~20 % of each class
    train2, val2, _ = build_datasets({"name": "digits"}, seed=123)  # the training seed does not move the split
    assert torch.equal(val.labels, val2.labels) and torch.equal(val.images, val2.images)


def test_order_depends_on_seed_and_epoch_only():
    a = SandwichBatchSampler(100, 8, seed=1)
    b = SandwichBatchSampler(100, 8, seed=1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first
    assert list(SandwichBatchSampler(100, 8, seed=2)) != first
    assert len(first) == 12 and all(len(batch) == 8 for batch in first)


def test_processes_see_the_micro_batches_of_one_process_with_accumulation():
    one = list(SandwichBatchSampler(200, 4, seed=0, accum_steps=6))
    for world, accum in ((2, 3), (3, 2), (6, 1)):
        shards = [list(SandwichBatchSampler(200, 4, seed=0, rank=r, world_size=world, accum_steps=accum))
                  for r in range(world)]
        steps = len(one) // 6
        for s in range(steps):
            merged = [mb for r in range(world) for mb in shards[r][s * accum:(s + 1) * accum]]
            assert merged == one[s * 6:(s + 1) * 6]


def test_loader_batches_and_too_small_dataset():
    train, val, n = build_loaders({"name": "synthetic", "image_size": 32, "num_train": 40, "num_val": 10,
                                   "num_classes": 5}, batch_size=8, seed=0)
    x, y = next(iter(train))
    assert x.shape == (8, 3, 32, 32) and y.max() < 5 and n == 5
    assert sum(len(b[1]) for b in val) == 10
    x2, _ = next(iter(build_loaders({"name": "synthetic", "image_size": 32, "num_train": 40, "num_val": 10,
                                     "num_classes": 5}, batch_size=8, seed=0)[0]))
    assert torch.equal(x, x2)
    with pytest.raises(DataError, match="fewer than one optimizer step"):
        build_loaders({"name": "digits", "limit_train": 10}, batch_size=8, world_size=2)


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    with pytest.raises(DataError, match=r"data\.batchsize: unknown key"):
        data_config({"name": "digits", "batchsize": 3})
    with pytest.raises(DataError, match="allowed: digits, fashion_mnist, imagefolder, synthetic"):
        data_config({"name": "mnist"})
    with pytest.raises(DataError, match="multiple of 32"):
        data_config({"name": "digits", "image_size": 40})
    with pytest.raises(DataError, match="data.root is not set"):
        build_datasets({"name": "imagefolder"})
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="val: no such folder"):
        build_datasets({"name": "imagefolder", "root": str(tmp_path)})


def test_imagefolder_reads_classes_and_augments_reproducibly(tmp_path):
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 3), ("val", 2)):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                arr = (torch.rand(48, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(tmp_path / split / c / f"{i}.png")
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 32}
    train, val, n = build_datasets(cfg)
    assert n == 2 and len(train) == 6 and len(val) == 4 and train.classes == ["cat", "dog"]
    x, y = train[(4, 7)]
    assert x.shape == (3, 32, 32) and y == 1
    assert torch.equal(x, train[(4, 7)][0])  # same (index, seed): same view
    assert not torch.equal(x, train[(4, 8)][0])  # another seed: another crop
    v = val[0][0]
    assert v.shape == (3, 32, 32) and torch.equal(v, val[0][0])
    loader, vloader, _ = build_loaders(cfg, batch_size=2)
    assert next(iter(loader))[0].shape == (2, 3, 32, 32)
