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
import functools
import math
import random
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from hwnas.data import derive_seed


def sample_archs(space, seed: int, step: int, num_random: int, resolution: int, candidates: int = 1,
                 depth_slots: int = 0, consistent_only: bool = False, macs_strata: bool = False) -> list:
    """[largest, smallest, k random] for optimizer step `step`: a function of (seed, step) only.

    With `candidates` > 1 each random slot is a list of that many archs, among which
    `sandwich_step` chooses by the loss on the step's first micro-batch (attentive sampling). The
    first `depth_slots` random slots draw from `space.sample_depth` (the max arch's widths, a random
    depth) instead of `space.sample`; with `consistent_only` the others draw from
    `space.sample_consistent` and the smallest is `space.min_consistent_arch`. With `macs_strata` the
    other slots cover the space's size range: slot i of those m draws from the i-th of m equal bands of
    log MACs between the smallest and the largest arch (`draw_in_band`).
    """
    rng = random.Random(derive_seed(seed, step, 0x5A17))
    smallest = space.min_consistent_arch() if consistent_only else space.min_arch()
    archs = [space.max_arch().with_resolution(resolution), smallest.with_resolution(resolution)]
    if macs_strata:
        lo, hi = _log_macs(archs[1]), _log_macs(archs[0])  # the same two archs every step: cached
        bands = num_random - depth_slots
    for slot in range(num_random):
        draw = space.sample_depth if slot < depth_slots else \
            space.sample_consistent if consistent_only else space.sample
        if macs_strata and slot >= depth_slots:
            i = slot - depth_slots
            band = (lo + (hi - lo) * i / bands, lo + (hi - lo) * (i + 1) / bands)
            drawn = [draw_in_band(draw, rng, resolution, band) for _ in range(max(1, candidates))]
        else:
            drawn = [draw(rng).with_resolution(resolution) for _ in range(max(1, candidates))]
        archs.append(drawn[0] if candidates <= 1 else drawn)
    return archs


@functools.lru_cache(maxsize=16)
def _log_macs(arch) -> float:
    return math.log(arch.macs())


#: draws `draw_in_band` makes before it settles for the nearest arch it drew (~0.6 ms each)
BAND_TRIES = 64


def draw_in_band(draw, rng: random.Random, resolution: int, band: tuple[float, float]):
    """An arch of `draw` (a space's sampler) whose log MACs at `resolution` lie in `band`: the first of
    up to BAND_TRIES draws that does, else the nearest drawn. Uniform sampling trains the small end of a
    space rarely (EfficientFormerV2: 3.1 % of its archs at or under 410 MMACs, docs/accuracy.md)."""
    best, best_d = None, math.inf
    for _ in range(BAND_TRIES):
        a = draw(rng).with_resolution(resolution)
        m = math.log(a.macs())
        d = max(band[0] - m, m - band[1], 0.0)
        if d == 0.0:
            return a
        if d < best_d:
            best, best_d = a, d
    return best


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) on temperature-softened distributions, scaled by T^2."""
    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1),
                    reduction="batchmean") * (t * t)


def alpha_divergence_loss(student: torch.Tensor, teacher: torch.Tensor, alpha_min: float = -1.0,
                          alpha_max: float = 1.0, clip: float = 5.0) -> torch.Tensor:
    """AlphaNet's adaptive alpha-divergence (Wang et al., ICML 2021) of the student q from the teacher p.

    Per sample, the larger of D_a(p || q) for a = `alpha_min` and `alpha_max`, where
    D_a = sum_i q_i ((p_i / q_i)^a - 1) / (a (a - 1)) (a -> 1: KL(p || q); a -> 0: KL(q || p)).
    A negative a punishes a student that over-estimates the teacher's uncertainty, a positive one
    a student that under-estimates it; KL alone only does the latter. The importance weight
    (p / q)^a is clipped at `clip` (except at a = 1, as AlphaNet). The value returned is the batch
    mean of the divergence; its gradient is that of AlphaNet's estimator -sum_i q_i rho_i log q_i
    with q and rho held fixed, which at a = 1 is exactly the gradient of KL(p || q).
    """
    q_log = F.log_softmax(student.float(), dim=-1)
    p_log = F.log_softmax(teacher.float(), dim=-1).detach()
    q = q_log.exp().detach()
    # Everything from log(p / q): p / q itself overflows where the student's probability underflows
    # to 0, and an inf times a 0 in the branch torch.where does not take still makes its gradient NaN.
    log_ratio = (p_log - q_log).detach()
    log_clip = math.log(clip)

    def branch(a: float):
        if abs(a) < 1e-3:  # KL(q || p), weights clipped: log r <= log clip
            log_r = log_ratio.clamp(max=log_clip)
            d, rho = (q * -log_r).sum(-1), log_r - 1.0
        elif abs(a - 1.0) < 1e-3:  # KL(p || q); q * rho = p exactly, the gradient of cross-entropy to p
            p = p_log.exp()
            return (p * log_ratio).sum(-1), -(p * q_log).sum(-1)
        else:
            w = torch.exp((a * log_ratio).clamp(max=log_clip))
            d, rho = (q * (w - 1.0)).sum(-1) / (a * (a - 1.0)), w / a + 1.0 / (a * (a - 1.0))
        return d, -(q * rho * q_log).sum(-1)

    d_lo, g_lo = branch(alpha_min)
    d_hi, g_hi = branch(alpha_max)
    lower = d_lo > d_hi
    d, g = torch.where(lower, d_lo, d_hi), torch.where(lower, g_lo, g_hi)
    return (g - g.detach() + d.detach()).mean()


@dataclass
class StepStats:
    """Summed losses of one process: role -> (sum of losses, number of micro-batches).

    The sums stay tensors on the device until `totals()` is read: a float() per subnet would make
    the host wait for the GPU after every forward, so that kernel launches never overlap compute.
    """

    sums: dict = field(default_factory=dict)

    def add(self, role: str, value) -> None:
        s, n = self.sums.get(role, (0.0, 0))
        self.sums[role] = (s + value, n + 1)

    def totals(self) -> dict:
        """role -> (sum as a float, count): one host synchronisation."""
        return {k: (float(s), n) for k, (s, n) in self.sums.items()}


def autocast(device: torch.device, amp: str):
    """bf16 / fp16 autocast context, or a null context when amp is off."""
    if amp in ("bf16", "fp16"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)
    return contextlib.nullcontext()


def sandwich_step(net, archs: list, batches: list, *, seeds: list, divisor: int, device: torch.device,
                  amp: str = "off", label_smoothing: float = 0.1, distill: bool = True,
                  temperature: float = 1.0, scaler=None, stats: StepStats | None = None,
                  distill_fn=None, choose: str = "worst", project: bool = False,
                  student_weight: float = 1.0, conflicts: list | None = None):
    """Forward and backward of every subnet in `archs` on every (x, y) in `batches`.

    Accumulates into `.grad` (each loss divided by `divisor`, the step's total number of
    micro-batches over all processes) and returns `(buffers, start, delta)`: the supernet's
    buffers, their values before the step and the sum of this process's micro-batch updates,
    for `finish_buffers` (after an optional all-reduce of `delta`). With one micro-batch on one
    process (`divisor` 1) the buffers simply keep that micro-batch's update: `start` and `delta`
    are None, and a few thousand small copies per step are saved.

    `distill_fn(student_logits, teacher_logits)` replaces the KL of `distill_loss`. An entry of
    `archs` that is a list of candidates (attentive sampling, AttentiveNAS) is replaced by the
    candidate with the highest (`choose="worst"`) or lowest (`"best"`) cross-entropy on the first
    micro-batch, measured without gradients before the step (BatchNorm statistics restored). Each
    process chooses on its own first micro-batch, so under torchrun attentive sampling is not
    equivalent to one process with gradient accumulation.

    `student_weight` scales every loss but the largest's. `project=True` is NASViT's gradient
    projection (Gong et al., ICLR 2022): per micro-batch, when the students' summed gradient g_s
    conflicts with the largest's g_l (g_s . g_l < 0, over all parameters), its component along g_l
    is removed, g_s - (g_s . g_l / |g_l|^2) g_l, so that the students never undo the largest's
    descent. Each micro-batch is projected against its own largest's gradient, so the W x A
    equivalence above still holds; `conflicts` (a list) receives one (cosine before projection,
    projected or not) pair of 0-d tensors per micro-batch.
    """
    params = list(net.parameters()) if project else None
    buffers = list(net.buffers())
    single = len(batches) == 1 and divisor == 1  # one micro-batch, one process: the update is the step's
    start = None if single else [b.detach().clone() for b in buffers]
    delta = None if single else [torch.zeros_like(b) for b in buffers]
    if any(isinstance(a, (list, tuple)) for a in archs):
        torch.manual_seed(derive_seed(seeds[0], 0xA77))  # drop-path in the trial forwards: no hidden state
        archs = choose_candidates(net, archs, batches[0], device=device, amp=amp, choose=choose)
    for (x, y), seed in zip(batches, seeds):
        if not single:
            with torch.no_grad():
                torch._foreach_copy_(buffers, start)
        torch.manual_seed(seed)
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        teacher = None
        # project: .grad before this micro-batch and after its largest subnet (the supernet's shared
        # slices add their gradients straight into .grad, which torch.autograd.grad would not see)
        before = _grads(params) if project else None
        after_largest = None
        for i, arch in enumerate(archs):
            net.set_active(arch)
            with autocast(device, amp):
                out = net(x)
            out = out.float()
            if teacher is None or not distill:
                loss = F.cross_entropy(out, y, label_smoothing=label_smoothing)
            elif distill_fn is not None:
                loss = distill_fn(out, teacher)
            else:
                loss = distill_loss(out, teacher, temperature)
            if teacher is None:
                teacher = out.detach()
            scaled = loss / divisor if i == 0 else loss * (student_weight / divisor)
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
            if project and i == 0:
                after_largest = _grads(params)
            if stats is not None:
                stats.add("largest" if i == 0 else "smallest" if i == 1 else "random", loss.detach())
        if project and len(archs) > 1:
            _project(params, before, after_largest, conflicts)
        if not single:
            with torch.no_grad():
                for d, b, s in zip(delta, buffers, start):
                    d += b - s
    return buffers, start, delta


@torch.no_grad()
def _grads(params) -> list | None:
    """Copies of the parameters' .grad (zeros where None); None while no parameter has one."""
    if all(p.grad is None for p in params):
        return None
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in params]


@torch.no_grad()
def _project(params, before, after_largest, conflicts) -> None:
    """.grad = before + g_l + g_s, with g_s stripped of its component along g_l where the two conflict.

    g_l = after_largest - before (the largest's gradient), g_s = .grad - after_largest (the students')."""
    zero = [torch.zeros_like(p) for p in params] if before is None or after_largest is None else None
    g_l = torch._foreach_sub(after_largest or zero, before or zero)
    now = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
    g_s = torch._foreach_sub(now, after_largest or zero)
    flat_l, flat_s = torch.cat([g.reshape(-1) for g in g_l]), torch.cat([g.reshape(-1) for g in g_s])
    dot, nl, ns = flat_s @ flat_l, flat_l @ flat_l, flat_s @ flat_s  # a few kernels, not three per tensor
    conflict = dot < 0  # a tensor: no host synchronisation (on a GPU the step stays asynchronous)
    if conflicts is not None:
        conflicts.append((dot / (nl * ns).sqrt().clamp_min(1e-30), conflict))
    coef = torch.where(conflict, dot / nl.clamp_min(1e-30), torch.zeros_like(dot))
    # a parameter without .grad had none after the largest either: its g_l is zero
    used = [(p.grad, g) for p, g in zip(params, g_l) if p.grad is not None]
    torch._foreach_sub_([a for a, _ in used], torch._foreach_mul([g for _, g in used], coef))


@torch.no_grad()
def choose_candidates(net, archs: list, batch, *, device: torch.device, amp: str = "off",
                      choose: str = "worst") -> list:
    """`archs` with every list of candidates replaced by the one of highest (worst) or lowest (best)
    cross-entropy on `batch`, in training mode. Running statistics are left as they were."""
    if choose not in ("worst", "best"):
        raise ValueError(f"choose={choose!r}: worst or best")
    buffers = list(net.buffers())
    saved = [b.clone() for b in buffers]
    x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    out = []
    for slot in archs:
        if not isinstance(slot, (list, tuple)):
            out.append(slot)
            continue
        losses = []
        for arch in slot:
            net.set_active(arch)
            with autocast(device, amp):
                losses.append(F.cross_entropy(net(x).float(), y))
        losses = torch.stack(losses)
        out.append(slot[int(losses.argmax() if choose == "worst" else losses.argmin())])
    for b, s in zip(buffers, saved):
        b.copy_(s)
    return out


@torch.no_grad()
def finish_buffers(buffers, start, delta, micro_batches: int) -> None:
    """Buffers = start + mean update (float: running statistics) or + total (integer: counters).
    Nothing to do after a step of one micro-batch on one process (`start` None): its update is kept."""
    if start is None:
        return
    for b, s, d in zip(buffers, start, delta):
        b.copy_(s + d / micro_batches if b.is_floating_point() else s + d)
