"""Supernet training end to end on CPU: learning, BN recalibration, resume after a kill, torchrun.

Kept small for CI: digits at 32 px, a few steps per epoch (each step trains EfficientFormerV2-L,
the space's largest subnet, on CPU).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import search_spaces
from hwnas.checkpoint import CheckpointError, load_supernet
from hwnas.evaluate import SubnetEvaluator
from hwnas.train import train_supernet

ROOT = Path(__file__).resolve().parents[1]


def compose(*overrides):
    from hwnas.config import compose as _compose
    return _compose("train", overrides)


# A short run: 2 epochs x 8 steps of 32 digits; per-epoch val of largest and smallest.
LEARN = ["space=efficientformerv2", "data=digits", "data.limit_train=256", "train.epochs=2",
         "train.batch_size=32", "train.num_random=0", "train.warmup_epochs=0.2", "train.eval_calib_batches=4",
         "train.progress=false"]
# A tiny run for resume and torchrun equivalence (every random source exercised: drop-path,
# random subnets, shuffling, the device-side crops and flips of stored images).
TINY = ["space=efficientformerv2", "data=digits", "data.limit_train=96", "data.crop_padding=2", "data.hflip=0.5",
        "train.batch_size=8", "train.max_steps_per_epoch=2", "train.num_random=1", "train.drop_path=0.1",
        "train.eval_calib_batches=0", "train.progress=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("learn")
    path = train_supernet(compose(*LEARN), out)
    return path, out


def test_two_epochs_on_digits_learn_largest_and_smallest(trained):
    path, out = trained
    net, meta = load_supernet(path, space="efficientformerv2")
    assert meta["epoch"] == 2 and net.resolution == 32 and net.num_classes == 10
    last = meta["history"][-1]
    # chance is 10 %: both ends of the sandwich learned, the smallest through distillation alone
    assert last["val_top1_largest"] > 60, meta["history"]
    assert last["val_top1_smallest"] > 50, meta["history"]
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("epoch,step,lr,loss_largest,loss_smallest")


def test_bn_recalibration_changes_statistics_and_beats_shared_ones(trained):
    path, _ = trained
    ev = SubnetEvaluator.from_checkpoint(path, {"name": "digits"}, calib_batches=8, batch_size=64)
    space = search_spaces.get_space("efficientformerv2")
    arch = space.min_arch()  # deployment resolution 224: evaluated at the data's 32 px
    before = {k: v.clone() for k, v in ev.net.state_dict().items()}
    shared = ev.subnet(arch, recalibrate=False).state_dict()
    own = ev.subnet(arch).state_dict()
    assert not torch.allclose(shared["stages.0.blocks.0.mlp.fc1.bn.running_mean"],
                              own["stages.0.blocks.0.mlp.fc1.bn.running_mean"])
    acc_shared = ev.evaluate(arch, recalibrate=False)
    acc = ev.evaluate(arch)
    assert acc > acc_shared, (acc, acc_shared)
    assert all(torch.equal(before[k], v) for k, v in ev.net.state_dict().items())  # supernet untouched
    assert ev.cache == {arch.with_resolution(32).id: acc}


def _kill_after_first_checkpoint(cmd, out: Path, env) -> None:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out / "train_state.pt"
    deadline = time.time() + 600
    while not state.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_killed_run_resumes_to_the_identical_result(tmp_path):
    overrides = TINY + ["train.epochs=2"]
    killed = tmp_path / "killed"
    # one CPU thread in the killed process and in this one: bit-equality holds only at equal thread counts
    # (kernels split their sums by thread), and this process's count is whatever earlier tests left
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "hwnas.train", *overrides, f"hydra.run.dir={killed}"]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _resume_and_compare(cmd, killed, env, overrides, tmp_path)
    finally:
        torch.set_num_threads(before)


def _resume_and_compare(cmd, killed: Path, env, overrides, tmp_path) -> None:
    _kill_after_first_checkpoint(cmd, killed, env)
    state = torch.load(killed / "train_state.pt", weights_only=True)
    assert state["epoch"] < 2, "the run finished before it could be killed"
    # what a kill in the middle of a checkpoint write leaves: a temporary of a process now gone
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    half = killed / f".train_state.{dead}-0.tmp.pt"
    half.write_bytes(b"half a checkpoint")
    resumed = train_supernet(compose(*overrides), killed)  # the same command again: resumes
    assert not half.exists() and not list(killed.glob(".*.tmp*"))  # removed at the start of the rerun
    straight = train_supernet(compose(*overrides), tmp_path / "straight")
    a = torch.load(resumed, weights_only=True)
    b = torch.load(straight, weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    sa = torch.load(killed / "train_state.pt", weights_only=True)["optimizer"]["state"]
    sb = torch.load(tmp_path / "straight" / "train_state.pt", weights_only=True)["optimizer"]["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sb)
    # a different run on that folder is refused instead of silently continued
    with pytest.raises(CheckpointError, match=r"seed=0 \(this run: 1\).*pass the first run's values \(seed=0\)"):
        train_supernet(compose(*overrides, "seed=1"), killed)


def test_torchrun_two_processes_equal_one_process_with_accumulation(tmp_path):
    """2 processes x batch 8 (gloo) == 1 process x batch 8 x accum_steps 2: same micro-batches,
    subnets and drop-path masks; gradients summed, BN statistics averaged alike. SGD: its update is
    linear in the gradient, so float summation order stays at rounding level (AdamW normalises
    each gradient, which blows rounding noise on near-zero gradients up to a full step)."""
    overrides = TINY + ["train.epochs=1", "train.optimizer=sgd", "train.lr=0.05"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    ddp = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "hwnas.train", *overrides, f"hydra.run.dir={ddp}"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    single = train_supernet(compose(*overrides, "train.accum_steps=2"), tmp_path / "single")
    a = torch.load(ddp / "supernet.pt", weights_only=True)
    b = torch.load(single, weights_only=True)
    assert a["meta"]["config"]["global_batch"] == b["meta"]["config"]["global_batch"] == 16
    for k, v in b["state_dict"].items():
        w = a["state_dict"][k]
        if v.is_floating_point():
            torch.testing.assert_close(w, v, rtol=1e-4, atol=2e-5, msg=k)  # float order (1 vs 2 threads)
        else:
            assert torch.equal(w, v), k


def test_config_typo_fails_at_start_naming_the_key(tmp_path):
    with pytest.raises(ValueError, match="epoch"):
        train_supernet({"train": {"epoch": 2}}, tmp_path)


def test_time_limit_stops_between_epochs_and_the_rerun_continues(tmp_path):
    run = TINY + ["train.epochs=2", "train.num_random=0", "train.max_steps_per_epoch=1"]
    path = train_supernet(compose(*run, "train.time_limit_s=0.001"), tmp_path)
    _, meta = load_supernet(path)
    assert meta["epoch"] == 1  # the first epoch always runs; the next would end past the limit
    path = train_supernet(compose(*run), tmp_path)  # the same run without the limit: continues
    _, meta = load_supernet(path)
    assert meta["epoch"] == 2 and [h["epoch"] for h in meta["history"]] == [1, 2]


def test_alpha_divergence_is_kl_at_alpha_one_and_picks_the_larger_side():
    from hwnas.training.sandwich import alpha_divergence_loss, distill_loss
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 10, requires_grad=True), 3 * torch.randn(8, 10)
    kl = distill_loss(student, teacher)
    (g_kl,) = torch.autograd.grad(kl, student)
    a1 = alpha_divergence_loss(student, teacher, alpha_min=1.0, alpha_max=1.0)
    (g_a1,) = torch.autograd.grad(a1, student)
    torch.testing.assert_close(a1, kl, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g_a1, g_kl, rtol=1e-5, atol=1e-7)
    # a = -1: D = sum_i q_i ((q_i/p_i) - 1) / 2 (clipped weights), per sample; the loss takes the larger side
    p, q = torch.softmax(teacher, -1), torch.softmax(student.detach(), -1)
    d_neg = (q * ((q / p).clamp(max=5.0) - 1)).sum(-1) / 2
    d_kl = (p * (p / q).log()).sum(-1)
    want = torch.maximum(d_neg, d_kl).mean()
    torch.testing.assert_close(alpha_divergence_loss(student, teacher).detach(), want, rtol=1e-5, atol=1e-6)
    assert bool((d_neg > d_kl).any()) and bool((d_neg < d_kl).any())  # both sides chosen somewhere
    # a student whose probability underflows to 0 where the teacher's does not (it diverged to NaN on an
    # H200 when computed from p / q): value and gradients stay finite, the gradient is still KL's
    for s, t in (([200.0, 0.0, -200.0], [0.0, 0.0, 0.0]), ([0.0, 0.0, 0.0], [200.0, 0.0, -200.0])):
        s = torch.tensor([s], requires_grad=True)
        loss = alpha_divergence_loss(s, torch.tensor([t]))
        (g,) = torch.autograd.grad(loss, s)
        assert torch.isfinite(loss) and torch.isfinite(g).all(), (loss, g)


def test_attentive_sampling_trains_the_worst_candidate_and_leaves_bn_statistics():
    import supernet
    from hwnas.training.sandwich import choose_candidates, sample_archs
    space = search_spaces.get_space("efficientformerv2")
    torch.manual_seed(0)
    net = supernet.build_supernet(space, num_classes=10, resolution=32).train()
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 10, (2,))
    archs = sample_archs(space, seed=0, step=0, num_random=1, resolution=32, candidates=3)
    assert archs[:2] == [space.max_arch().with_resolution(32), space.min_arch().with_resolution(32)]
    cands = archs[2]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    losses = []
    for a in cands:
        net.set_active(a)
        with torch.no_grad():
            losses.append(float(torch.nn.functional.cross_entropy(net(x), y)))
        net.load_state_dict(before)
    worst = choose_candidates(net, archs, (x, y), device=torch.device("cpu"), choose="worst")
    best = choose_candidates(net, archs, (x, y), device=torch.device("cpu"), choose="best")
    assert worst[:2] == archs[:2] and worst[2] == cands[losses.index(max(losses))]
    assert best[2] == cands[losses.index(min(losses))] and worst[2] != best[2]
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_grad_projection_removes_only_the_students_part_that_opposes_the_largest():
    """NASViT's projection: g_l + g_s, where g_s loses its component along g_l when g_s . g_l < 0.

    Reference gradients come from plain sandwich steps (the largest alone; all subnets), so the test
    checks the projected step against the formula, not against its own code. A student weight of
    -1 flips g_s: of the two signs exactly one conflicts, so both branches are taken."""
    import supernet
    from hwnas.training.sandwich import sample_archs, sandwich_step
    space = search_spaces.get_space("efficientformerv2")
    torch.manual_seed(0)
    net = supernet.build_supernet(space, num_classes=10, resolution=32).train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    archs = sample_archs(space, seed=0, step=0, num_random=1, resolution=32)
    start = {k: v.clone() for k, v in net.state_dict().items()}

    def grads(archs, **kw):
        net.load_state_dict(start)
        net.zero_grad(set_to_none=True)
        sandwich_step(net, archs, [(x, y)], seeds=[0], divisor=1, device=torch.device("cpu"), **kw)
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in net.parameters()]

    def dot(a, b):
        return sum(float((u.double() * v.double()).sum()) for u, v in zip(a, b))

    g_l = grads(archs[:1])
    g_s = [a - b for a, b in zip(grads(archs), g_l)]
    assert dot(g_s, g_l) != 0 and dot(g_s, g_s) > 1e-4 * dot(g_l, g_l)  # the students do contribute
    seen = set()
    for w in (1.0, -1.0):
        s = [w * t for t in g_s]
        d = dot(s, g_l)
        coef = d / dot(g_l, g_l) if d < 0 else 0.0
        want = [a + b - coef * a for a, b in zip(g_l, s)]
        conflicts = []
        got = grads(archs, project=True, student_weight=w, conflicts=conflicts)
        scale = max(float(t.abs().max()) for t in want)
        assert max(float((a - b).abs().max()) for a, b in zip(got, want)) < 1e-4 * scale
        cos, hit = conflicts[0]
        assert bool(hit) == (d < 0) and abs(float(cos) - d / (dot(s, s) * dot(g_l, g_l)) ** 0.5) < 1e-3
        # what is left of the students' gradient never opposes the largest's
        assert dot([a - b for a, b in zip(got, g_l)], g_l) >= -1e-6 * dot(g_l, g_l)
        seen.add(d < 0)
    assert seen == {True, False}


def test_depth_slots_train_the_max_widths_at_a_random_depth(tmp_path, monkeypatch):
    """train.depth_slots: the first random slots of the sandwich are the max arch's widths with a random depth
    (`sample_depth`), the others stay uniform; bad settings are one clear error before anything runs."""
    import hwnas.training.trainer as T
    from hwnas.errors import ConfigError
    from hwnas.training.sandwich import sample_archs
    from search_spaces import SearchSpace
    space = search_spaces.get_space("efficientformerv2")
    widths = [st["width"] for st in space.max_arch().stages]
    steps = [sample_archs(space, seed=0, step=k, num_random=2, resolution=32, depth_slots=1) for k in range(8)]
    for archs in steps:
        assert archs[:2] == sample_archs(space, seed=0, step=0, num_random=0, resolution=32)
        assert [st["width"] for st in archs[2].stages] == widths
    assert len({a[2] for a in steps}) > 1  # the depth is drawn anew each step
    assert any([st["width"] for st in a[3].stages] != widths for a in steps)  # the other slot is uniform
    assert any([st["width"] for st in a[2].stages] != widths
               for a in (sample_archs(space, seed=0, step=k, num_random=1, resolution=32) for k in range(8)))
    seen = []
    real = T.sample_archs
    monkeypatch.setattr(T, "sample_archs", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    train_supernet(compose(*TINY, "train.epochs=1", "train.max_steps_per_epoch=1", "train.depth_slots=1"),
                   tmp_path / "run")
    assert seen and all([st["width"] for st in archs[2].stages] == widths for archs in seen)
    with pytest.raises(ConfigError, match=r"train.depth_slots=2 > train.num_random=1"):
        train_supernet(compose(*TINY, "train.depth_slots=2"), tmp_path / "bad")
    monkeypatch.setattr(type(space), "sample_depth", SearchSpace.sample_depth)  # a family without it
    with pytest.raises(ConfigError, match="defines no sample_depth"):
        train_supernet(compose(*TINY, "train.depth_slots=1"), tmp_path / "bad")


def test_consistent_only_trains_only_consistent_subnets(tmp_path, monkeypatch):
    """train.consistent_only: every random subnet and the smallest are structurally consistent archs (the
    trainer passes the option on: its sampled archs are checked), the largest stays the max arch; a family
    without sample_consistent is one clear error before anything runs."""
    import hwnas.training.trainer as T
    from hwnas.errors import ConfigError
    from hwnas.training.sandwich import sample_archs
    from search_spaces import SearchSpace
    space = search_spaces.get_space("nextvit")
    for k in range(6):
        archs = sample_archs(space, seed=0, step=k, num_random=2, resolution=32, consistent_only=True)
        assert archs[0] == space.max_arch().with_resolution(32)
        assert archs[1] == space.min_consistent_arch().with_resolution(32)
        assert all(space.is_consistent(a) for a in archs)
    assert not all(space.is_consistent(a) for k in range(6)
                   for a in sample_archs(space, seed=0, step=k, num_random=2, resolution=32))
    seen = []
    real = T.sample_archs
    monkeypatch.setattr(T, "sample_archs", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    train_supernet(compose(*TINY, "space=nextvit", "train.epochs=1", "train.max_steps_per_epoch=1",
                           "train.batch_size=4", "train.consistent_only=true"), tmp_path / "run")
    assert seen and all(space.is_consistent(a.with_resolution(224)) for archs in seen for a in archs)
    # left at its default (null) it is the space's: Next-ViT trains its consistent archs, and its checkpoint
    # says true (what the pairs and the search read); EfficientFormerV2's default is false, and an explicit
    # false on Next-ViT trains every arch (its smallest, min_arch, is not consistent)
    for extra, consistent in (((), True), (("train.consistent_only=false",), False)):
        seen.clear()
        ckpt = train_supernet(compose(*TINY, "space=nextvit", "train.epochs=1", "train.max_steps_per_epoch=1",
                                      "train.batch_size=4", *extra), tmp_path / f"default-{consistent}")
        assert seen and all(space.is_consistent(a.with_resolution(224)) for a in seen[0]) is consistent
        assert load_supernet(ckpt)[1]["config"]["train"]["consistent_only"] is consistent
    # a run begun with false (as every Next-ViT run before this default) is not continued with true unasked
    with pytest.raises(CheckpointError, match=r"train.consistent_only=false \(this run: true\).*Next-ViT true.*"
                                              r"\(train.consistent_only=false\) to continue it"):
        train_supernet(compose(*TINY, "space=nextvit", "train.epochs=1", "train.max_steps_per_epoch=1",
                               "train.batch_size=4"), tmp_path / "default-False")
    assert T.resolved_train_config(compose(*TINY).train, search_spaces.get_space("efficientformerv2")).consistent_only \
        is False
    ef = search_spaces.get_space("efficientformerv2")
    monkeypatch.setattr(type(ef), "sample_consistent", SearchSpace.sample_consistent)
    with pytest.raises(ConfigError, match="defines no sample_consistent"):
        train_supernet(compose(*TINY, "train.consistent_only=true"), tmp_path / "bad")


def test_macs_strata_train_every_band_of_sizes(tmp_path, monkeypatch):
    """train.macs_strata: of m random slots, slot i comes from the i-th of m equal bands of log MACs between
    the smallest and the largest arch (uniform sampling leaves the small band nearly empty); with depth slots
    only the other slots are banded; the trainer passes the option on (its sampled archs are checked)."""
    import math

    import hwnas.training.trainer as T
    from hwnas.training.sandwich import sample_archs
    space = search_spaces.get_space("efficientformerv2")
    lo, hi = (math.log(a.with_resolution(32).macs()) for a in (space.min_arch(), space.max_arch()))
    mid = (lo + hi) / 2

    def low(arch) -> bool:
        return math.log(arch.macs()) <= mid

    def steps(**kw) -> list:
        return [sample_archs(space, seed=0, step=k, num_random=2, resolution=32, **kw) for k in range(40)]
    banded, uniform = steps(macs_strata=True), steps()
    assert all(a[:2] == u[:2] for a, u in zip(banded, uniform))  # the largest and the smallest stay
    assert sum(low(a[2]) for a in banded) >= 36 and not any(low(a[3]) for a in banded)
    assert sum(low(a[2]) for a in uniform) <= 12  # uniform: the small band is rare
    with_depth = steps(macs_strata=True, depth_slots=1)  # one depth slot; the other slot is the one band
    assert [a[2] for a in with_depth] == [a[2] for a in steps(depth_slots=1)]
    assert any(low(a[3]) for a in with_depth) and any(not low(a[3]) for a in with_depth)
    seen = []
    real = T.sample_archs
    monkeypatch.setattr(T, "sample_archs", lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    train_supernet(compose(*TINY, "train.epochs=1", "train.max_steps_per_epoch=2", "train.num_random=2",
                           "train.macs_strata=true"), tmp_path / "run")
    res = seen[0][0].resolution
    lo, hi = (math.log(a.with_resolution(res).macs()) for a in (space.min_arch(), space.max_arch()))
    mid = (lo + hi) / 2
    assert len(seen) == 2 and all(low(archs[2]) and not low(archs[3]) for archs in seen)


def test_training_says_when_the_attention_has_one_key(tmp_path, caplog):
    """Round 21 of docs/accuracy.md: at 32 px every attention block of both families attends over one key (a
    softmax over one element: no attention at all). The family says how many keys its attention sees at an input
    (checked against the keys the blocks really get), and a training at one key says so; at 64 px (4 keys) it
    does not."""
    import logging
    import supernet
    from supernet.nextvit import EfficientAttention
    sys.path.insert(0, str(ROOT / "experiments" / "archive"))
    from nextvit_attention_keys import attention_keys
    nv, ef = supernet.get_family("nextvit"), supernet.get_family("efficientformerv2")
    for res in (32, 64, 128):
        arch = search_spaces.get_space("nextvit", resolution=res).max_arch()
        assert nv.attention_keys(res) == min(r["keys"] for r in attention_keys(arch)) == (res // 32) ** 2
        net = supernet.build_model(search_spaces.get_space("efficientformerv2", resolution=res).max_arch(), 10)
        kv = [m.k_hw[0] * m.k_hw[1] for m in net.modules() if hasattr(m, "k_hw")]
        assert ef.attention_keys(res) == min(kv)
    assert nv.attention_keys((64, 96)) == 6 and all(r["max_weight_spread"] == 0 for r in attention_keys(
        search_spaces.get_space("nextvit", resolution=32).reference("nextvit_s")))
    assert not any(isinstance(m, EfficientAttention) for m in supernet.build_model(
        search_spaces.get_space("efficientformerv2", resolution=32).min_arch(), 10).modules())
    said = {}
    for res in (32, 64):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hwnas.train"):
            train_supernet(compose(*TINY, "space=nextvit", "train.epochs=1", "train.max_steps_per_epoch=1",
                                   f"data.image_size={res}"), tmp_path / str(res))
        said[res] = [r.getMessage() for r in caplog.records if "attention sees one key" in r.getMessage()]
    assert len(said[32]) == 1 and said[32][0].startswith("note: at 32x32 nextvit's attention sees one key"), said
    assert said[64] == []
