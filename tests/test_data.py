"""The data group: digits split, deterministic order, process sharding, imagefolder, clear errors."""
import pytest
import torch

from conftest import make_fashion_mnist
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


def test_an_image_folder_of_one_class_is_refused(tmp_path):
    """Issue 24: a one-class folder trained to 100 % (every label is the one class)."""
    from conftest import make_image_folder
    make_image_folder(tmp_path, classes=("cat",))
    with pytest.raises(DataError, match=r"train: one class sub-folder \(cat\); a classifier needs at least 2"):
        build_loaders({"name": "imagefolder", "root": str(tmp_path)}, batch_size=2)


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


# ---- IDX files and Fashion-MNIST -------------------------------------------------------------------
def test_idx_files_round_trip_plain_and_gzip(tmp_path):
    import gzip
    import numpy as np
    from hwnas.data import read_idx, write_idx
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, (5, 28, 28)).astype(np.uint8), rng.integers(0, 10, 7).astype(np.uint8),
              rng.standard_normal((3, 4)).astype(np.float32), rng.integers(-5, 5, (2, 3, 4)).astype(np.int32)]
    for i, a in enumerate(arrays):
        for name in (f"a{i}-idx-ubyte", f"a{i}-idx-ubyte.gz"):
            path = write_idx(tmp_path / name, a)
            b = read_idx(path)
            assert b.dtype == a.dtype and b.shape == a.shape and np.array_equal(a, b), name
            assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    # the header is the standard one: 00 00 08 03, then big-endian dimensions (what MNIST files hold)
    raw = gzip.decompress((tmp_path / "a0-idx-ubyte.gz").read_bytes())
    assert raw[:16] == bytes([0, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28])
    (tmp_path / "cut").write_bytes(raw[:100])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "cut")
    (tmp_path / "junk").write_bytes(b"not an idx file")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_fashion_mnist_missing_folder_names_the_debian_package(tmp_path):
    with pytest.raises(DataError, match=r"no such folder.*dataset-fashion-mnist.*data\.root"):
        build_datasets({"name": "fashion_mnist", "root": str(tmp_path / "nowhere")})
    make_fashion_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"has no t10k-labels-idx1-ubyte\[\.gz\].*dataset-fashion-mnist"):
        build_datasets({"name": "fashion_mnist", "root": str(tmp_path)})


def test_fashion_mnist_val_is_carved_from_train_disjoint_and_fixed(tmp_path):
    from hwnas.data import read_idx, stored_splits
    make_fashion_mnist(tmp_path, n_train=120, n_test=30)
    cfg = {"name": "fashion_mnist", "root": str(tmp_path), "image_size": 32, "val_size": 40}
    s = stored_splits(cfg, splits=("train", "val", "test"))
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (80, 40, 30)
    assert s["train"].images.shape[1:] == (1, 28, 28) and s["train"].images.dtype == torch.uint8
    # every training image is in exactly one of train and val
    full = torch.from_numpy(read_idx(tmp_path / "train-images-idx3-ubyte.gz").copy()).reshape(120, -1)
    rows = lambda split: {full[i].numpy().tobytes() for i in range(120)} & {  # noqa: E731
        s[split].images[j].reshape(-1).numpy().tobytes() for j in range(len(s[split]))}
    assert not rows("train") & rows("val") and len(rows("train") | rows("val")) == 120
    # the same split whatever the training seed, every time; another split_seed moves it
    again = stored_splits(cfg, splits=("val",))["val"]
    assert torch.equal(again.images, s["val"].images) and torch.equal(again.labels, s["val"].labels)
    train, val, n = build_loaders(cfg, batch_size=8, seed=123)
    assert n == 10 and torch.equal(val.data.images, s["val"].images)
    other = stored_splits(dict(cfg, split_seed=1), splits=("val",))["val"]
    assert not torch.equal(other.images, s["val"].images)
    # plain IDX files (not gzip) read the same
    make_fashion_mnist(tmp_path / "plain", n_train=120, n_test=30, gz=False)
    plain = stored_splits(dict(cfg, root=str(tmp_path / "plain")), splits=("val",))["val"]
    assert torch.equal(plain.images, s["val"].images)
    x, y = next(iter(train))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and torch.equal(x[:, 0], x[:, 1])
    with pytest.raises(DataError, match="val_size=200"):
        stored_splits(dict(cfg, val_size=200))


def test_fashion_mnist_items_2_pairs_two_images_labelled_left_to_right(tmp_path):
    """data.items=2: each sample is one split image on the left and another on the right of a 56x56
    canvas, labelled 10 x left + right (100 classes); the same pairing every time, no flip."""
    from hwnas.data import data_config, fingerprint_view, read_idx, stored_splits
    make_fashion_mnist(tmp_path, n_train=120, n_test=30)
    base = {"name": "fashion_mnist", "root": str(tmp_path), "image_size": 64, "val_size": 40}
    plain = stored_splits(base, splits=("train", "val", "test"))
    pairs = stored_splits(dict(base, items=2), splits=("train", "val", "test"))
    test_x = torch.from_numpy(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz").copy())
    test_y = torch.from_numpy(read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz").astype("int64"))
    for split in ("train", "val", "test"):
        p, q = pairs[split], plain[split]
        assert len(p) == len(q) and p.images.shape[1:] == (1, 56, 56) and len(p.classes) == 100
        assert torch.equal(p.images[:, :, 14:42, :28], q.images)  # sample i: image i on the left
        assert not p.images[:, :, :14].any() and not p.images[:, :, 42:].any()
        # the right half is another image of the same split, and the label names both in order
        right = {q.images[j].numpy().tobytes(): int(q.labels[j]) for j in range(len(q))}
        for i in range(len(p)):
            r = p.images[i, :, 14:42, 28:].numpy().tobytes()
            assert r in right and int(p.labels[i]) == 10 * int(q.labels[i]) + right[r]
        assert p.classes[int(p.labels[0])] == " | ".join(q.classes[c] for c in divmod(int(p.labels[0]), 10))
    assert torch.equal(plain["test"].images[:, 0], test_x) and torch.equal(plain["test"].labels, test_y)
    # the right-hand images are a permutation (each used once); fixed, and moved by split_seed only
    rights = sorted(pairs["test"].images[i, :, 14:42, 28:].numpy().tobytes() for i in range(30))
    assert rights == sorted(plain["test"].images[i].numpy().tobytes() for i in range(30))
    again = stored_splits(dict(base, items=2), splits=("val",))["val"]
    assert torch.equal(again.images, pairs["val"].images)
    other = stored_splits(dict(base, items=2, split_seed=1), splits=("val",))["val"]
    assert not torch.equal(other.images[:, :, :, 28:], pairs["val"].images[:, :, :, 28:])
    # a flip would swap the items: off by default, refused when asked for
    assert data_config(dict(base, items=2)).hflip == 0.0 and data_config(base).hflip == 0.5
    with pytest.raises(DataError, match=r"data\.hflip=0\.5: data\.items=2 .* set data\.hflip=0"):
        data_config(dict(base, items=2, hflip=0.5))
    with pytest.raises(DataError, match=r"data\.items"):
        data_config(dict(base, items=3))
    # a plain config's fingerprint is what it was before the key existed; a paired one says so
    assert "items" not in fingerprint_view(data_config(base))
    assert fingerprint_view(data_config(dict(base, items=2)))["items"] == 2
    x, y = next(iter(build_loaders(dict(base, items=2), batch_size=8, seed=0)[0]))
    assert x.shape == (8, 3, 64, 64) and int(y.max()) < 100


def test_stored_batch_crops_and_flips_exactly():
    """The device-side crop of the zero-padded image and the flip equal a plain per-image reference."""
    import numpy as np
    from hwnas.data import StoredImages
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    ds = StoredImages(images, torch.arange(6), list("abcdef"), scale=1 / 255, image_size=32, mean=[0.5] * 3,
                      std=[0.25] * 3, crop_padding=3, hflip=0.5)
    shift, flip = ds.augmentation(torch.Generator().manual_seed(1), 6)
    assert shift.min() >= 0 and shift.max() <= 6 and flip.any() and not flip.all()
    x = ds.batch(torch.tensor([5, 0, 3]), shift[:3], flip[:3])
    for row, i in enumerate((5, 0, 3)):
        padded = np.pad(images[i].numpy(), ((0, 0), (3, 3), (3, 3)))
        dy, dx = shift[row].tolist()
        crop = padded[:, dy:dy + 32, dx:dx + 32]
        if flip[row]:
            crop = crop[:, :, ::-1]
        want = (torch.from_numpy(crop.copy()).float() / 255 - 0.5) / 0.25
        torch.testing.assert_close(x[row], want, rtol=0, atol=1e-6)


def test_stored_batches_split_over_processes_like_accumulation():
    """Micro-batches (crops and flips included) of W processes x A accumulation = one process x W*A,
    and an epoch's batches are a function of (seed, epoch) only (what resume relies on)."""
    from hwnas.data import StoredImages, TrainBatches
    g = torch.Generator().manual_seed(0)
    ds = StoredImages(torch.randint(0, 256, (70, 1, 28, 28), generator=g, dtype=torch.uint8),
                      torch.randint(0, 10, (70,), generator=g), [str(i) for i in range(10)], scale=1 / 255,
                      image_size=32, mean=[0.3] * 3, std=[0.3] * 3, crop_padding=4, hflip=0.5)
    one = TrainBatches(ds, 4, seed=7, accum_steps=4)
    one.set_epoch(2)
    ref = list(one)
    assert len(ref) == 4 * (70 // 16)
    for world, accum in ((2, 2), (4, 1)):
        shards = []
        for r in range(world):
            t = TrainBatches(ds, 4, seed=7, rank=r, world_size=world, accum_steps=accum)
            t.set_epoch(2)
            shards.append(list(t))
        for s in range(len(ref) // 4):
            merged = [mb for r in range(world) for mb in shards[r][s * accum:(s + 1) * accum]]
            for (x, y), (x2, y2) in zip(merged, ref[s * 4:(s + 1) * 4]):
                assert torch.equal(x, x2) and torch.equal(y, y2)
    again = TrainBatches(ds, 4, seed=7, accum_steps=4)
    again.set_epoch(2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(again, ref))
    again.set_epoch(3)
    assert not torch.equal(next(iter(again))[0], ref[0][0])
    plain = TrainBatches(ds, 4, seed=7, accum_steps=4, augment=False)
    plain.set_epoch(2)
    x, y = next(iter(plain))
    assert torch.equal(y, ref[0][1]) and not torch.equal(x, ref[0][0])  # same order, no crop/flip


# ---- unreadable images (issue 18, 2) -----------------------------------------------------------------
def test_an_unreadable_image_is_skipped_once_and_counted(tmp_path, caplog):
    """data.on_bad_image=skip (the default): a file that does not decode -- random bytes named .jpg,
    a PNG cut in half -- is left out of its batch, the rest of the batch goes on, and each such file is
    logged once and kept in the loader's `skipped` (path -> reason)."""
    from conftest import make_image_folder
    from hwnas.data import skipped_images
    bad = make_image_folder(tmp_path, corrupt=["train/cat/noise.jpg", "val/dog/photo-cut.png"])
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 32, "num_workers": 0}
    train, val, n = build_loaders(cfg, batch_size=3, seed=0)
    assert n == 2 and len(train.dataset) == 9 and len(val.dataset) == 5  # the bad files are listed, then skipped
    with caplog.at_level("WARNING"):
        for epoch in range(2):
            train.set_epoch(epoch)
            seen = sum(len(y) for _, y in train)
            assert 6 <= seen <= 8 and seen < 3 * train.steps  # 3 steps of 3: the step holding noise.jpg has 2
        vals = [len(y) for _, y in val] + [len(y) for _, y in val]
    assert sum(vals) == 2 * 4  # every readable val image, each pass
    assert skipped_images(train, val) == {str(bad[0]): train.skipped[str(bad[0])],
                                          str(bad[1]): val.skipped[str(bad[1])]}
    assert "UnidentifiedImageError" in train.skipped[str(bad[0])] and "truncated" in val.skipped[str(bad[1])].lower()
    warned = [r.getMessage() for r in caplog.records if "unreadable image" in r.getMessage()]
    assert len(warned) == 2 and any(str(bad[0]) in w for w in warned)  # once per file, not per pass


def test_on_bad_image_error_stops_at_the_file_naming_it(tmp_path):
    from conftest import make_image_folder
    [bad] = make_image_folder(tmp_path, corrupt=["val/cat/broken.png"])
    cfg = {"name": "imagefolder", "root": str(tmp_path), "image_size": 32, "num_workers": 0, "on_bad_image": "error"}
    train, val, _ = build_loaders(cfg, batch_size=2, seed=0)
    assert sum(len(y) for _, y in train) == 8  # the training images are all readable
    with pytest.raises(DataError, match=f"{bad}: unreadable image .*data.on_bad_image=skip"):
        list(val)
    with pytest.raises(DataError, match="data.on_bad_image='never': allowed: skip, error"):
        data_config({**cfg, "on_bad_image": "never"})


def test_a_training_batch_of_unreadable_images_only_is_an_error(tmp_path):
    from conftest import make_image_folder
    make_image_folder(tmp_path, n_train=0, corrupt=["train/cat/a.jpg", "train/dog/b.jpg"])
    train, _, _ = build_loaders({"name": "imagefolder", "root": str(tmp_path), "image_size": 32, "num_workers": 0},
                                batch_size=2, seed=0)
    with pytest.raises(DataError, match="every image of a training batch is unreadable"):
        next(iter(train))
