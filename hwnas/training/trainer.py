"""The supernet training loop: sandwich steps, schedule, checkpoints, resume, metrics.

`train(space, data_cfg, train_cfg, out_dir, seed)` writes to `out_dir`:
- `train_state.pt`: everything a resumed run needs (supernet, optimizer, AMP scaler, epoch,
  step, metrics history), written atomically every epoch; a run started on a folder that holds
  one continues from it, if its settings are the first run's (`_check_resume`);
- `supernet.pt`: the supernet (`hwnas.checkpoint` format), every epoch after the state; a
  resumed run first writes it again when a kill left it behind the state;
- `metrics.csv` (and TensorBoard events when `tensorboard` is installed).

Nothing random depends on hidden state: subnets come from (seed, step), data order from
(seed, epoch), drop-path from (seed, step, micro-batch). A run killed after a checkpoint and
resumed therefore ends bitwise identical (on the CPU) to one that was never interrupted.
"""
from __future__ import annotations

import csv
import io
import math
import os
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import torch

import search_spaces
import supernet
from hwnas.checkpoint import (CheckpointError, atomic_save, check_record, nonfinite_tensor, safe_load, save_supernet,
                              supernet_record)
from hwnas.data import build_loaders, config_from, data_config, derive_seed, skipped_images
from hwnas.device import check_device
from hwnas.errors import ConfigError, HwnasError, check_choice, check_min, check_positive, check_range
from hwnas._files import atomic_write, remove_stale_temps
from hwnas.evaluate import SubnetEvaluator, top1

from . import distributed as D
from .sandwich import StepStats, alpha_divergence_loss, finish_buffers, sample_archs, sandwich_step

STATE_FORMAT = "hwnas.train_state"


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64  # per process and micro-batch; one optimizer step sees batch_size x processes x accum_steps
    accum_steps: int = 1  # micro-batches per optimizer step (gradient accumulation)
    num_random: int = 2  # k: random subnets per step besides the largest and the smallest
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3  # peak learning rate (after warm-up)
    min_lr: float = 1e-5  # end of the cosine schedule
    warmup_epochs: float = 1.0  # linear warm-up from 0 (fractions allowed)
    weight_decay: float = 0.05  # conv/linear weights only (not norms, biases, layer scales, attention biases)
    momentum: float = 0.9  # sgd only
    label_smoothing: float = 0.1  # the largest subnet's cross-entropy
    distill: bool = True  # in-place distillation: the others learn the largest's soft labels (else: labels)
    distill_temperature: float = 1.0
    # remedies for the supernet's ranking of subnets (docs/accuracy.md measures each one).
    # EXPERIMENTAL, off by default, kept until measured (then kept or removed, as Optuna marks its own):
    # distill_loss=alpha and alpha_*, sampling=attentive_* and attentive_candidates,
    # largest_warmup_epochs, depth_slots, macs_strata, grad_projection (docs/training.md)
    distill_loss: str = "kl"  # experimental: kl | alpha (AlphaNet's adaptive alpha-divergence, alpha_min/alpha_max/alpha_clip)
    alpha_min: float = -1.0  # experimental (distill_loss=alpha)
    alpha_max: float = 1.0  # experimental (distill_loss=alpha)
    alpha_clip: float = 5.0  # experimental (distill_loss=alpha)
    sampling: str = "uniform"  # experimental: uniform | attentive_worst | attentive_best (AttentiveNAS: of
    attentive_candidates: int = 3  # this many random archs per slot, train the worst / best on the batch)
    largest_warmup_epochs: float = 0.0  # experimental: train only the largest subnet for this many epochs first
    # experimental: of the num_random random subnets per step, this many have the max arch's widths and a
    # random depth (the space's sample_depth; OFA's elastic-depth phase): full-width shallow subnets, which
    # uniform sampling almost never trains (docs/accuracy.md: Next-ViT-S and -B, inherited 31-35 %)
    depth_slots: int = 0
    # random subnets only from the space's structurally consistent archs (space.sample_consistent; Next-ViT: no
    # NTB input projection that Next-ViT-L skips): what Next-ViT's subnets need to inherit (docs/accuracy.md,
    # round 13). None: the space's default (`SearchSpace.trains_consistent_only`: Next-ViT true, EfficientFormerV2
    # false); `train` resolves it, so a checkpoint's config always says true or false
    consistent_only: Optional[bool] = None
    # experimental: the random subnets of a step (other than depth slots) cover the size range: slot i of m
    # from the i-th of m equal bands of log MACs between the smallest and the largest arch (uniform sampling
    # trains the small end rarely: EfficientFormerV2's small archs inherit ~3 points under, docs/accuracy.md)
    macs_strata: bool = False
    # experimental: NASViT's gradient projection: a step's students' gradient that conflicts with the
    # largest's loses its component along it (docs/training.md, "Remedies for the ranking")
    grad_projection: bool = False
    # every loss but the largest's is multiplied by this; 1/4 keeps the students' distillation gradient
    # from stalling the largest subnet (docs/accuracy.md: on the H200 it lifted the largest from 79 % to
    # 91 % val top-1 and put inherited accuracies within a point of stand-alone training; 1.0 is the
    # papers' sandwich)
    student_weight: float = 0.25
    drop_path: float = 0.0  # stochastic depth of the deepest block (linear in depth, as both papers)
    clip_grad: float = 0.0  # max gradient norm (0: off)
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    device: str = "auto"  # auto | cuda | cpu
    max_steps_per_epoch: int = 0  # cap on optimizer steps per epoch (0: the whole training set)
    eval_calib_batches: int = 10  # per-epoch top-1 of largest and smallest after BN recalibration (0: skip)
    pretrained: Optional[str] = None  # official / timm checkpoint imported before training (not on resume)
    resume: bool = True  # continue from out_dir/train_state.pt when it exists
    progress: bool = True  # progress bar (main process only)
    # stop before an epoch that would end more than this many seconds after the start (0: no limit);
    # the run stays resumable: the same command continues it
    time_limit_s: float = 0.0

    def __post_init__(self):
        t = "train"
        check_min(t, "epochs", self.epochs, 1)
        check_min(t, "batch_size", self.batch_size, 1)
        check_min(t, "accum_steps", self.accum_steps, 1)
        check_min(t, "num_random", self.num_random, 0)
        check_choice(t, "optimizer", self.optimizer, ("adamw", "sgd"))
        check_positive(t, "lr", self.lr)
        check_min(t, "min_lr", self.min_lr, 0)
        if self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr={self.min_lr} > train.lr={self.lr}: the schedule decays from lr to min_lr")
        check_min(t, "warmup_epochs", self.warmup_epochs, 0)
        check_min(t, "weight_decay", self.weight_decay, 0)
        check_range(t, "momentum", self.momentum, 0.0, 1.0)
        check_range(t, "label_smoothing", self.label_smoothing, 0.0, 0.99)
        check_positive(t, "distill_temperature", self.distill_temperature)
        check_choice(t, "distill_loss", self.distill_loss, ("kl", "alpha"))
        if self.alpha_min > self.alpha_max:
            raise ConfigError(f"train.alpha_min={self.alpha_min} > train.alpha_max={self.alpha_max}")
        check_positive(t, "alpha_clip", self.alpha_clip)
        check_choice(t, "sampling", self.sampling, ("uniform", "attentive_worst", "attentive_best"))
        check_min(t, "attentive_candidates", self.attentive_candidates, 2 if self.sampling != "uniform" else 1,
                  hint="attentive sampling chooses among at least 2 candidates")
        check_min(t, "largest_warmup_epochs", self.largest_warmup_epochs, 0)
        check_min(t, "depth_slots", self.depth_slots, 0)
        if self.depth_slots > self.num_random:
            raise ConfigError(f"train.depth_slots={self.depth_slots} > train.num_random={self.num_random}: depth "
                              "slots are some of the random subnets; lower depth_slots or raise num_random")
        check_min(t, "student_weight", self.student_weight, 0)
        check_range(t, "drop_path", self.drop_path, 0.0, 0.99)
        check_min(t, "clip_grad", self.clip_grad, 0, hint="0: off")
        check_choice(t, "amp", self.amp, ("auto", "bf16", "fp16", "off"))
        check_device("train.device", self.device)
        check_min(t, "max_steps_per_epoch", self.max_steps_per_epoch, 0, hint="0: the whole training set")
        check_min(t, "eval_calib_batches", self.eval_calib_batches, 0, hint="0: skip")
        check_min(t, "time_limit_s", self.time_limit_s, 0, hint="0: no limit")


def train_config(cfg: Any = None) -> TrainConfig:
    """A `TrainConfig` from a dataclass, a mapping or an OmegaConf node; an unknown key or a value
    out of range is a `ConfigError` naming it (`TrainConfig.__post_init__`)."""
    return config_from(TrainConfig, cfg, "train")


def resolved_train_config(cfg: Any, space: Any) -> TrainConfig:
    """`train_config(cfg)` with the space's defaults filled in (`consistent_only: None` ->
    `space.trains_consistent_only`): the config a supernet of `space` trains with and records."""
    cfg = train_config(cfg)
    if cfg.consistent_only is None:
        cfg = replace(cfg, consistent_only=bool(space.trains_consistent_only))
    return cfg


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine decay to `min_lr` at `total`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in net.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith("attention_biases") else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise ConfigError(f"train.optimizer: unknown optimizer {cfg.optimizer!r} (allowed: adamw, sgd)")


def resolve_amp(amp: str, device: torch.device) -> str:
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "off"
    if amp not in ("bf16", "fp16", "off"):
        raise ConfigError(f"train.amp: {amp!r} (allowed: auto, bf16, fp16, off)")
    return amp


class MetricsLog:
    """metrics.csv rewritten (atomically) from the history after each epoch; TensorBoard if present."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.path = out_dir / "metrics.csv"
        self.enabled = enabled
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: CSV only
                self.tb = None

    @staticmethod
    def _csv(history: list[dict]) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(history[-1]), extrasaction="ignore")
        w.writeheader()
        w.writerows(history)
        return buf.getvalue()

    def catch_up(self, history: list[dict]) -> None:
        """Write the history again where metrics.csv does not hold it all (a run killed before writing it)."""
        if self.enabled and history and (not self.path.is_file() or self.path.read_text() != self._csv(history)):
            self.write(history)

    def write(self, history: list[dict]) -> None:
        if not self.enabled or not history:
            return
        atomic_write(self.path, self._csv(history), fsync=False)
        if self.tb is not None:
            row = history[-1]
            for k, v in row.items():
                if k not in ("epoch", "step") and isinstance(v, (int, float)) and not math.isnan(v):
                    self.tb.add_scalar(k, v, row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


class TrainingDiverged(HwnasError, ArithmeticError):
    """The loss or the weights became NaN or inf: the run stops before it saves anything of them."""


def _diverged(what: str, step_text: str, lr: float, cfg: TrainConfig, ckpt: Path) -> TrainingDiverged:
    kept = (f"{ckpt} still holds the last good epoch" if ckpt.is_file() else "no checkpoint was written")
    return TrainingDiverged(f"the training diverged: {what} at {step_text} (lr {lr:.3g}); nothing of it was saved "
                            f"({kept}). Lower train.lr (now {cfg.lr:g}) or set train.clip_grad, and run again")


def _run_config(space, data, cfg: TrainConfig, seed: int, info: D.DistInfo, amp: str) -> dict:
    return {"space": space.name, "data": asdict(data), "train": asdict(cfg), "seed": seed, "amp": amp,
            "world_size": info.world_size, "global_batch": cfg.batch_size * cfg.accum_steps * info.world_size}


#: how a refused resume ends: the two ways to start afresh
_AFRESH = "use another output folder (hydra.run.dir=...) or train.resume=false to start afresh"

#: run-config keys a resumed run may change, because none of them changes the trained weights; every
#: other key must equal the first run's (a run is the run its checkpoint's config describes)
_MAY_CHANGE = frozenset({
    "train.progress",  # the progress bar only
    "train.time_limit_s",  # only where a process stops; the run resumes exactly (tests/test_train.py)
    "train.resume",  # whether to continue, not what
    # where it runs: float rounding aside, the same step; the precision it implies (train.amp=auto) is
    # compared on its own, as `amp`
    "train.device",
    # the same micro-batches in the same order: processes x accum_steps may trade places (docs/training.md,
    # "Several GPUs") as long as train.batch_size and the global batch stay, which are compared
    "world_size", "train.accum_steps",
    # per-epoch evaluation of copies (SubnetEvaluator never changes the supernet): metrics.csv columns only
    "train.eval_calib_batches",
    # DataLoader worker processes: decoded images are augmented from (seed, epoch, image), whoever decodes them
    "data.num_workers",
})

#: keys of the run config that are no override of their own: what to call them in a refusal
_DERIVED = {"global_batch": "global batch (train.batch_size x processes x train.accum_steps)",
            "amp": "precision (train.amp; auto: bf16 on a GPU, off on the CPU)"}

#: why a refused key may surprise
_WHY = {"train.epochs": "train.epochs shapes the learning-rate schedule of the epochs already trained: a longer or "
                        "shorter run is another run, in another folder",
        "train.consistent_only": "its default is the space's: Next-ViT true"}


def _flat(cfg: dict, prefix: str = "") -> dict:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}: the keys as overrides name them."""
    out = {}
    for k, v in cfg.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _override(value: Any) -> str:
    """A config value as an override writes it (true, null, [0.5,0.5])."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_override, value)) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _check_resume(saved: dict, now: dict, path: Path) -> None:
    """Refuse to continue the run recorded in `saved` with settings that change its result: one line
    naming every differing key with both values."""
    was, is_ = _flat(saved), _flat(now)
    # a key only one side has: the other hwnas version or dataset had no such setting (data.name tells
    # datasets apart); consistent_only null: a run begun before Next-ViT's default, which trained every arch
    differ = [k for k in is_ if k in was and k not in _MAY_CHANGE and was[k] != is_[k]
              and not (k == "train.consistent_only" and was[k] is None)]
    if not differ:
        return
    said = ", ".join(f"{_DERIVED.get(k, k)}={_override(was[k])} (this run: {_override(is_[k])})" for k in differ)
    same = " ".join(f"{k}={_override(was[k])}" for k in differ if k not in _DERIVED)
    why = "".join(f" ({_WHY[k]})" for k in differ if k in _WHY)
    raise CheckpointError(f"{path}: written by a run with other settings: {said}{why}; pass the first run's values"
                          f"{f' ({same})' if same else ''} to continue it, or {_AFRESH}")


def saved_epoch(path: Path) -> Optional[int]:
    """The epoch a `supernet.pt` or `train_state.pt` holds, None when there is no such file. Reads
    the file memory-mapped: the tensors stay on disk."""
    if not path.is_file():
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(ckpt["epoch"] if ckpt.get("format") == STATE_FORMAT else ckpt["meta"]["epoch"])


def _supernet_catch_up(out_dir: Path, state: dict, log) -> None:
    """Bring `supernet.pt` up to the training state a resumed run starts from. Each epoch writes the
    state first (it is what a rerun continues from), then `supernet.pt` and `metrics.csv`: a kill
    between the writes leaves them an epoch behind, for good if that was the last epoch."""
    ckpt = out_dir / "supernet.pt"
    try:
        epoch = saved_epoch(ckpt)
        held = "missing" if epoch is None else f"at epoch {epoch}"
    except Exception:  # noqa: BLE001 -- damaged by hand: the state holds what it should be
        epoch, held = None, "unreadable"
    if epoch != state["epoch"]:
        atomic_save(state["supernet"], ckpt)  # the very record that epoch's supernet.pt would have held
        log(f"{ckpt} was {held}, behind {out_dir / 'train_state.pt'} (epoch {state['epoch']}): written again "
            "from it")


def train(space: Any, data_cfg: Any, cfg: Any, out_dir: str | os.PathLike, seed: int = 0,
          log: Callable[[str], None] = print) -> Path:
    """Train a supernet of `space` on `data_cfg`; returns the path of `out_dir/supernet.pt`."""
    space = search_spaces.get_space(space) if isinstance(space, str) else space
    data = data_config(data_cfg)
    cfg = resolved_train_config(cfg, space)
    for on, option, method, what, off in (
            (cfg.depth_slots, f"depth_slots={cfg.depth_slots}", "sample_depth", " (the max arch with a random depth)",
             "depth_slots=0"),
            (cfg.consistent_only, "consistent_only=true", "sample_consistent", "", "consistent_only=false")):
        try:
            if on:
                getattr(space, method)(random.Random(0))
        except NotImplementedError:
            raise ConfigError(f"train.{option}: space {space.name!r} defines no {method}{what}; use train.{off}") from None
    out_dir = Path(out_dir)
    info = D.setup(cfg.device)
    try:
        return _train(space, data, cfg, out_dir, seed, info, log)
    finally:
        D.cleanup(info)


def _train(space, data, cfg: TrainConfig, out_dir: Path, seed: int, info: D.DistInfo, log) -> Path:
    device = info.device
    amp = resolve_amp(cfg.amp, device)
    main = info.is_main
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(out_dir)  # half-written checkpoints of a killed run
    res = data.image_size
    # digits and fashion_mnist are held on `device` and batched there (hwnas.data.TrainBatches)
    train_loader, _, num_classes = build_loaders(
        data, res, cfg.batch_size, seed, rank=info.rank, world_size=info.world_size,
        accum_steps=cfg.accum_steps, max_steps_per_epoch=cfg.max_steps_per_epoch, device=device)
    steps_per_epoch = train_loader.steps
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    largest_only = int(round(cfg.largest_warmup_epochs * steps_per_epoch))
    candidates = cfg.attentive_candidates if cfg.sampling != "uniform" else 1
    distill_fn = None
    if cfg.distill_loss == "alpha":
        def distill_fn(student, teacher):
            return alpha_divergence_loss(student, teacher, cfg.alpha_min, cfg.alpha_max, cfg.alpha_clip)
    micro_total = info.world_size * cfg.accum_steps

    torch.manual_seed(derive_seed(seed, 0xC0FFEE))
    net = supernet.build_supernet(space, num_classes=num_classes, resolution=res,
                                  drop_path_rate=cfg.drop_path).to(device)
    if main and supernet.get_family(space).attention_keys(res) == 1:
        log(f"note: at {res}x{res} {net.space.name}'s attention sees one key (its keys are at 1/32 of the input: 49 "
            f"at 224 px); a softmax over one key is 1, so those attention blocks are a global average and learn "
            f"nothing of their own, and the archs are trained and ranked without them (docs/accuracy.md, round 21). "
            f"64 px gives 4 keys, 128 px 16")
    optimizer = make_optimizer(net, cfg)
    scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None
    run_cfg = _run_config(space, data, cfg, seed, info, amp)

    state_path = out_dir / "train_state.pt"
    start_epoch, history, pretrained_report = 0, [], None
    skipped: dict[str, str] = {}  # unreadable images left out (path -> reason), kept in the checkpoint's meta
    if cfg.resume and state_path.is_file():
        state = safe_load(state_path, map_location=device, what="training state")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{state_path}: not an hwnas training state; remove it or use another "
                                  "output folder")
        _check_resume(state["config"], run_cfg, state_path)
        rec = check_record(state["supernet"], state_path, space)
        net.load_state_dict(rec["state_dict"], strict=True)
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        pretrained_report = rec["meta"].get("pretrained")
        skipped = dict(rec["meta"].get("skipped_images") or {})
        if main:
            log(f"resuming from {state_path}: {start_epoch}/{cfg.epochs} epochs done")
            _supernet_catch_up(out_dir, state, log)
    elif cfg.pretrained:
        from supernet.pretrained import format_report, load_pretrained
        report = load_pretrained(net, cfg.pretrained)
        pretrained_report = {"path": str(cfg.pretrained), "layout": report["layout"],
                             "source_arch": report["source_arch"], "loaded": len(report["loaded"]),
                             "kept_init": report["missing"]}
        bad = nonfinite_tensor(net.state_dict())
        if bad is not None:
            raise CheckpointError(f"train.pretrained={cfg.pretrained}: its weights hold NaN or inf (supernet tensor "
                                  f"{bad!r}); training from them diverges at the first step. Use an intact checkpoint")
        if main:
            log(format_report(report))
    # Same starting weights everywhere (they are already: same seed; this guards against drift).
    D.broadcast_([t for t in net.state_dict().values()], info)

    evaluator = None
    if main and cfg.eval_calib_batches > 0:
        calib, val, _ = build_loaders(data, res, cfg.batch_size, seed, augment=False, device=device)
        evaluator = SubnetEvaluator(net, calib, val, calib_batches=cfg.eval_calib_batches)
    metrics = MetricsLog(out_dir, main)
    metrics.catch_up(history)  # a resumed run's, where its last epoch was killed before writing it
    params = list(net.parameters())
    bar = None
    if main and cfg.progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=total_steps, initial=start_epoch * steps_per_epoch, desc=f"train {space.name}",
                   unit="step", dynamic_ncols=True)

    t_start, last_epoch_s = time.perf_counter(), 0.0
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.time_limit_s and epoch > start_epoch and \
                time.perf_counter() - t_start + last_epoch_s > cfg.time_limit_s:
            if main:
                log(f"time limit: stopping after epoch {epoch}/{cfg.epochs} ({time.perf_counter() - t_start:.0f} s "
                    f"of train.time_limit_s={cfg.time_limit_s:g}); rerun the same command to continue")
            break
        net.train()
        train_loader.set_epoch(epoch)
        batches = iter(train_loader)
        stats = StepStats()
        conflicts = [] if cfg.grad_projection else None  # (cosine of students' and largest's gradients, projected)
        t0, images = time.perf_counter(), 0
        bad_step = None  # on the device: the first step of this epoch whose loss was not finite, else -1
        for s in range(steps_per_epoch):
            step = epoch * steps_per_epoch + s
            lr = lr_at(step, total_steps, warmup, cfg.lr, cfg.min_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            micro = [next(batches) for _ in range(cfg.accum_steps)]
            archs = sample_archs(space, seed, step, cfg.num_random, res, candidates, cfg.depth_slots,
                                 cfg.consistent_only, cfg.macs_strata)
            if step < largest_only:
                archs = archs[:1]
            seeds = [derive_seed(seed, step, info.rank * cfg.accum_steps + a) for a in range(cfg.accum_steps)]
            optimizer.zero_grad(set_to_none=True)
            buffers, start, delta = sandwich_step(
                net, archs, micro, seeds=seeds, divisor=micro_total, device=device, amp=amp,
                label_smoothing=cfg.label_smoothing, distill=cfg.distill,
                temperature=cfg.distill_temperature, scaler=scaler, stats=stats, distill_fn=distill_fn,
                choose="best" if cfg.sampling == "attentive_best" else "worst",
                project=cfg.grad_projection, student_weight=cfg.student_weight, conflicts=conflicts)
            # the epoch's running loss sums stay non-finite from the first bad step on (no host sync here)
            flag = torch.where(torch.isfinite(sum(v for v, _ in stats.sums.values())), -1, step)
            bad_step = flag if bad_step is None else torch.where(bad_step >= 0, bad_step, flag)
            if info.world_size == 1 and (device.type != "cuda" or s % 20 == 0):  # a GPU waits only now and then
                if int(bad_step) >= 0:
                    raise _diverged("the loss became NaN or inf", f"step {int(bad_step) + 1} (epoch {epoch + 1})",
                                    lr, cfg, out_dir / "supernet.pt")
            D.all_reduce_(delta, info)
            finish_buffers(buffers, start, delta, micro_total)
            grads = [p.grad for p in params if p.grad is not None]
            D.all_reduce_(grads, info)
            if scaler is not None:
                scaler.unscale_(optimizer)
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], cfg.clip_grad)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            images += sum(len(m[1]) for m in micro) * len(archs) * info.world_size
            if bar is not None:
                if s % 20 == 0 or s == steps_per_epoch - 1:  # reading the loss waits for the GPU
                    last = stats.sums.get("largest", (0.0, 1))
                    bar.set_postfix(epoch=epoch + 1, lr=f"{lr:.2e}", loss=f"{float(last[0]) / max(1, last[1]):.3f}")
                bar.update(1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = last_epoch_s = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "lr": lr}
        totals = stats.totals()
        loss_sums = torch.tensor([[*totals.get(r, (0.0, 0))] for r in ("largest", "smallest", "random")],
                                 dtype=torch.float64, device=device)
        D.all_reduce_([loss_sums], info)
        for (r, (total, n)) in zip(("largest", "smallest", "random"), loss_sums.tolist()):
            row[f"loss_{r}"] = total / n if n else float("nan")
        # every process sees the same reduced sums and the same weights: all stop together
        if not all(math.isfinite(total) for total, _ in loss_sums.tolist()):
            where = (f"step {int(bad_step) + 1}" if bad_step is not None and int(bad_step) >= 0 else
                     f"a step of steps {epoch * steps_per_epoch + 1}-{(epoch + 1) * steps_per_epoch}")
            raise _diverged("the loss became NaN or inf", f"{where} (epoch {epoch + 1})", lr, cfg,
                            out_dir / "supernet.pt")
        bad = nonfinite_tensor(dict(net.named_parameters()))
        if bad is not None:
            raise _diverged(f"weight {bad!r} became NaN or inf", f"the update of step {(epoch + 1) * steps_per_epoch}"
                            f" (epoch {epoch + 1})", lr, cfg, out_dir / "supernet.pt")
        if conflicts:  # this process's micro-batches: how often and how badly the students opposed the largest
            cos, hit = (torch.stack(t).float() for t in zip(*conflicts))
            row["conflict_share"], row["conflict_cos"] = float(hit.mean()), float(cos.mean())
        row["subnet_images_per_s"] = images / max(seconds, 1e-9)
        row["seconds"] = seconds
        if evaluator is not None:
            smallest = space.min_consistent_arch() if cfg.consistent_only else space.min_arch()
            for name, arch in (("largest", space.max_arch()), ("smallest", smallest)):
                row[f"val_top1_{name}"] = top1(evaluator.subnet(arch), evaluator.val_loader)  # uncached
        history.append(row)
        if main:
            seen = skipped_images(train_loader, *((evaluator.train_loader, evaluator.val_loader) if evaluator else ()))
            if len(seen) > len(skipped):
                log(f"{len(seen)} unreadable image(s) left out so far (data.on_bad_image=skip), e.g. {next(iter(seen))}")
            skipped = {**skipped, **seen}
            meta = {"epoch": epoch + 1, "epochs": cfg.epochs, "step": row["step"], "space": space.name,
                    "data": data.name, "image_size": res, "seed": seed, "config": run_cfg,
                    "history": history, "pretrained": pretrained_report, "skipped_images": skipped}
            atomic_save({"format": STATE_FORMAT, "version": 1, "config": run_cfg, "epoch": epoch + 1,
                         "history": history, "supernet": supernet_record(net, meta),
                         "optimizer": optimizer.state_dict(),
                         "scaler": scaler.state_dict() if scaler is not None else None}, state_path)
            save_supernet(net, out_dir / "supernet.pt", meta)
            metrics.write(history)
            msg = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
            (bar.write if bar is not None else log)(msg)
        D.barrier(info)
    if bar is not None:
        bar.close()
    metrics.close()
    D.barrier(info)
    return out_dir / "supernet.pt"


__all__ = ["TrainConfig", "TrainingDiverged", "lr_at", "make_optimizer", "resolved_train_config", "train",
           "train_config"]
