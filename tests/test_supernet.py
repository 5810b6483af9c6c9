"""supernet: extracted subnets compute what the supernet computes, BN folding is exact, sharing is first-k."""
import random

import pytest
import torch

import search_spaces
import supernet
from search_spaces import ArchError

RES = 32


def _randomise_bn(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
        if hasattr(m, "gamma"):  # LayerScale: make its branch matter
            m.gamma.data.fill_(0.5)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def net(space_name):
    torch.manual_seed(0)
    space = search_spaces.get_space(space_name)
    # Resolution 32 keeps CPU time small; the reference counts and MACs are checked at 224 elsewhere.
    n = supernet.build_supernet(space, num_classes=10, resolution=RES).eval()
    _randomise_bn(n)
    return n


def _archs(space, res, count, seed):
    rng = random.Random(seed)
    archs = [space.min_arch(), space.max_arch()] + list(space.references().values())
    archs += [space.sample(rng) for _ in range(count)]
    return [a.with_resolution(res) for a in archs]


def test_extract_equals_supernet_and_fusion_is_exact(net):
    x = torch.randn(2, 3, RES, RES)
    for arch in _archs(net.space, RES, 20, seed=1):
        with torch.no_grad():
            y = net.set_active(arch)(x)
            model = net.extract(arch)
            assert not any(type(m).__module__.endswith("sharing") for m in model.modules())
            y_static = model(x)
            assert _rel(y_static, y) < 1e-5, arch.to_dict()
            supernet.fuse_for_deploy(model)
            assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
            assert _rel(model(x), y) < 1e-5, arch.to_dict()


def test_extracted_weights_are_the_first_k_slice(net):
    arch = net.space.min_arch().with_resolution(RES)
    model = net.extract(arch)
    shared = net.state_dict()
    layout = net.space.layout(arch, 10)
    for s, st in enumerate(layout.stages):
        for j, placed in enumerate(st.blocks):
            prefix, src = f"stages.{s}.blocks.{j}.", f"stages.{s}.blocks.{placed.pos}."
            for k, v in model.state_dict().items():
                if k.startswith(prefix) and "attention_biases" not in k and v.dim():
                    big = shared[src + k[len(prefix):]]
                    assert torch.equal(v, big[tuple(slice(0, n) for n in v.shape)]), k


def test_subnet_gradients_reach_only_its_slice_of_the_shared_tensors(net):
    arch = net.space.min_arch().with_resolution(RES)
    net.zero_grad(set_to_none=True)
    net.train()
    try:
        net.set_active(arch)(torch.randn(4, 3, RES, RES)).logsumexp(-1).sum().backward()
    finally:
        net.eval()
    w = net.head.fc.weight
    k = arch.layout(10).head.spec["in"]
    assert w.grad is not None and w.grad[:, :k].abs().sum() > 0
    assert w.grad[:, k:].abs().sum() == 0
    n_with_grad = sum(p.grad is not None for p in net.parameters())
    assert 0 < n_with_grad < len(list(net.parameters()))
    net.zero_grad(set_to_none=True)


@pytest.mark.parametrize("amp", [False, True])
def test_shared_slices_train_exactly_like_plain_slicing(net, amp):
    """`_SharedSlices` writes gradients into .grad itself and pre-casts conv weights for autocast:
    losses, gradients (accumulated over a sandwich of subnets) and BN statistics must equal those of
    plain autograd slicing."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    space, params = net.space, list(net.parameters())
    archs = [space.min_arch(), space.max_arch(), space.sample(random.Random(3))]
    x, y = torch.randn(4, 3, RES, RES), torch.randint(0, 10, (4,))
    runs = []
    net.train()
    try:
        for reference in (True, False):
            net.load_state_dict(state)
            net.zero_grad(set_to_none=True)
            if reference:
                net._subnet_tensors = net._plain_tensors
            losses = []
            for arch in archs:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    out = net.set_active(arch.with_resolution(RES))(x)
                loss = torch.nn.functional.cross_entropy(out.float(), y)
                loss.backward()
                losses.append(loss.item())
            if reference:
                del net._subnet_tensors
            runs.append((losses, [None if p.grad is None else p.grad.clone() for p in params],
                         [b.clone() for b in net.buffers()]))
    finally:
        net.eval()
        net.load_state_dict(state)
        net.zero_grad(set_to_none=True)
    (l0, g0, b0), (l1, g1, b1) = runs
    # Not bit-equal: `_SharedSlices` hands conv a contiguous copy where plain slicing hands it a
    # strided view, and oneDNN picks another kernel for each on some CPUs (Intel Xeon: losses
    # differ by 1e-7 relative). A wrong slice or a lost gradient moves them by 1e-2 or more.
    assert l0 == pytest.approx(l1, rel=1e-6, abs=1e-7)
    assert [g is None for g in g0] == [g is None for g in g1]
    assert sum(g is not None for g in g0) > len(g0) // 2
    for a, b in zip(g0, g1):
        if a is not None:
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-7 * a.abs().max().item())
    for a, b in zip(b0, b1):  # BN running statistics (and counters) of the same batches
        assert torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-6), (a, b)


def test_shared_slices_follow_replaced_and_frozen_weights(net):
    """Cached first-k views are dropped when the shared tensors are replaced (dtype change, assign),
    and a frozen shared tensor gets no gradient."""
    arch = net.space.min_arch().with_resolution(RES)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, RES, RES)
    try:
        net.train()
        net.set_active(arch)(x)  # fills the caches
        net.double()
        y = net(x.double())  # would fail on a stale float32 view
        assert y.dtype == torch.float64
        net.float().eval()
        with torch.no_grad():
            before = net(x)
        bumped = {k: (v * 1.5 if v.is_floating_point() else v) for k, v in state.items()}
        net.load_state_dict(bumped, assign=True)
        net.eval()
        with torch.no_grad():
            after = net(x)
            assert _rel(after, before) > 1e-3
            assert _rel(after, net.extract(arch)(x)) < 1e-5
        net.train()
        net.zero_grad(set_to_none=True)
        net.head.fc.weight.requires_grad_(False)
        net(x).logsumexp(-1).sum().backward()
        assert net.head.fc.weight.grad is None and net.head.fc.bias.grad is not None
    finally:
        net.head.fc.weight.requires_grad_(True)
        net.eval()
        net.load_state_dict(state)
        net.zero_grad(set_to_none=True)


def test_training_mode_updates_shared_bn_statistics(net):
    arch = net.space.min_arch().with_resolution(RES)
    bn = net.stem[0].norm if net.space.name == "nextvit" else net.stem.conv1.bn
    before = bn.running_mean.clone()
    net.train()
    try:
        with torch.no_grad():
            net.set_active(arch)(torch.randn(4, 3, RES, RES))
    finally:
        net.eval()
    assert not torch.equal(before, bn.running_mean)


def test_set_active_rejects_an_arch_of_another_space(net):
    other = search_spaces.get_space("nextvit" if net.space.name != "nextvit" else "efficientformerv2")
    with pytest.raises(ArchError, match="space"):
        net.set_active(other.max_arch())


def test_efficientformerv2_attention_biases_follow_the_resolution():
    torch.manual_seed(0)
    space = search_spaces.get_space("efficientformerv2")
    net = supernet.build_supernet(space, num_classes=10, resolution=64).eval()
    for p in net.parameters():
        if p.dim() == 2 and p.shape[0] == 8:  # attention-bias tables: make them non-trivial
            p.data.normal_()
    arch = space.reference("efficientformerv2_s0").with_resolution(128)
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        y = net.set_active(arch)(x)
        model = net.extract(arch)
        assert _rel(model(x), y) < 1e-5
    tables = [m.attention_biases for m in model.modules() if hasattr(m, "attention_biases")]
    assert tables and tables[-1].shape == (8, (128 // 32) ** 2)
    with pytest.raises(ValueError, match="built for 8x8"):
        model(torch.randn(1, 3, 224, 224))


def test_build_model_and_block_are_plain_modules():
    space = search_spaces.get_space("nextvit")
    spec = space.reference("nextvit_s").blocks()[5]
    block = supernet.build_block(spec).eval()
    out = block(torch.randn(supernet.block_input_shape(spec, 2)))
    assert out.shape[0] == 2
    with pytest.raises(ValueError, match="unknown block kind"):
        supernet.build_block(search_spaces.BlockSpec.make("nextvit.resblock", hw=7))


def test_fuse_for_deploy_folds_a_lone_block(space_name):
    space = search_spaces.get_space(space_name)
    for spec in space.max_arch().blocks():
        block = supernet.build_block(spec)
        _randomise_bn(block, seed=3)
        x = torch.randn(supernet.block_input_shape(spec, 2))
        with torch.no_grad():
            y = block.eval()(x)
            supernet.fuse_for_deploy(block)
            assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in block.modules()), spec.key
            assert _rel(block(x), y) < 1e-5, spec.key
