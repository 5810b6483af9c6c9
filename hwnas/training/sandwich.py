"""The sandwich rule with in-place distillation: one optimizer step of a weight-sharing supernet.

Each step trains the largest subnet, the smallest and `k` random ones on the same micro-batches
(BigNAS, AttentiveNAS, EfficientFormerV2). The largest learns from the labels (with label
smoothing); the others learn from the largest's soft labels (KL divergence, in-place
distillation). Each subnet's backward runs right after its forward, so only one graph is alive.

What a step means, independent of how its micro-batches are spread over processes:
- gradients: the mean over the step's micro-batches of each micro-batch's summed subnet losses;
- BatchNorm running statistics: every micro-batch updates them from the step's starting values,
  and the step keeps the mean of those updates (their sum for the integer batch counters);
- randomness inside a micro-batch (drop-path) comes from a seed of (seed, step, micro-batch).
So W processes with A micro-batches each compute what one process with W*A computes.
"""
from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hwnas.data import derive_seed


def sample_archs(space, seed: int, step: int, num_random: int, resolution: int) -> list:
    """[largest, smallest, k random] for optimizer step `step`: a function of (seed, step) only."""
    rng = random.Random(derive_seed(seed, step, 0x5A17))
    archs = [space.max_arch(), space.min_arch()] + [space.sample(rng) for _ in range(num_random)]
    return [a.with_resolution(resolution) for a in archs]


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1),
                    reduction="batchmean") * (t * t)


@dataclass
class StepStats:
    """Summed losses of one process: role -> (sum of losses, number of micro-batches)."""

    sums: dict = field(default_factory=dict)

    def add(self, role: str, value: float) -> None:
        s, n = self.sums.get(role, (0.0, 0))
        self.sums[role] = (s + value, n + 1)


def autocast(device: torch.device, amp: str):
    """bf16 / fp16 autocast context, or a null context when amp is off."""
    if amp in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return contextlib.nullcontext()


def sandwich_step(net, archs: list, batches: list, *, seeds: list, divisor: int, device: torch.device,
                  amp: str = "off", label_smoothing: float = 0.1, distill: bool = True,
                  temperature: float = 1.0, scaler=None, stats: StepStats | None = None):
    """Forward and backward of every subnet in `archs` on every (x, y) in `batches`.

    Accumulates into `.grad` (each loss divided by `divisor`, the step's total number of
    micro-batches over all processes) and returns `(buffers, start, delta)`: the supernet's
    buffers, their values before the step and the sum of this process's micro-batch updates,
    for `finish_buffers` (after an optional all-reduce of `delta`).
    """
    buffers = list(net.buffers())
    start = [b.detach().clone() for b in buffers]
    delta = [torch.zeros_like(b) for b in buffers]
    for (x, y), seed in zip(batches, seeds):
        with torch.no_grad():
            for b, s in zip(buffers, start):
                b.copy_(s)
        torch.manual_seed(seed)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        teacher = None
        for i, arch in enumerate(archs):
            net.set_active(arch)
            with autocast(device, amp):
                out = net(x)
            out = out.float()
            if teacher is None or not distill:
                loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
            else:
                loss = distill_loss(out, teacher, temperature)
            if teacher is None:
                teacher = out.detach()
            scaled = loss / divisor
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if stats is not None:
                stats.add("largest" if i == 0 else "smallest" if i == 1 else "random", float(loss.detach()))
        with torch.no_grad():
            for d, b, s in zip(delta, buffers, start):
                d += b - s
    return buffers, start, delta


@torch.no_grad()
def finish_buffers(buffers, start, delta, micro_batches: int) -> None:
    """Buffers = start + mean update (float: running statistics) or + total (integer: counters)."""
    for b, s, d in zip(buffers, start, delta):
        b.copy_(s + d / micro_batches if b.is_floating_point() else s + d)
