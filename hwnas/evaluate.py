"""Subnet accuracy for the search: inherited weights, the subnet's own BatchNorm statistics.

    ev = SubnetEvaluator.from_checkpoint("DIR/supernet.pt", data_cfg)   # or SubnetEvaluator(net, train, val)
    ev.evaluate(arch)  # top-1 % on the validation set

A subnet shares its weights with the supernet but not its activation statistics: the supernet's
running BatchNorm statistics are a blend over every subnet trained, and wrong for any single one.
So each evaluation extracts the subnet, re-estimates its BatchNorm statistics on
`calib_batches` training batches (a cumulative average, as OFA and BigNAS do), then measures top-1
on the whole validation set. The supernet itself is left unchanged. Results are cached by arch id
in memory and, with `cache_path`, in a JSON file that survives restarts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from hwnas.checkpoint import CheckpointError, load_supernet
from hwnas.data import DataError, data_config
from hwnas.errors import ConfigError
from hwnas._files import atomic_write


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable, batches: int) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics of `model` on `batches` batches of `loader`.

    Statistics are reset and accumulated as an exact average over the batches (momentum None);
    the model is left in eval mode. Nothing else changes (no gradients, no parameter updates).
    """
    if batches < 1:
        raise ConfigError(f"BatchNorm calibration needs at least one batch, got {batches} (recalib_batches / "
                          "bn_batches must be >= 1)")
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    device = _device(model)
    model.train()
    seen = 0
    for x, _ in loader:
        model(x.to(device, non_blocking=True))
        seen += 1
        if seen >= batches:
            break
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()
    if seen == 0:
        raise DataError("the calibration data yielded no batch: the training split is empty")
    return model


@torch.no_grad()
def top1(model: nn.Module, loader: Iterable, max_batches: int | None = None) -> float:
    """Top-1 accuracy (%) of `model` (in eval mode) over `loader`."""
    model.eval()
    device = _device(model)
    correct = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: one sync at the end
    total = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        pred = model(x.to(device, non_blocking=True)).argmax(dim=-1)
        correct += (pred == y.to(device, non_blocking=True)).sum()
        total += len(y)
    if total == 0:
        raise DataError("the validation data yielded no sample: the validation split is empty")
    return 100.0 * int(correct) / total


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


class SubnetEvaluator:
    """`evaluate(arch)` -> top-1 % of a subnet of `net` after BatchNorm recalibration (cached by arch id).

    Every arch is evaluated at the supernet's resolution, the data's image size (an arch searched
    for 224 px deployment is scored on 32 px digits through `arch.with_resolution(...)`).
    """

    def __init__(self, net, train_loader: Iterable, val_loader: Iterable, calib_batches: int = 8,
                 cache_path: str | os.PathLike | None = None, max_val_batches: int | None = None,
                 fingerprint: Any = None):
        self.net = net
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.calib_batches = int(calib_batches)
        self.max_val_batches = max_val_batches
        self.resolution = int(net.resolution)
        self.cache_path = Path(cache_path) if cache_path else None
        self.fingerprint = {"calib_batches": self.calib_batches, "max_val_batches": max_val_batches,
                            "resolution": self.resolution, "source": fingerprint}
        self.cache: dict[str, float] = {}
        self.training_skipped: dict[str, str] = {}  # unreadable images the supernet's training left out
        self.train_config: dict = {}  # the supernet's train config (train.consistent_only: which archs it trained)
        self._load_cache()

    def skipped_images(self) -> dict[str, str]:
        """Unreadable images (path -> reason) left out so far by this evaluator's loaders."""
        from hwnas.data import skipped_images
        return skipped_images(self.train_loader, self.val_loader)

    @property
    def consistent_only(self) -> bool:
        """The supernet was trained on its space's consistent archs only (train.consistent_only): the others'
        inherited accuracy measures a structure it never trained (pairs and searches keep to those archs)."""
        return bool(self.train_config.get("consistent_only"))

    # ---- construction from a file -----------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, data_cfg: Any = None, *, calib_batches: int | None = None,
                        recalib_batches: int | None = None, batch_size: int = 128, seed: int = 0,
                        cache_path: str | os.PathLike | None = None, max_val_batches: int | None = None,
                        device: str = "auto", space: Any = None, num_workers: int | None = None
                        ) -> "SubnetEvaluator":
        """An evaluator from a supernet checkpoint and the data config it was trained on.

        The data is loaded at the checkpoint's resolution; its number of classes must be the
        checkpoint's. `recalib_batches` is another name for `calib_batches` (default 8).
        """
        from hwnas.data import build_loaders
        from hwnas.device import resolve_device
        net, meta = load_supernet(path, space=space)
        dev = resolve_device(device)
        net = net.to(dev)
        net.eval()
        # calibration on plain (un-augmented) training images, the distribution the subnet is tested on
        train, val, num_classes = build_loaders(data_cfg, image_size=net.resolution, batch_size=batch_size,
                                                seed=seed, num_workers=num_workers, drop_last=False,
                                                augment=False, device=dev)
        if num_classes != net.num_classes:
            raise CheckpointError(f"{path}: a supernet with {net.num_classes} classes, but the data has "
                                  f"{num_classes}; evaluate it on the data it was trained on "
                                  f"(meta says data={meta.get('data', '?')})")
        if data_cfg is not None:
            asked, trained = data_config(data_cfg).name, meta.get("data")
            if trained and trained != asked:
                size = meta.get("image_size", net.resolution)
                raise CheckpointError(f"{path}: a supernet trained on data={trained} ({size} px), scored on "
                                      f"data={asked}: its top-1 there says nothing about the subnets; give "
                                      f"data={trained} (with the settings it was trained with), or a checkpoint "
                                      f"trained on data={asked}")
        n = calib_batches if calib_batches is not None else recalib_batches if recalib_batches is not None else 8
        st = Path(path).stat()
        source = {"checkpoint": str(Path(path).resolve()), "size": st.st_size, "mtime": int(st.st_mtime),
                  "seed": seed, "batch_size": batch_size}
        ev = cls(net, train, val, calib_batches=n, cache_path=cache_path, max_val_batches=max_val_batches,
                 fingerprint=source)
        ev.training_skipped = dict(meta.get("skipped_images") or {})
        ev.train_config = dict((meta.get("config") or {}).get("train") or {})
        return ev

    # ---- evaluation ------------------------------------------------------------------------------
    def subnet(self, arch, recalibrate: bool = True) -> nn.Module:
        """The static model of `arch` with inherited weights (and its own BN statistics)."""
        arch = arch.with_resolution(self.resolution).with_task("classify")  # a backbone: judged as a classifier
        model = self.net.extract(arch)
        if recalibrate:
            recalibrate_bn(model, self.train_loader, self.calib_batches)
        return model.eval()

    def evaluate(self, arch, recalibrate: bool = True) -> float:
        """Top-1 % on the validation set; cached by the id of the arch at the data's resolution.

        `recalibrate=False` measures with the supernet's shared statistics instead (not cached;
        for comparison only).
        """
        key = arch.with_resolution(self.resolution).with_task("classify").id
        if recalibrate and key in self.cache:
            return self.cache[key]
        acc = top1(self.subnet(arch, recalibrate), self.val_loader, self.max_val_batches)
        if recalibrate:
            self.cache[key] = acc
            self._save_cache()
        return acc

    __call__ = evaluate

    # ---- the JSON cache --------------------------------------------------------------------------
    def _load_cache(self) -> None:
        if self.cache_path is None or not self.cache_path.is_file():
            return
        try:
            data = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            return  # unreadable: start again, it is only a cache
        if data.get("fingerprint") == json.loads(json.dumps(self.fingerprint)):
            self.cache.update({k: float(v) for k, v in data.get("top1", {}).items()})

    def _save_cache(self) -> None:
        if self.cache_path is None:
            return
        atomic_write(self.cache_path, json.dumps({"fingerprint": self.fingerprint, "top1": self.cache}, indent=1,
                                                 sort_keys=True), fsync=False)  # a lost cache costs only time


__all__ = ["SubnetEvaluator", "recalibrate_bn", "top1"]
