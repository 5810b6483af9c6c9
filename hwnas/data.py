"""Image classification data for supernet training and subnet evaluation (the `data=` group).

Datasets are a registry (`@register_dataset`, as timm registers a model): each is a `DataSource`
with its own schema (a `DataConfig` subclass), so a key of another dataset is one error naming the
dataset, the key and the keys it accepts; one can be registered from outside hwnas. Four built in,
one interface (`build_loaders`):

- `digits`: scikit-learn's bundled 8x8 digits (1797 images, 10 classes), upscaled to `image_size`,
  three channels, a fixed stratified train/val split. No download: the default for demos and tests.
- `fashion_mnist`: Fashion-MNIST (Zalando's 28x28 grayscale clothing images, 10 classes) from its
  four IDX files (gzip or not; Debian's `dataset-fashion-mnist` installs them). Splits: `train`
  (50,000), `val` (10,000 carved from the 60,000 training images with `split_seed`: what the
  search and the supernet's evaluation use) and `test` (the official 10,000, only for final
  stand-alone numbers). Random crop of the zero-padded image and horizontal flip for training.
- `imagefolder`: `root/train/<class>/*.jpg` and `root/val/<class>/*.jpg` (ImageNet layout), with
  the standard augmentation (random resized crop, horizontal flip) for training and resize +
  centre crop for validation. Pure PIL (torchvision is not a dependency). An image file that does
  not decode is left out of its batch and counted (`data.on_bad_image=skip`, the default: a
  warning per file, the loader's `skipped`, the checkpoint's meta and the search report), or stops
  the run with one line naming it (`data.on_bad_image=error`).
- `synthetic`: random tensors with random labels, for throughput benchmarks only.

`digits` and `fashion_mnist` are held in memory as stored (uint8, `StoredImages`), on the
training device when it is a GPU: a batch is gathered, cropped, flipped, resized and normalised
there (`StoredImages.batch`), with no DataLoader and no host-to-device image traffic. The other
sources go through a `torch.utils.data.DataLoader`.

Order and augmentation are functions of `(seed, epoch, step)`, never of hidden RNG state: the
training order is a permutation derived from `(seed, epoch)`; a stored-image batch draws its crops
and flips from a generator seeded by `(seed, epoch, step)` (for the whole optimizer step, every
process and micro-batch included), a decoded image from one seeded by `(seed, epoch, index)`. A
resumed run therefore sees exactly the batches an uninterrupted one would, and `world_size`
processes of batch `b` see exactly the micro-batches one process with gradient accumulation
`world_size` sees.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, List, Mapping, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from hwnas._registry import Registry
from hwnas.errors import ConfigError, HwnasError, check_choice, check_min, check_range
from hwnas._files import atomic_write

log = logging.getLogger("hwnas.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
BAD_IMAGE_POLICIES = ("skip", "error")
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                         "Bag", "Ankle boot")
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530  # of the 60,000 training images

class DataError(HwnasError, ValueError):
    """A data configuration or folder that cannot be used; the message names the fix."""


@dataclass
class DataConfig:
    """The keys every dataset has; a dataset's schema subclasses it with its own (`DigitsConfig`, ...)."""
    name: str = "digits"  # a registered dataset: digits | fashion_mnist | imagefolder | synthetic | ...
    image_size: int = 32  # training/evaluation input size (multiple of 32: the supernet is built at it)
    # augmentation and normalisation; null: the dataset's default (its DataSource's class attributes)
    crop_padding: Optional[int] = None  # random crop of the image zero-padded by this (stored images)
    hflip: Optional[float] = None  # horizontal flip probability
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    limit_train: int = 0  # use only the first N training samples (0: all); quick runs and tests
    num_workers: int = 0  # DataLoader worker processes (datasets read through a DataLoader)

    def __post_init__(self):
        check_choice("data", "name", self.name, list_datasets(), error=DataError)
        if not isinstance(self.image_size, int) or self.image_size % 32 or self.image_size < 32:
            raise DataError(f"data.image_size: {self.image_size} is not a multiple of 32 (>= 32); the supernet "
                            "is built at this resolution")
        check_min("data", "crop_padding", self.crop_padding, 0, optional=True, error=DataError)
        check_range("data", "hflip", self.hflip, 0.0, 1.0, optional=True, error=DataError)
        for key in ("mean", "std"):
            v = getattr(self, key)
            if v is not None and (len(v) != 3 or (key == "std" and min(v) <= 0)):
                raise DataError(f"data.{key}={list(v)}: three values (R, G, B)" + (", each > 0" if key == "std" else ""))
        check_min("data", "limit_train", self.limit_train, 0, hint="0: every training image", error=DataError)
        check_min("data", "num_workers", self.num_workers, 0, error=DataError)

    @classmethod
    def unknown_key(cls, key: str) -> str:
        """The one line that refuses `data.<key>` for this dataset: the key, the dataset, the keys it
        accepts and the datasets that have such a key."""
        name = cls.name if isinstance(cls.name, str) else "?"
        allowed = [f.name for f in fields(cls)]
        others = sorted(n for n, s in DATASETS.items() if n != name and key in {f.name for f in fields(s.config)})
        where = f"; {key} is a key of data={', data='.join(others)}" if others else ""
        return f"data.{key}: unknown key of data={name} (allowed: {', '.join(allowed)}){where}"


@dataclass
class DigitsConfig(DataConfig):
    name: str = "digits"
    val_fraction: float = 0.2  # share of the 1797 digits held out for validation (stratified, fixed)
    split_seed: int = 0  # the split is fixed by this seed, not by the training seed

    def __post_init__(self):
        super().__post_init__()
        check_range("data", "val_fraction", self.val_fraction, 0.01, 0.99, error=DataError)


@dataclass
class FashionMNISTConfig(DataConfig):
    name: str = "fashion_mnist"
    root: Optional[str] = None  # the folder holding the four IDX files (null: /usr/share/datasets/fashion-mnist)
    val_size: int = 10000  # training images held out as the validation split (the rest is `train`)
    split_seed: int = 0  # the split is fixed by this seed, not by the training seed
    # 2: every sample is two items side by side on a 56x56 canvas, labelled by the pair (100 classes:
    # 10 x left + right), a task where recognising both and binding each to its place asks for capacity
    # (`pair_items`); the pairing is fixed by split_seed. 1: plain Fashion-MNIST
    items: int = 1

    def __post_init__(self):
        super().__post_init__()
        check_min("data", "val_size", self.val_size, 1, error=DataError)
        check_choice("data", "items", self.items, (1, 2), error=DataError)
        if self.items == 2:
            if self.hflip:  # a flip swaps the two items, and the label would no longer name them in order
                raise DataError(f"data.hflip={self.hflip}: data.items=2 labels the pair left to right, and a flip "
                                "swaps them; set data.hflip=0 (or leave it null)")
            self.hflip = 0.0


@dataclass
class ImageFolderConfig(DataConfig):
    name: str = "imagefolder"
    root: Optional[str] = None  # the folder holding train/ and val/ (one sub-folder per class)
    train_dir: str = "train"
    val_dir: str = "val"
    test_dir: Optional[str] = None  # a held-out split for final stand-alone numbers (null: none)
    scale_min: float = 0.08  # random resized crop: smallest area share
    crop_pct: float = 0.875  # validation: resize to image_size / crop_pct, centre crop image_size
    # an image file that cannot be decoded is skipped (counted in the log and the search report) or
    # stops the run naming the file
    on_bad_image: str = "skip"  # skip | error

    def __post_init__(self):
        super().__post_init__()
        check_range("data", "scale_min", self.scale_min, 0.01, 1.0, error=DataError)
        check_range("data", "crop_pct", self.crop_pct, 0.1, 1.0, error=DataError)
        check_choice("data", "on_bad_image", self.on_bad_image, BAD_IMAGE_POLICIES, error=DataError)
        if not self.root:
            raise DataError("data.root is not set: data=imagefolder needs data.root=DIR holding "
                            f"{self.train_dir}/ and {self.val_dir}/ with one sub-folder per class")


@dataclass
class SyntheticConfig(DataConfig):
    name: str = "synthetic"
    num_classes: int = 10
    num_train: int = 1024
    num_val: int = 256

    def __post_init__(self):
        super().__post_init__()
        check_min("data", "num_classes", self.num_classes, 2, error=DataError)
        check_min("data", "num_train", self.num_train, 1, error=DataError)
        check_min("data", "num_val", self.num_val, 1, error=DataError)


# ---- the registry ------------------------------------------------------------------------------------
class DataSource:
    """A dataset (`data=NAME`). Override what differs; the rest has defaults.

    - `name`, `config`: what `data=` names and its schema (a `DataConfig` subclass; Hydra checks
      `data.*` against it at start-up, `data_config` everywhere else);
    - `crop_padding`, `hflip`, `mean`, `std`: what the config's null keys of the same name become;
    - `splits`: the splits it has (`train` and `val`; `test` where it holds one back);
    - `stored(cfg, image_size, splits)`: for a dataset small enough to hold in memory as uint8
      (`StoredImages`, batched on the training device; set `in_memory = True`), its splits;
    - `datasets(cfg, image_size, seed, augment)`: otherwise, (train, val) torch Datasets of
      (image tensor, label) with a `classes` list, read through a DataLoader;
    - `test_loader(cfg, image_size, batch_size, device)`: batches of its test split, or None.
    """
    name: str = ""
    config: type = DataConfig
    in_memory: bool = False
    #: random labels (benchmarks only): a search refuses to score subnets on it
    random_labels: bool = False
    splits: tuple = ("train", "val")
    crop_padding: int = 0
    hflip: float = 0.0
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    #: the keys (and their values) a search's accuracy fingerprint adds to this dataset's config
    #: (the built-in ones: the flat config of hwnas < 0.3, so studies made then still resume)
    fingerprint_base: dict = {}
    #: keys a dataset gained later, left out of the fingerprint at the value every config had before them
    #: (so that studies made before the key existed still resume)
    fingerprint_omit: dict = {}

    def stored(self, cfg: Any, image_size: int, splits: tuple) -> dict[str, "StoredImages"]:
        raise NotImplementedError(f"data={self.name} is not held in memory")

    def datasets(self, cfg: Any, image_size: int, seed: int, augment: bool) -> tuple[Dataset, Dataset]:
        if self.in_memory:
            out = self.stored(cfg, image_size, ("train", "val"))
            return out["train"], out["val"]
        raise NotImplementedError(f"DataSource {self.name!r} defines neither datasets() nor stored()")

    def test_loader(self, cfg: Any, image_size: int, batch_size: int, device: Any) -> Any:
        if self.in_memory and "test" in self.splits:
            return EvalBatches(stored_splits(cfg, image_size, ("test",), device=device)["test"], batch_size)
        return None


#: every registered dataset, by name
DATASETS: Registry[DataSource] = Registry(
    "dataset", DataError, "choose one with data=NAME; a new one is a DataSource registered with hwnas.data.register_dataset")


def register_dataset(cls: type) -> type:
    """Class decorator: register `cls` (a `DataSource` subclass with a `name` and a `config`) as
    `data=<name>`. Its schema becomes Hydra's `schema_data_<name>`, and, where hwnas/conf has no
    `data/<name>.yaml`, the `data=<name>` option itself (the schema's defaults)."""
    if not (isinstance(cls, type) and issubclass(cls, DataSource)) or not cls.name:
        raise DataError(f"register_dataset: {cls!r} is not a DataSource subclass with a name")
    if not (isinstance(cls.config, type) and issubclass(cls.config, DataConfig)) or cls.config.name != cls.name:
        raise DataError(f"register_dataset: {cls.__name__}.config must be a DataConfig dataclass whose name "
                        f"defaults to {cls.name!r}")
    source = DATASETS.add(cls.name, cls())
    if _STORED:  # Hydra's store was filled already: add this one (else store_schemas will)
        _store_schema(source)
    return cls


_STORED = False


def _store_schema(source: DataSource) -> None:
    from hydra.core.config_store import ConfigStore
    cs = ConfigStore.instance()
    cs.store(name=f"schema_data_{source.name}", node=source.config)
    # hwnas.config.CONF_DIR, spelt out: hwnas.config stores these schemas (imports this module)
    if not (Path(__file__).resolve().parent / "conf" / "data" / f"{source.name}.yaml").is_file():
        cs.store(group="data", name=source.name, node=source.config)


def store_schemas() -> None:
    """Store every dataset's schema in Hydra's ConfigStore (`schema_data`: the keys they share)."""
    global _STORED
    from hydra.core.config_store import ConfigStore
    ConfigStore.instance().store(name="schema_data", node=DataConfig)
    for source in DATASETS.values():
        _store_schema(source)
    _STORED = True


def list_datasets() -> list[str]:
    return DATASETS.names()


def get_dataset(name: str) -> DataSource:
    return DATASETS.lookup(name)


class _InMemory:
    """`name in IN_MEMORY`: whether the registered dataset `name` is held as StoredImages."""

    def __contains__(self, name: object) -> bool:
        return name in DATASETS and DATASETS[name].in_memory

    def __iter__(self):
        return iter(n for n in list_datasets() if n in self)

    def __repr__(self) -> str:
        return repr(tuple(self))


IN_MEMORY = _InMemory()


def config_from(cls, cfg: Any, section: str, error: type = ConfigError):
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
    """The dataset's own config (a `DataConfig` subclass) from a dataclass, a mapping or an OmegaConf
    node, null keys filled with the dataset's defaults; a key the dataset does not have is an error
    naming the dataset, the key and the keys it accepts."""
    if cfg is None:
        cfg = {}
    if isinstance(cfg, DataConfig):
        source = get_dataset(cfg.name)
        if not isinstance(cfg, source.config):  # the base class or another dataset's: checked as a mapping
            cfg = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    if not isinstance(cfg, DataConfig):
        if type(cfg).__module__.startswith("omegaconf"):
            from omegaconf import OmegaConf
            cfg = OmegaConf.to_container(cfg, resolve=True)
        if not isinstance(cfg, Mapping):
            raise DataError(f"data config: expected a mapping, got {type(cfg).__name__}")
        source = get_dataset(str(cfg.get("name", DataConfig.name)))
        allowed = {f.name for f in fields(source.config)}
        unknown = sorted(set(map(str, cfg)) - allowed)
        if unknown:
            raise DataError(source.config.unknown_key(unknown[0]))
        cfg = source.config(**{str(k): (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()})
    out = cfg
    out.crop_padding = source.crop_padding if out.crop_padding is None else int(out.crop_padding)
    out.hflip = source.hflip if out.hflip is None else float(out.hflip)
    out.mean = list(source.mean if out.mean is None else out.mean)
    out.std = list(source.std if out.std is None else out.std)
    if out.crop_padding < 0 or not 0.0 <= out.hflip <= 1.0:
        raise DataError(f"data.crop_padding={out.crop_padding}, data.hflip={out.hflip}: the padding must be "
                        ">= 0 pixels and the flip probability in [0, 1]")
    if len(out.mean) != 3 or len(out.std) != 3 or min(out.std) <= 0:
        raise DataError(f"data.mean={out.mean}, data.std={out.std}: three values each (R, G, B), std > 0")
    return out


def fingerprint_view(data_cfg: Any) -> dict:
    """The data config as a search's accuracy fingerprint records it: its keys over the dataset's
    `fingerprint_base` (plain values; an unregistered name: the keys as given)."""
    if data_cfg is None:
        return {}
    if type(data_cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf
        data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    elif isinstance(data_cfg, DataConfig):
        data_cfg = asdict(data_cfg)
    d = dict(data_cfg)
    source = DATASETS.get(str(d.get("name")))
    if source is None:
        return d
    for k, v in source.fingerprint_omit.items():
        if d.get(k) == v:
            d.pop(k)
    return {**source.fingerprint_base, **d}


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across processes and Python versions."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# ---- IDX files (the MNIST family's format) -------------------------------------------------------
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in an IDX file (gzip-compressed or not, recognised by its first bytes)."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: a damaged gzip file ({e}); copy it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (its first bytes are {raw[:4].hex()}, an IDX file "
                        "starts with 00 00, a type code and the number of dimensions)")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != header + count * dtype.itemsize:
        raise DataError(f"{path}: an IDX file of shape {shape} needs {header + count * dtype.itemsize} bytes, "
                        f"it has {len(raw)} (truncated?); copy it again")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write `array` as an IDX file, gzip-compressed when `compress` (default: the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("=").str: k for k, v in _IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("=").str)
    if code is None:
        raise DataError(f"IDX holds uint8, int8, int16, int32, float32 or float64, not {array.dtype}")
    body = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + \
        array.astype(np.dtype(_IDX_DTYPES[code])).tobytes()
    if path.name.endswith(".gz") if compress is None else compress:
        body = gzip.compress(body, mtime=0)
    return atomic_write(path, body, fsync=False)


# ---- in-memory images ----------------------------------------------------------------------------
class StoredImages(Dataset):
    """Images as stored (uint8 `(N, C, h, w)`, C = 1 or 3) and labels, on one device, with the
    recipe that turns a batch of them into model input (`batch`).

    Pixel value = stored value x `scale` (in [0, 1]). A batch is: gathered by index; optionally
    cropped from the image zero-padded by `crop_padding` pixels (`shift` (B, 2): the crop's top-left
    corner, in [0, 2 * crop_padding]) and flipped (`flip` (B,)); resized (bilinear) to `image_size`;
    scaled; made 3 channels; normalised by `mean` and `std`. Every step is a plain tensor operation,
    with no host synchronisation, so it runs on the GPU and inside a CUDA graph. Indexing the set
    itself (`ds[i]`) gives one un-augmented `(x, y)` on the CPU.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list, *, scale: float,
                 image_size: int, mean, std, crop_padding: int = 0, hflip: float = 0.0):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise DataError(f"stored images must be uint8 (N, 1 or 3, h, w), got {images.dtype} "
                            f"{tuple(images.shape)}")
        self.images, self.labels, self.classes = images, labels.long(), list(classes)
        self.scale, self.image_size = float(scale), int(image_size)
        self.crop_padding, self.hflip = int(crop_padding), float(hflip)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)

    @property
    def device(self) -> torch.device:
        return self.images.device

    @property
    def augments(self) -> bool:
        return self.crop_padding > 0 or self.hflip > 0

    def to(self, device) -> "StoredImages":
        """This set on `device` (itself when already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        out = StoredImages.__new__(StoredImages)
        out.__dict__.update(self.__dict__)
        for k in ("images", "labels", "mean", "std"):
            setattr(out, k, getattr(self, k).to(device))
        return out

    def subset(self, n: int) -> "StoredImages":
        """The first `n` samples."""
        out = StoredImages.__new__(StoredImages)
        out.__dict__.update(self.__dict__)
        out.images, out.labels = self.images[:n], self.labels[:n]
        return out

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item
        idx = torch.tensor([int(index)], device=self.device)
        return self.batch(idx)[0].cpu(), int(self.labels[index])

    def augmentation(self, generator: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, flip) for `n` images, drawn on the CPU from `generator` (so the same on any device)."""
        shift = torch.randint(0, 2 * self.crop_padding + 1, (n, 2), generator=generator)
        flip = torch.rand(n, generator=generator) < self.hflip
        return shift, flip

    def batch(self, idx: torch.Tensor, shift: torch.Tensor | None = None,
              flip: torch.Tensor | None = None) -> torch.Tensor:
        """Model input `(B, 3, image_size, image_size)` float32 for the samples `idx` (see the class)."""
        img = self.images.index_select(0, idx)
        b, c, h, w = img.shape
        if shift is not None or flip is not None:
            p = self.crop_padding
            dev = img.device
            ys, xs = torch.arange(h, device=dev), torch.arange(w, device=dev)
            rows = ys.expand(b, h)
            cols = xs.expand(b, w) if flip is None else torch.where(flip.view(b, 1), (w - 1) - xs, xs)
            if shift is not None:
                rows = rows + shift[:, :1]
                cols = cols + shift[:, 1:]
            if p:
                img = F.pad(img, (p, p, p, p))
            width = w + 2 * p
            lin = (rows.unsqueeze(2) * width + cols.unsqueeze(1)).view(b, 1, h * w).expand(b, c, h * w)
            img = img.reshape(b, c, -1).gather(2, lin).view(b, c, h, w)
        x = img.float().mul_(self.scale)
        s = self.image_size
        if (h, w) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=max(h, w) > s)
        if c == 1:
            x = x.expand(b, 3, s, s)
        return (x - self.mean) / self.std


def _digits(cfg: DigitsConfig, image_size: int) -> dict[str, StoredImages]:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.uint8).unsqueeze(1)  # (N, 1, 8, 8), values 0..16
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
    split = {"train": torch.cat(train_idx).sort().values, "val": torch.cat(val_idx).sort().values}
    kw = _stored_kw(cfg, image_size, scale=1.0 / 16)
    return {k: StoredImages(x[i], y[i], [str(c) for c in range(10)], **kw) for k, i in split.items()}


def _stored_kw(cfg: DataConfig, image_size: int, scale: float) -> dict:
    return dict(scale=scale, image_size=image_size, mean=cfg.mean, std=cfg.std,
                crop_padding=cfg.crop_padding, hflip=cfg.hflip)


_FASHION_FILES = {"train": ("train-images", "train-labels"), "test": ("t10k-images", "t10k-labels")}


def _idx_file(root: Path, stem: str, kind: str) -> Path | None:
    """`stem-idx3-ubyte` (or `stem.idx3-ubyte`, the MNIST site's spelling), gzipped or not."""
    for name in (f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"):
        for suffix in (".gz", ""):
            if (root / (name + suffix)).is_file():
                return root / (name + suffix)
    return None


def fashion_mnist_files(root: str | os.PathLike | None = None) -> dict[str, tuple[Path, Path]]:
    """split ("train" = the 60,000, "test") -> (images file, labels file) under `root`."""
    root = Path(root or FASHION_MNIST_ROOT).expanduser()
    found, missing = {}, []
    for split, (images, labels) in _FASHION_FILES.items():
        pair = (_idx_file(root, images, "idx3"), _idx_file(root, labels, "idx1"))
        found[split] = pair
        missing += [f"{stem}-{kind}-ubyte[.gz]" for p, stem, kind in zip(pair, (images, labels), ("idx3", "idx1"))
                    if p is None]
    if missing:
        where = f"{root} has no {', '.join(missing)}" if root.is_dir() else f"{root}: no such folder"
        raise DataError(f"data=fashion_mnist: {where}. Install Debian's package dataset-fashion-mnist "
                        f"(apt-get install dataset-fashion-mnist puts the four IDX files in {FASHION_MNIST_ROOT}), "
                        "or set data.root=DIR to a folder holding train-images-idx3-ubyte.gz, "
                        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    return found


@functools.lru_cache(maxsize=4)
def _read_pair(images: Path, labels: Path, stamp: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3 or x.dtype != np.uint8 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{images}, {labels}: expected uint8 images (N, h, w) and N labels, got "
                        f"{x.dtype} {x.shape} and {y.dtype} {y.shape}")
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(FASHION_MNIST_CLASSES)):
        raise DataError(f"{labels}: labels must be 0..{len(FASHION_MNIST_CLASSES) - 1}, found "
                        f"{int(y.min())}..{int(y.max())}")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


PAIR_CANVAS = 56  # data.items=2: two 28 px items side by side, centred vertically on a square canvas
_PAIR_SPLIT = {"train": 0, "val": 1, "test": 2}  # each split's own pairing (a part of its seed)


def pair_items(x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST's two-item task (`data.items=2`): sample i puts image i on the left half of a
    56x56 canvas and image perm[i] on the right (perm: a permutation fixed by `seed`), both centred
    vertically; its label is 10 x y[i] + y[perm[i]]. x: uint8 (N, 1, 28, 28); y: (N,) in 0..9."""
    n, c, h, w = x.shape
    if 2 * w != PAIR_CANVAS or h > PAIR_CANVAS:
        raise DataError(f"data.items=2 pairs 28x28 images on a {PAIR_CANVAS}x{PAIR_CANVAS} canvas; these are {h}x{w}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out = torch.zeros((n, c, PAIR_CANVAS, PAIR_CANVAS), dtype=x.dtype)
    top = (PAIR_CANVAS - h) // 2
    out[:, :, top:top + h, :w] = x
    out[:, :, top:top + h, w:] = x[perm]
    return out, y * len(FASHION_MNIST_CLASSES) + y[perm]


def _fashion_mnist(cfg: FashionMNISTConfig, image_size: int, splits=("train", "val")) -> dict[str, StoredImages]:
    files = fashion_mnist_files(cfg.root)
    out = {}
    kw = _stored_kw(cfg, image_size, scale=1.0 / 255)
    classes = list(FASHION_MNIST_CLASSES)
    if cfg.items == 2:
        classes = [f"{a} | {b}" for a in FASHION_MNIST_CLASSES for b in FASHION_MNIST_CLASSES]

    def stored(x, y, split: str) -> StoredImages:
        if cfg.items == 2:
            x, y = pair_items(x, y, derive_seed(cfg.split_seed, 0xFA5, 2, _PAIR_SPLIT[split]))
        return StoredImages(x, y, classes, **kw)

    if "train" in splits or "val" in splits:
        x, y = _read_pair(*files["train"], _stamp(files["train"]))
        n = len(y)
        if not 0 < cfg.val_size < n:
            raise DataError(f"data.val_size={cfg.val_size}: must be between 1 and {n - 1} (the training "
                            f"file holds {n} images)")
        # Carved with split_seed only: the same val set whatever the training seed.
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(cfg.split_seed, 0xFA5)))
        idx = {"val": perm[:cfg.val_size].sort().values, "train": perm[cfg.val_size:].sort().values}
        for k in ("train", "val"):
            if k in splits:
                out[k] = stored(x[idx[k]], y[idx[k]], k)
    if "test" in splits:
        x, y = _read_pair(*files["test"], _stamp(files["test"]))
        out["test"] = stored(x, y, "test")
    return out


def _stamp(pair) -> tuple:
    return tuple((p.stat().st_size, p.stat().st_mtime_ns) for p in pair)


def stored_splits(data_cfg: Any, image_size: int | None = None, splits=("train", "val"),
                  device: Any = "cpu") -> dict[str, StoredImages]:
    """The splits (`train`, `val`, and where the dataset has one `test`) of an in-memory dataset, on `device`."""
    cfg = data_config(data_cfg)
    source = get_dataset(cfg.name)
    if not source.in_memory:
        raise DataError(f"data={cfg.name} is not held in memory (only {', '.join(IN_MEMORY)}); "
                        "use build_loaders")
    size = int(image_size or cfg.image_size)
    bad = [s for s in splits if s not in source.splits]
    if bad:
        raise DataError(f"data={cfg.name} has no split {bad[0]!r} (it has {', '.join(source.splits)})")
    out = source.stored(cfg, size, tuple(splits))
    out = {k: v for k, v in out.items() if k in splits}
    if "train" in out and cfg.limit_train and cfg.limit_train < len(out["train"]):
        out["train"] = out["train"].subset(cfg.limit_train)
    return {k: v.to(device) for k, v in out.items()}


# ---- decoded and generated images ----------------------------------------------------------------
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


@dataclass(frozen=True)
class Unreadable:
    """An image file that did not decode, in place of its sample (dropped from the batch by the loader)."""
    path: str
    reason: str


def decode_rgb(path: str | os.PathLike):
    """The image at `path` decoded as RGB (a PIL image), or an `Unreadable` saying why it is not one."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            return im.convert("RGB")  # decodes the whole file: a truncated one fails here
    except Exception as e:  # noqa: BLE001 -- PIL raises OSError, SyntaxError, ValueError, ... for a bad file
        return Unreadable(str(path), f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")


def collate_readable(samples: list):
    """Batch the readable samples; returns `(x, y, unreadable)` (x and y None when none is readable)."""
    bad = [s for s in samples if isinstance(s, Unreadable)]
    good = [s for s in samples if not isinstance(s, Unreadable)]
    if not good:
        return None, None, bad
    return torch.stack([x for x, _ in good]), torch.tensor([int(y) for _, y in good]), bad


class ImageFolder(Dataset):
    """`root/<class>/<image>` files; classes are the sorted sub-folder names. A file that does not
    decode gives an `Unreadable` instead of a sample (see `ImageLoader`)."""

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
        """`(x, label)`, or an `Unreadable` naming the file when it does not decode."""
        index, seed = item if isinstance(item, tuple) else (item, 0)
        path, label = self.samples[index]
        im = decode_rgb(path)
        if isinstance(im, Unreadable):
            return im
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



def _imagefolder(cfg: ImageFolderConfig, image_size: int, augment: bool = True) -> tuple[Dataset, Dataset]:
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
    if len(classes) == 1:  # every image has the one label: any model scores 100 %
        raise DataError(f"{root / cfg.train_dir}: one class sub-folder ({classes[0]}); a classifier needs at "
                        f"least 2 classes, one sub-folder each, in {cfg.train_dir}/ and {cfg.val_dir}/")
    return (ImageFolder(root / cfg.train_dir, classes, image_size, augment, cfg),
            ImageFolder(root / cfg.val_dir, classes, image_size, False, cfg))


def build_datasets(data_cfg: Any, image_size: int | None = None, seed: int = 0,
                   augment: bool = True) -> tuple[Dataset, Dataset, int]:
    """(train set, val set, number of classes) of a data config (on the CPU).

    `augment=False` gives training images with the validation view (imagefolder: resize and centre
    crop); stored images are augmented per batch, not here (`StoredImages.batch`)."""
    cfg = data_config(data_cfg)
    size = int(image_size or cfg.image_size)
    source = get_dataset(cfg.name)
    if source.in_memory:
        splits = stored_splits(cfg, size)
        return splits["train"], splits["val"], len(splits["val"].classes)
    train, val = source.datasets(cfg, size, seed, augment)
    if cfg.limit_train and cfg.limit_train < len(train):
        train = _Subset(train, cfg.limit_train)
    return train, val, len(val.classes)


def build_test_loader(data_cfg: Any, image_size: int | None = None, batch_size: int = 256,
                      device: Any = "cpu") -> Any:
    """Batches of the data's test split (fashion_mnist: the official 10,000; imagefolder: `root/test_dir`,
    when set), unshuffled and un-augmented; None when the dataset has no test split."""
    cfg = data_config(data_cfg)
    return get_dataset(cfg.name).test_loader(cfg, int(image_size or cfg.image_size), batch_size, device)


class _Subset(Dataset):
    def __init__(self, base: Dataset, n: int):
        self.base, self.n, self.classes = base, n, base.classes

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, item):
        return self.base[item]


# ---- sampling -----------------------------------------------------------------------------------
def step_count(n: int, batch_size: int, world_size: int = 1, accum_steps: int = 1, max_steps: int = 0,
               drop_last: bool = True) -> int:
    """Optimizer steps in an epoch of `n` samples (the last incomplete one dropped with `drop_last`)."""
    per_step = batch_size * world_size * accum_steps
    steps = n // per_step if drop_last else math.ceil(n / per_step)
    if max_steps:
        steps = min(steps, max_steps)
    if steps == 0:
        raise TooFewSamples(n, batch_size, world_size, accum_steps)
    return steps


class TooFewSamples(DataError):
    """The training set is smaller than one optimizer step. The message names the train app's key
    (`train.batch_size`); an app that sets the batch size otherwise (the search's built-in supernet:
    `pretrain.overrides`) says its own key with `fix`."""

    def __init__(self, n: int, batch_size: int, world_size: int = 1, accum_steps: int = 1):
        self.n, self.batch_size, self.world_size, self.accum_steps = n, batch_size, world_size, accum_steps
        super().__init__(self.message("train.batch_size=N"))

    def message(self, fix: str) -> str:
        most = max(1, self.n // (self.world_size * self.accum_steps))
        return (f"the training set has {self.n} samples, fewer than one optimizer step needs (batch_size "
                f"{self.batch_size} x processes {self.world_size} x accum_steps {self.accum_steps}); give {fix} "
                f"with N <= {most}, or more images")


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor:
    """The training order of epoch `epoch`: a permutation of range(n) seeded by (seed, epoch)."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))


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
        self.steps = step_count(n, batch_size, world_size, accum_steps, max_steps, drop_last)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps * self.accum_steps

    def __iter__(self) -> Iterator[list]:
        order = epoch_order(self.n, self.seed, self.epoch, self.shuffle).tolist()
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


class TrainBatches:
    """The training micro-batches of stored images, made on their device: what a DataLoader with a
    `SandwichBatchSampler` yields, without the DataLoader.

    Same order (the permutation of (seed, epoch); optimizer step s takes the next
    `world_size * accum_steps * batch_size` samples; process `rank` runs micro-batches
    `rank * accum_steps + a`). The crops and flips of step s are drawn for the whole step from a
    generator seeded by (seed, epoch, s), and each micro-batch takes its share, so any split of a
    step over processes and accumulation sees the same images. `augment=False` (BatchNorm
    calibration) gives the plain images in the same order.
    """

    def __init__(self, data: StoredImages, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 accum_steps: int = 1, max_steps: int = 0, drop_last: bool = True, augment: bool = True,
                 shuffle: bool = True):
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self.rank, self.world_size, self.accum_steps = rank, world_size, accum_steps
        self.augment, self.shuffle, self.epoch = augment and data.augments, shuffle, 0
        self.steps = step_count(len(data), batch_size, world_size, accum_steps, max_steps, drop_last)

    @property
    def per_step(self) -> int:
        return self.batch_size * self.world_size * self.accum_steps

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.steps * self.accum_steps

    def plan(self, epoch: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(indices, shift, flip) of every sample the epoch's steps use, in order, on the CPU
        (shift and flip None without augmentation): step s is `[s * per_step, (s + 1) * per_step)`."""
        epoch = self.epoch if epoch is None else epoch
        order = epoch_order(len(self.data), self.seed, epoch, self.shuffle)[:self.steps * self.per_step]
        if not self.augment:
            return order, None, None
        shifts, flips = [], []
        for s in range(self.steps):
            n = len(order[s * self.per_step:(s + 1) * self.per_step])
            g = torch.Generator().manual_seed(derive_seed(self.seed, epoch, s, 0xA06))
            shift, flip = self.data.augmentation(g, n)
            shifts.append(shift)
            flips.append(flip)
        return order, torch.cat(shifts), torch.cat(flips)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        dev = self.data.device
        order, shift, flip = (t if t is None else t.to(dev) for t in self.plan())
        b = self.batch_size
        for s in range(self.steps):
            for a in range(self.accum_steps):
                start = s * self.per_step + (self.rank * self.accum_steps + a) * b
                sl = slice(start, min(start + b, len(order)))
                idx = order[sl]
                if len(idx) == 0:
                    continue
                x = self.data.batch(idx, None if shift is None else shift[sl], None if flip is None else flip[sl])
                yield x, self.data.labels.index_select(0, idx)


class EvalBatches:
    """Sequential, un-augmented batches of stored images (validation, test), on their device."""

    def __init__(self, data: StoredImages, batch_size: int):
        self.data, self.batch_size = data, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        n, dev = len(self.data), self.data.device
        for start in range(0, n, self.batch_size):
            idx = torch.arange(start, min(n, start + self.batch_size), device=dev)
            yield self.data.batch(idx), self.data.labels.index_select(0, idx)


class ImageLoader(DataLoader):
    """A DataLoader of decoded images that leaves unreadable files out of their batch
    (`data.on_bad_image=skip`: each file logged once and kept in `skipped`, path -> reason) or stops
    at the first one (`error`: a `DataError` naming it). A batch with no readable image is dropped
    when `drop_empty` (evaluation), an error otherwise (a training step needs images)."""

    def __init__(self, dataset, *args, on_bad_image: str = "skip", drop_empty: bool = True, **kw):
        super().__init__(dataset, *args, collate_fn=collate_readable, **kw)
        self.on_bad_image, self.drop_empty = on_bad_image, drop_empty
        self.skipped: dict[str, str] = {}

    def __iter__(self):
        for x, y, bad in super().__iter__():
            for b in bad:
                if self.on_bad_image == "error":
                    raise DataError(f"{b.path}: unreadable image ({b.reason}); remove or replace it, or set "
                                    "data.on_bad_image=skip to leave such files out")
                if b.path not in self.skipped:
                    self.skipped[b.path] = b.reason
                    log.warning("skipped an unreadable image (data.on_bad_image=skip): %s (%s)", b.path, b.reason)
            if x is None:
                if self.drop_empty:
                    continue
                raise DataError(f"every image of a training batch is unreadable (e.g. {bad[0].path}: {bad[0].reason}); "
                                "check the image folder")
            yield x, y


def skipped_images(*loaders) -> dict[str, str]:
    """The unreadable files the given loaders left out (path -> reason); loaders of stored or
    generated images have none."""
    out: dict[str, str] = {}
    for ld in loaders:
        out.update(getattr(ld, "skipped", None) or {})
    return dict(sorted(out.items()))


class _TrainLoader(ImageLoader):
    """An `ImageLoader` over a `SandwichBatchSampler` with `TrainBatches`' epoch interface."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)

    @property
    def steps(self) -> int:
        return self.batch_sampler.steps


def build_loaders(data_cfg: Any = None, image_size: int | None = None, batch_size: int = 64, seed: int = 0,
                  *, rank: int = 0, world_size: int = 1, accum_steps: int = 1, max_steps_per_epoch: int = 0,
                  num_workers: int | None = None, val_batch_size: int | None = None, drop_last: bool = True,
                  augment: bool = True, device: Any = "cpu") -> tuple[Any, Any, int]:
    """(train batches, val batches, number of classes).

    The train batches are this process's micro-batches in the order `SandwichBatchSampler` defines
    (call `.set_epoch(e)` before each epoch; `.steps` is the number of optimizer steps per epoch);
    the val batches are the whole validation set in file order, unshuffled, on every process.
    `drop_last=False` keeps a last incomplete batch (for BatchNorm calibration on a small set);
    `augment=False` gives plain training images (BatchNorm calibration).
    Stored-image sources (digits, fashion_mnist) are held on `device` and batched there
    (`TrainBatches`, `EvalBatches`); the others come from DataLoaders (CPU tensors; the caller
    moves them).
    """
    cfg = data_config(data_cfg)
    if get_dataset(cfg.name).in_memory:
        splits = stored_splits(cfg, image_size, device=device)
        train = TrainBatches(splits["train"], batch_size, seed, rank, world_size, accum_steps,
                             max_steps=max_steps_per_epoch, drop_last=drop_last, augment=augment)
        return train, EvalBatches(splits["val"], val_batch_size or batch_size), len(splits["val"].classes)
    train, val, num_classes = build_datasets(cfg, image_size, seed, augment)
    workers = cfg.num_workers if num_workers is None else num_workers
    sampler = SandwichBatchSampler(len(train), batch_size, seed, rank, world_size, accum_steps,
                                   max_steps=max_steps_per_epoch, drop_last=drop_last)
    kw = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
              on_bad_image=getattr(cfg, "on_bad_image", "skip"))
    # a training step needs images; calibration (drop_last=False) and validation can drop a batch
    train_loader = _TrainLoader(train, batch_sampler=sampler, drop_empty=not drop_last, **kw)
    val_loader = ImageLoader(val, batch_sampler=_Batches(len(val), val_batch_size or batch_size), **kw)
    return train_loader, val_loader, num_classes


# ---- the built-in datasets ----------------------------------------------------------------------------
#: the flat config every dataset shared before each had its own schema (hwnas < 0.3): what a search's
#: accuracy fingerprint records besides a built-in dataset's own keys, so studies made then resume
_FLAT_V1 = dict(name="digits", image_size=32, val_fraction=0.2, split_seed=0, val_size=10000, root=None,
                train_dir="train", val_dir="val", test_dir=None, scale_min=0.08, crop_pct=0.875, crop_padding=None,
                hflip=None, mean=None, std=None, num_classes=10, num_train=1024, num_val=256, limit_train=0,
                num_workers=0, on_bad_image="skip")


@register_dataset
class Digits(DataSource):
    """scikit-learn's bundled 8x8 digits; no augmentation (a flipped 2 is no digit)."""
    name, config, in_memory, fingerprint_base = "digits", DigitsConfig, True, _FLAT_V1
    mean, std = (0.5,) * 3, (0.5,) * 3

    def stored(self, cfg, image_size, splits):
        return _digits(cfg, image_size)


@register_dataset
class FashionMNIST(DataSource):
    """Fashion-MNIST from its four IDX files; a `test` split (the official 10,000)."""
    name, config, in_memory, fingerprint_base = "fashion_mnist", FashionMNISTConfig, True, _FLAT_V1
    fingerprint_omit = {"items": 1}
    splits = ("train", "val", "test")
    crop_padding, hflip = 4, 0.5
    mean, std = (FASHION_MNIST_MEAN,) * 3, (FASHION_MNIST_STD,) * 3

    def stored(self, cfg, image_size, splits):
        return _fashion_mnist(cfg, image_size, splits)


@register_dataset
class ImageFolderSource(DataSource):
    """`root/train/<class>/*.jpg`, `root/val/<class>/*.jpg` (and `root/<test_dir>`), decoded with PIL."""
    name, config, fingerprint_base = "imagefolder", ImageFolderConfig, _FLAT_V1
    hflip = 0.5

    def datasets(self, cfg, image_size, seed, augment):
        return _imagefolder(cfg, image_size, augment)

    def test_loader(self, cfg, image_size, batch_size, device):
        if not cfg.test_dir:
            return None
        root = Path(cfg.root).expanduser()
        if not (root / cfg.test_dir).is_dir():
            raise DataError(f"{root / cfg.test_dir}: no such folder (data.test_dir={cfg.test_dir}); it needs the "
                            f"class sub-folders of {root / cfg.train_dir}")
        classes = sorted(p.name for p in (root / cfg.train_dir).iterdir() if p.is_dir())
        test = ImageFolder(root / cfg.test_dir, classes, image_size, False, cfg)
        return ImageLoader(test, batch_sampler=_Batches(len(test), batch_size), num_workers=cfg.num_workers,
                           pin_memory=torch.cuda.is_available(), on_bad_image=cfg.on_bad_image)


@register_dataset
class Synthetic(DataSource):
    """Random N(0, 1) images with random labels: throughput benchmarks only."""
    name, config, fingerprint_base = "synthetic", SyntheticConfig, _FLAT_V1
    random_labels = True

    def datasets(self, cfg, image_size, seed, augment):
        return (SyntheticImages(cfg.num_train, image_size, cfg.num_classes, derive_seed(seed, 1)),
                SyntheticImages(cfg.num_val, image_size, cfg.num_classes, derive_seed(seed, 2)))


__all__ = ["DATASETS", "DataConfig", "DataError", "DataSource", "DigitsConfig", "EvalBatches", "FashionMNISTConfig",
           "IN_MEMORY", "ImageFolderConfig", "ImageLoader", "SyntheticConfig", "Unreadable", "SandwichBatchSampler",
           "StoredImages", "TrainBatches", "build_datasets", "build_loaders", "build_test_loader", "config_from",
           "data_config", "derive_seed", "epoch_order", "fashion_mnist_files", "fingerprint_view", "get_dataset",
           "list_datasets", "read_idx", "register_dataset", "skipped_images", "step_count", "stored_splits",
           "write_idx"]
