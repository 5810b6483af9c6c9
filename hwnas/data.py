"""Image classification data for supernet training and subnet evaluation (the `data=` group).

Three sources, one interface (`build_loaders`):

- `digits`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), upscaled to `image_size`,
  three channels, a fixed stratified train/val split. No download: the default for demos and tests.
- `imagefolder`: `root/train/<class>/*.jpg` and `root/val/<class>/*.jpg` (ImageNet layout), with
  the standard augmentation (random resized crop, horizontal flip) for training and resize +
  centre crop for validation. Pure PIL (torchvision is not a dependency).
- `synthetic`: random tensors with random labels, for throughput benchmarks only.

Order and augmentation are functions of `(seed, epoch, step)`, never of hidden RNG state: the
training sampler shuffles with a permutation derived from `(seed, epoch)`, and every augmented
sample draws from a generator seeded by `(seed, epoch, index)`. A resumed run therefore sees
exactly the batches an uninterrupted one would, and `world_size` processes of batch `b` see
exactly the micro-batches one process with gradient accumulation `world_size` sees.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from hwnas.errors import HwnasError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
DATA_NAMES = ("digits", "imagefolder", "synthetic")


class DataError(HwnasError, ValueError):
    """A data configuration or folder that cannot be used; the message names the fix."""


@dataclass
class DataConfig:
    name: str = "digits"  # digits | imagefolder | synthetic
    image_size: int = 32  # training/evaluation input size (multiple of 32: the supernet is built at it)
    # digits
    val_fraction: float = 0.2  # share of the 1797 digits held out for validation (stratified, fixed)
    split_seed: int = 0  # the split is fixed by this seed, not by the training seed
    # imagefolder
    root: Optional[str] = None  # folder holding train/ and val/ (one sub-folder per class)
    train_dir: str = "train"
    val_dir: str = "val"
    scale_min: float = 0.08  # random resized crop: smallest area share
    hflip: float = 0.5  # horizontal flip probability
    crop_pct: float = 0.875  # validation: resize to image_size / crop_pct, centre crop image_size
    mean: List[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: List[float] = field(default_factory=lambda: list(IMAGENET_STD))
    # synthetic
    num_classes: int = 10
    num_train: int = 1024
    num_val: int = 256
    # all
    limit_train: int = 0  # use only the first N training samples (0: all); quick runs and tests
    num_workers: int = 0  # DataLoader worker processes


def config_from(cls, cfg: Any, section: str, error: type = ValueError):
    """A `cls` dataclass from an instance, a mapping or an OmegaConf node, as plain values (configs
    end up in checkpoints, which hold plain data only); an unknown key is an `error` naming it."""
    if cfg is None:
        return cls()
    if isinstance(cfg, cls):
        return cfg
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise error(f"{section} config: expected a mapping, got {type(cfg).__name__}")
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(map(str, cfg)) - set(allowed))
    if unknown:
        raise error(f"{section}.{unknown[0]}: unknown key (allowed: {', '.join(allowed)})")
    return cls(**{str(k): (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()})


def data_config(cfg: Any = None) -> DataConfig:
    """A `DataConfig` from a dataclass, a mapping or an OmegaConf node; unknown keys are an error."""
    out = config_from(DataConfig, cfg, "data", DataError)
    if out.name not in DATA_NAMES:
        raise DataError(f"data.name: unknown data source {out.name!r} (allowed: {', '.join(DATA_NAMES)})")
    if out.image_size % 32 or out.image_size < 32:
        raise DataError(f"data.image_size: {out.image_size} is not a multiple of 32 (>= 32); the supernet "
                        "is built at this resolution")
    return out


def register() -> None:  # kept for callers; hwnas.config.register_common() stores it too
    """Store the data schema in Hydra's ConfigStore (group `data`, name `base_data`); optional."""
    from hydra.core.config_store import ConfigStore
    ConfigStore.instance().store(group="data", name="base_data", node=DataConfig)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# ---- datasets ------------------------------------------------------------------------------------
class TensorImages(Dataset):
    """In-memory images (N, C, H, W) float and labels (N,) long; the sample seed is ignored."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list):
        self.images, self.labels, self.classes = images, labels, classes

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        return self.images[index], self.labels[index]


class SyntheticImages(Dataset):
    """Random N(0, 1) images and random labels, each a function of (seed, index) only."""

    def __init__(self, n: int, image_size: int, num_classes: int, seed: int):
        self.n, self.image_size, self.seed = n, image_size, seed
        self.classes = [str(i) for i in range(num_classes)]
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, num_classes, (n,), generator=g)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        g = torch.Generator().manual_seed(derive_seed(self.seed, index))
        return torch.randn(3, self.image_size, self.image_size, generator=g), self.labels[index]


class ImageFolder(Dataset):
    """`root/<class>/<image>` files; classes are the sorted sub-folder names."""

    def __init__(self, root: Path, classes: list, image_size: int, train: bool, cfg: DataConfig):
        self.root, self.classes, self.image_size, self.train, self.cfg = root, classes, image_size, train, cfg
        self.samples = []
        for label, c in enumerate(classes):
            folder = root / c
            if not folder.is_dir():
                raise DataError(f"{folder}: missing class folder (the train split has class {c!r}); "
                                "every split needs the same class sub-folders")
            for p in sorted(folder.rglob("*")):
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                    self.samples.append((p, label))
        if not self.samples:
            raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
        self.mean = torch.tensor(cfg.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(cfg.std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, seed = item if isinstance(item, tuple) else (item, 0)
        from PIL import Image
        path, label = self.samples[index]
        with Image.open(path) as im:
            im = im.convert("RGB")
            im = self._train_view(im, seed) if self.train else self._val_view(im)
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (x - self.mean) / self.std, label

    def _train_view(self, im, seed: int):
        """Random resized crop (area share in [scale_min, 1], aspect ratio in [3/4, 4/3]) + flip."""
        from PIL import Image
        g = np.random.default_rng(seed)
        w, h = im.size
        area = w * h
        box = None
        for _ in range(10):
            target = area * g.uniform(self.cfg.scale_min, 1.0)
            ratio = math.exp(g.uniform(math.log(3 / 4), math.log(4 / 3)))
            cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = int(g.integers(0, w - cw + 1)), int(g.integers(0, h - ch + 1))
                box = (x0, y0, x0 + cw, y0 + ch)
                break
        if box is None:  # fall back to a centre crop, as torchvision does
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        im = im.resize((self.image_size, self.image_size), Image.BILINEAR, box=box)
        if g.uniform() < self.cfg.hflip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return im

    def _val_view(self, im):
        from PIL import Image
        size = int(round(self.image_size / self.cfg.crop_pct))
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
        w, h = im.size
        x0, y0 = (w - self.image_size) // 2, (h - self.image_size) // 2
        return im.crop((x0, y0, x0 + self.image_size, y0 + self.image_size))


def _digits(cfg: DataConfig, image_size: int) -> tuple[Dataset, Dataset]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    y = torch.tensor(d.target, dtype=torch.long)
    # A stratified split fixed by split_seed: the same val set whatever the training seed.
    g = torch.Generator().manual_seed(cfg.split_seed)
    train_idx, val_idx = [], []
    for c in range(10):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        n_val = int(round(len(idx) * cfg.val_fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    train_idx = torch.cat(train_idx).sort().values
    val_idx = torch.cat(val_idx).sort().values
    classes = [str(i) for i in range(10)]
    return TensorImages(x[train_idx], y[train_idx], classes), TensorImages(x[val_idx], y[val_idx], classes)


def _imagefolder(cfg: DataConfig, image_size: int) -> tuple[Dataset, Dataset]:
    if not cfg.root:
        raise DataError("data.root is not set: data=imagefolder needs data.root=DIR holding "
                        f"{cfg.train_dir}/ and {cfg.val_dir}/ with one sub-folder per class")
    root = Path(cfg.root).expanduser()
    for split in (cfg.train_dir, cfg.val_dir):
        if not (root / split).is_dir():
            raise DataError(f"{root / split}: no such folder; data=imagefolder expects "
                            f"{root}/{cfg.train_dir}/<class>/*.jpg and {root}/{cfg.val_dir}/<class>/*.jpg")
    classes = sorted(p.name for p in (root / cfg.train_dir).iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{root / cfg.train_dir}: no class sub-folders")
    return (ImageFolder(root / cfg.train_dir, classes, image_size, True, cfg),
            ImageFolder(root / cfg.val_dir, classes, image_size, False, cfg))


def build_datasets(data_cfg: Any, image_size: int | None = None, seed: int = 0) -> tuple[Dataset, Dataset, int]:
    """(train set, val set, number of classes) of a data config."""
    cfg = data_config(data_cfg)
    size = int(image_size or cfg.image_size)
    if cfg.name == "digits":
        train, val = _digits(cfg, size)
    elif cfg.name == "imagefolder":
        train, val = _imagefolder(cfg, size)
    else:
        train = SyntheticImages(cfg.num_train, size, cfg.num_classes, derive_seed(seed, 1))
        val = SyntheticImages(cfg.num_val, size, cfg.num_classes, derive_seed(seed, 2))
    if cfg.limit_train and cfg.limit_train < len(train):
        train = _Subset(train, cfg.limit_train)
    return train, val, len(val.classes)


class _Subset(Dataset):
    def __init__(self, base: Dataset, n: int):
        self.base, self.n, self.classes = base, n, base.classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        return self.base[item]


# ---- sampling -----------------------------------------------------------------------------------
class SandwichBatchSampler(Sampler):
    """The training order: for each optimizer step, `world_size * accum_steps` micro-batches.

    Epoch e shuffles the training set with a permutation seeded by (seed, e). Optimizer step s
    takes the next `world_size * accum_steps * batch_size` indices, cut into micro-batches
    u = 0, 1, ...; process `rank` runs micro-batches `rank * accum_steps + a`. One process with
    `accum_steps = W * A` therefore runs exactly the micro-batches that W processes with A run.
    Each index comes with its augmentation seed (seed, epoch, index). The last incomplete step
    is dropped (kept, as smaller micro-batches, with `drop_last=False`: calibration, not training).
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 accum_steps: int = 1, shuffle: bool = True, max_steps: int = 0, drop_last: bool = True):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps
        self.shuffle, self.epoch = shuffle, 0
        per_step = batch_size * world_size * accum_steps
        self.steps = n // per_step if drop_last else math.ceil(n / per_step)
        if max_steps:
            self.steps = min(self.steps, max_steps)
        if self.steps == 0:
            raise DataError(f"the training set has {n} samples, fewer than one optimizer step needs "
                            f"(batch_size {batch_size} x processes {world_size} x accum_steps {accum_steps}); "
                            "lower train.batch_size")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps * self.accum_steps

    def __iter__(self) -> Iterator[list]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        b, per_step = self.batch_size, self.batch_size * self.world_size * self.accum_steps
        for s in range(self.steps):
            for a in range(self.accum_steps):
                u = self.rank * self.accum_steps + a
                start = s * per_step + u * b
                batch = [(i, derive_seed(self.seed, self.epoch, i)) for i in order[start:start + b]]
                if batch:
                    yield batch


class _Batches(Sampler):
    """Plain sequential batches over a dataset (validation, calibration)."""

    def __init__(self, n: int, batch_size: int):
        self.n, self.batch_size = n, batch_size

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def __iter__(self):
        for start in range(0, self.n, self.batch_size):
            yield [(i, 0) for i in range(start, min(self.n, start + self.batch_size))]


def build_loaders(data_cfg: Any = None, image_size: int | None = None, batch_size: int = 64, seed: int = 0,
                  *, rank: int = 0, world_size: int = 1, accum_steps: int = 1, max_steps_per_epoch: int = 0,
                  num_workers: int | None = None, val_batch_size: int | None = None, drop_last: bool = True
                  ) -> tuple[DataLoader, DataLoader, int]:
    """(train loader, val loader, number of classes).

    The train loader yields this process's micro-batches in the order `SandwichBatchSampler`
    defines (call `train_loader.batch_sampler.set_epoch(e)` before each epoch); the val loader
    yields the whole validation set in file order, unshuffled, on every process.
    `drop_last=False` keeps a last incomplete batch (for BatchNorm calibration on a small set).
    """
    cfg = data_config(data_cfg)
    train, val, num_classes = build_datasets(cfg, image_size, seed)
    workers = cfg.num_workers if num_workers is None else num_workers
    sampler = SandwichBatchSampler(len(train), batch_size, seed, rank, world_size, accum_steps,
                                   max_steps=max_steps_per_epoch, drop_last=drop_last)
    kw = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())
    train_loader = DataLoader(train, batch_sampler=sampler, **kw)
    val_loader = DataLoader(val, batch_sampler=_Batches(len(val), val_batch_size or batch_size), **kw)
    return train_loader, val_loader, num_classes


__all__ = ["DataConfig", "DataError", "SandwichBatchSampler", "build_datasets", "build_loaders", "config_from",
           "data_config", "derive_seed", "register"]
