"""Stand-alone training of one arch from scratch with one fixed recipe: the accuracy that a subnet's
inherited (supernet) accuracy is supposed to rank.

    from hwnas.training.standalone import Recipe, train_standalone
    r = train_standalone(arch, {"name": "fashion_mnist"}, Recipe(epochs=10), seed=0)
    r["test_top1"], r["val_top1"], r["images_per_s"]

The model is `supernet.build_model(arch)` at the data's resolution, freshly initialised from the
seed. A stored-image source (digits, fashion_mnist) is held on the device, in the order and with the
augmentation of `hwnas.data.TrainBatches` (permutation of (seed, epoch), crops and flips of (seed,
epoch, step)); any other source (imagefolder: your own data) is read through its DataLoader, eagerly.

On CUDA the whole training step -- the batch gathered, cropped, flipped and normalised from the
GPU-resident uint8 images, forward and backward in bf16 autocast, AdamW (`capturable=True`, the
learning rate held in a tensor) -- is captured once in a CUDA graph and replayed: one launch per
step instead of thousands, which is what these models at small resolution are bound by. Only the
step's indices, crops and flips are copied into the graph's static buffers, device to device, from
the epoch's plan made once per epoch. The first `WARMUP_STEPS` steps run eagerly (cuDNN picks its
algorithms, AdamW makes its state) and count as training. On the CPU, or with `cuda_graph=False`,
every step runs eagerly: the same computation.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

import supernet
from search_spaces import Arch
from hwnas.data import (IN_MEMORY, EvalBatches, StoredImages, TrainBatches, build_loaders, build_test_loader,
                        config_from, data_config, derive_seed, get_dataset, stored_splits)
from hwnas.errors import ConfigError
from hwnas.evaluate import top1

from .distributed import resolve_device
from .sandwich import autocast
from .trainer import lr_at, resolve_amp

WARMUP_STEPS = 3  # eager steps before the capture (PyTorch's recipe for whole-network capture)


@dataclass
class Recipe:
    """One fixed training recipe, the same for every arch (the comparison is only fair that way)."""

    epochs: int = 10
    batch_size: int = 512
    lr: float = 2e-3  # AdamW peak learning rate, after a linear warm-up; cosine decay to min_lr
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05  # conv/linear weights only
    label_smoothing: float = 0.1
    drop_path: float = 0.0
    # zero the last layer of every residual branch at init (`supernet.zero_init_residual`: Next-ViT's blocks;
    # EfficientFormerV2's start at LayerScale's 1e-5 already), so a deep arch starts as a shallow one
    zero_init_residual: bool = False
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | off
    cuda_graph: bool = True  # capture the training step on CUDA (eager on the CPU whatever this says)
    max_steps_per_epoch: int = 0  # cap (0: the whole training split); smoke runs and tests
    eval_batch_size: int = 1000


def _build(arch: Arch, num_classes: int, recipe: Recipe, dev: torch.device) -> torch.nn.Module:
    """The freshly initialised model `recipe` trains (its drop path; zero-initialised residual branches)."""
    model = supernet.build_model(arch, num_classes=num_classes, drop_path_rate=recipe.drop_path)
    if recipe.zero_init_residual:
        supernet.zero_init_residual(model)
    return model.to(dev).train()


def recipe_config(cfg: Any = None) -> Recipe:
    """A `Recipe` from a dataclass, a mapping or an OmegaConf node; unknown keys are an error."""
    out = config_from(Recipe, cfg, "recipe")
    if out.amp not in ("auto", "bf16", "off"):
        raise ConfigError(f"recipe.amp: {out.amp!r} (allowed: auto, bf16, off; fp16 needs a loss scaler, "
                          "which a captured step does not have)")
    if out.epochs < 1 or out.batch_size < 1:
        raise ConfigError(f"recipe: epochs={out.epochs}, batch_size={out.batch_size}: both must be >= 1")
    return out


def _optimizer(model: torch.nn.Module, recipe: Recipe, lr: torch.Tensor | float, capturable: bool):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith("attention_biases") else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, capturable=capturable, foreach=True)


class _Step:
    """One training step on static buffers: the thing a CUDA graph captures (or that runs eagerly)."""

    def __init__(self, model, opt, data: StoredImages, batch_size: int, augment: bool, amp: str,
                 label_smoothing: float):
        dev = data.device
        self.model, self.opt, self.data, self.amp, self.ls = model, opt, data, amp, label_smoothing
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=dev)
        self.shift = torch.zeros(batch_size, 2, dtype=torch.long, device=dev) if augment else None
        self.flip = torch.zeros(batch_size, dtype=torch.bool, device=dev) if augment else None
        self.loss_sum = torch.zeros((), dtype=torch.float32, device=dev)

    def load(self, idx, shift, flip, s: int, b: int) -> None:
        """Copy step `s`'s share of the epoch plan into the static buffers (device to device)."""
        sl = slice(s * b, (s + 1) * b)
        self.idx.copy_(idx[sl], non_blocking=True)
        if self.shift is not None:
            self.shift.copy_(shift[sl], non_blocking=True)
            self.flip.copy_(flip[sl], non_blocking=True)

    def __call__(self) -> None:
        x = self.data.batch(self.idx, self.shift, self.flip)
        y = self.data.labels.index_select(0, self.idx)
        dev = self.idx.device
        if self.amp == "bf16":
            # no weight-cast cache: a captured graph must recompute the casts on every replay
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, cache_enabled=False):
                out = self.model(x)
        else:
            out = self.model(x)
        loss = F.cross_entropy(out.float(), y, label_smoothing=self.ls)
        loss.backward()
        self.opt.step()
        self.loss_sum.add_(loss.detach())


#: how much faster than its rate so far a run may still get. Runs that share one GPU (worker processes,
#: CUDA MPS) start together and slow each other most at the start: on an H100 under MPS beside 8 others,
#: Next-ViT-B's first epoch ran at a third of its whole-run rate, and runs given up on after one epoch
#: would have finished.
SPEEDUP_ALLOWED = 2.0


def gives_up(now: float, deadline: float, *, seconds: float, steps_done: int, steps_left: int,
             epochs_left: int) -> bool:
    """Whether a run stops at an epoch boundary: its remaining steps and its evaluation would not end by
    `deadline` even at SPEEDUP_ALLOWED times its rate so far (`seconds` over `steps_done` steps). A run
    that truly cannot finish is asked again every epoch, and stops once that is plain."""
    left = steps_left * seconds / max(1, steps_done)
    evaluation = max(5.0, 0.5 * left / max(1, epochs_left))
    return now + left / SPEEDUP_ALLOWED + evaluation > deadline


def train_standalone(arch, data_cfg: Any, recipe: Any = None, seed: int = 0, device: Any = "auto", *,
                     splits: Optional[dict] = None, deadline: Optional[float] = None,
                     log: Optional[Callable[[str], None]] = None) -> dict:
    """Train `arch` from scratch on the data's `train` split; top-1 on `val` and `test` (where it has one).

    `splits` (from `hwnas.data.stored_splits`, on `device`) lets a worker load the data once for
    many runs. `deadline` (a `time.time()` value): when the remaining steps and the evaluation,
    at the rate of the steps since the warm-up and the capture, would end past it, the run stops
    at the next epoch boundary and returns `status: "timeout"` with no accuracy. Returns a dict: status, arch (dict), arch_id, params,
    macs (both with this data's classifier), seed, recipe, data, image_size, epochs_done, steps,
    val_top1, test_top1 (None without a test split), train_loss (mean of the last epoch), seconds
    (wall, evaluation included), train_seconds, images_per_s, epoch_seconds (per epoch, the first
    includes the warm-up and the capture), cuda_graph (whether the step ran
    as a captured graph), graph_error, capture_s, stream_busy_share (CUDA: the share of the
    training wall time this process's stream was executing or queued behind other processes'
    work; the rest is time spent waiting for data or launches) and device.
    """
    t_begin = time.time()
    recipe = recipe_config(recipe)
    data = data_config(data_cfg)
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    amp = resolve_amp(recipe.amp, dev)
    res = data.image_size
    if data.name not in IN_MEMORY:
        return _train_from_loader(arch, data, recipe, seed, dev, amp, deadline, log or (lambda msg: None), t_begin)
    if splits is None:
        splits = stored_splits(data, res, get_dataset(data.name).splits, device=dev)
    train = splits["train"].to(dev)
    eval_sets = {k: splits[k].to(dev) for k in ("val", "test") if k in splits}
    num_classes = len(train.classes)
    arch = arch.with_resolution(res)
    say = log or (lambda msg: None)

    torch.manual_seed(derive_seed(seed, 0x57A))
    model = _build(arch, num_classes, recipe, dev)
    batches = TrainBatches(train, recipe.batch_size, seed, max_steps=recipe.max_steps_per_epoch)
    steps_per_epoch, b = batches.steps, recipe.batch_size
    total = recipe.epochs * steps_per_epoch
    warmup = int(round(recipe.warmup_epochs * steps_per_epoch))
    use_graph = dev.type == "cuda" and recipe.cuda_graph
    lr0 = lr_at(0, total, warmup, recipe.lr, recipe.min_lr)
    opt = _optimizer(model, recipe, torch.tensor(lr0, device=dev) if use_graph else lr0, capturable=use_graph)
    step = _Step(model, opt, train, b, batches.augment, amp, recipe.label_smoothing)
    info = dict(arch=arch.to_dict(), arch_id=arch.id, params=arch.params(num_classes),
                macs=arch.macs(num_classes), seed=seed, recipe=asdict(recipe), data=data.name, image_size=res,
                device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu")

    def set_lr(s: int) -> None:
        v = lr_at(s, total, warmup, recipe.lr, recipe.min_lr)
        for g in opt.param_groups:
            if torch.is_tensor(g["lr"]):
                g["lr"].fill_(v)
            else:
                g["lr"] = v

    graph, graph_error, capture_s = None, None, 0.0
    side = torch.cuda.Stream(dev) if use_graph else None  # eager warm-up steps run here (PyTorch's recipe)
    events = []  # CUDA events around every step: the stream's busy time
    t_train, epochs_done, epoch_s, train_loss, epoch_times = time.perf_counter(), 0, 0.0, None, []
    steady = None  # (first step, its start time) after the warm-up and the capture: the rate to expect
    for epoch in range(recipe.epochs):
        late = deadline is not None and steady is not None and epoch > 0 and gives_up(
            time.time(), deadline, seconds=time.perf_counter() - steady[1],
            steps_done=epoch * steps_per_epoch - steady[0], steps_left=total - epoch * steps_per_epoch,
            epochs_left=recipe.epochs - epoch)
        if late:
            return dict(info, status="timeout", epochs_done=epochs_done, steps=epochs_done * steps_per_epoch,
                        val_top1=None, test_top1=None, train_loss=train_loss, seconds=time.time() - t_begin,
                        train_seconds=time.perf_counter() - t_train, cuda_graph=graph is not None,
                        graph_error=graph_error, capture_s=capture_s)
        t_epoch = time.perf_counter()
        idx, shift, flip = (t if t is None else t.to(dev, non_blocking=True) for t in batches.plan(epoch))
        step.loss_sum.zero_()
        for s in range(steps_per_epoch):
            g_step = epoch * steps_per_epoch + s
            if graph is None and use_graph and graph_error is None and g_step >= WARMUP_STEPS:
                torch.cuda.current_stream(dev).wait_stream(side)
                t0 = time.perf_counter()
                try:
                    graph = torch.cuda.CUDAGraph()
                    opt.zero_grad(set_to_none=True)
                    with torch.cuda.graph(graph):
                        step()
                except Exception as e:  # keep training eagerly; the result says why
                    graph, graph_error = None, f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                    torch.cuda.synchronize(dev)
                    opt.zero_grad(set_to_none=True)
                    say(f"CUDA graph capture failed ({graph_error}); continuing eagerly")
                capture_s = time.perf_counter() - t0
            on_side = use_graph and graph is None and graph_error is None
            if steady is None and not on_side and g_step >= 1:
                steady = (g_step, time.perf_counter())
            if on_side:
                side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side) if on_side else contextlib.nullcontext():
                ev = _start_event(dev)
                set_lr(g_step)
                step.load(idx, shift, flip, s, b)
                if graph is not None:
                    graph.replay()
                else:
                    opt.zero_grad(set_to_none=True)
                    step()
                if ev is not None:
                    ev[1].record()
                    events.append(ev)
            if on_side:
                torch.cuda.current_stream(dev).wait_stream(side)
        train_loss = float(step.loss_sum) / steps_per_epoch  # one synchronisation per epoch
        epoch_s = time.perf_counter() - t_epoch
        epoch_times.append(epoch_s)
        epochs_done = epoch + 1
        say(f"epoch {epochs_done}/{recipe.epochs} loss {train_loss:.4f} {epoch_s:.1f} s "
            f"({steps_per_epoch * b / epoch_s:.0f} img/s{', CUDA graph' if graph is not None else ''})")
    train_s = time.perf_counter() - t_train
    busy = sum(a.elapsed_time(z) for a, z in events) / 1000.0 if events else None  # synchronised above
    del graph
    model.eval()
    accs = {k: top1(model, EvalBatches(v, recipe.eval_batch_size)) for k, v in eval_sets.items()}
    return dict(info, status="done", epochs_done=epochs_done, steps=total, val_top1=accs.get("val"),
                test_top1=accs.get("test"), train_loss=train_loss, seconds=time.time() - t_begin,
                train_seconds=train_s, images_per_s=total * b / max(train_s, 1e-9), epoch_seconds=epoch_times,
                cuda_graph=use_graph and graph_error is None, graph_error=graph_error, capture_s=capture_s,
                stream_busy_share=None if busy is None else busy / train_s)


def _train_from_loader(arch, data, recipe: Recipe, seed: int, dev: torch.device, amp: str, deadline, say,
                       t_begin: float) -> dict:
    """The same recipe on a DataLoader source (imagefolder, synthetic): eager steps, images decoded on
    the CPU; evaluated on `val` and, when the data has one (`data.test_dir`), on the test split."""
    train, val, num_classes = build_loaders(data, data.image_size, recipe.batch_size, seed,
                                            max_steps_per_epoch=recipe.max_steps_per_epoch,
                                            val_batch_size=recipe.eval_batch_size)
    test = build_test_loader(data, data.image_size, recipe.eval_batch_size)
    arch = arch.with_resolution(data.image_size)
    torch.manual_seed(derive_seed(seed, 0x57A))
    model = _build(arch, num_classes, recipe, dev)
    opt = _optimizer(model, recipe, recipe.lr, capturable=False)
    steps, b = train.steps, recipe.batch_size
    total, warmup = recipe.epochs * steps, int(round(recipe.warmup_epochs * steps))
    info = dict(arch=arch.to_dict(), arch_id=arch.id, params=arch.params(num_classes), macs=arch.macs(num_classes),
                seed=seed, recipe=asdict(recipe), data=data.name, image_size=data.image_size,
                device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", cuda_graph=False,
                graph_error=None, capture_s=0.0)
    t_train, epoch_s, epoch_times, train_loss = time.perf_counter(), 0.0, [], None
    for epoch in range(recipe.epochs):
        if deadline is not None and epoch > 0 and gives_up(
                time.time(), deadline, seconds=time.perf_counter() - t_train, steps_done=epoch * steps,
                steps_left=total - epoch * steps, epochs_left=recipe.epochs - epoch):
            return dict(info, status="timeout", epochs_done=epoch, steps=epoch * steps, val_top1=None,
                        test_top1=None, train_loss=train_loss, seconds=time.time() - t_begin,
                        train_seconds=time.perf_counter() - t_train)
        t_epoch, loss_sum = time.perf_counter(), torch.zeros((), device=dev)
        train.set_epoch(epoch)
        for s, (x, y) in enumerate(train):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps + s, total, warmup, recipe.lr, recipe.min_lr)
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            with autocast(dev, amp):
                out = model(x)
            loss = F.cross_entropy(out.float(), y, label_smoothing=recipe.label_smoothing)
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
        train_loss = float(loss_sum) / steps
        epoch_s = time.perf_counter() - t_epoch
        epoch_times.append(epoch_s)
        say(f"epoch {epoch + 1}/{recipe.epochs} loss {train_loss:.4f} {epoch_s:.1f} s ({steps * b / epoch_s:.0f} img/s)")
    train_s = time.perf_counter() - t_train
    model.eval()
    return dict(info, status="done", epochs_done=recipe.epochs, steps=total, val_top1=top1(model, val),
                test_top1=None if test is None else top1(model, test), train_loss=train_loss,
                seconds=time.time() - t_begin, train_seconds=train_s, images_per_s=total * b / max(train_s, 1e-9),
                epoch_seconds=epoch_times, stream_busy_share=None)


def _start_event(dev: torch.device):
    """A recorded start event and an end event to record, on CUDA; None elsewhere."""
    if dev.type != "cuda":
        return None
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    return start, end


__all__ = ["Recipe", "recipe_config", "train_standalone"]
