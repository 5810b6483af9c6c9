"""supernet: extracted subnets compute what the supernet computes, BN folding is exact, sharing is first-k."""
import random

import pytest
import torch

import search_spaces
import supernet
from search_spaces import ArchError

SPACES = ["nextvit", "efficientformerv2"]
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


@pytest.fixture(scope="module", params=SPACES)
def net(request):
    torch.manual_seed(0)
    space = search_spaces.get_space(request.param)
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


@pytest.mark.parametrize("name", SPACES)
def test_fuse_for_deploy_folds_a_lone_block(name):
    space = search_spaces.get_space(name)
    for spec in space.max_arch().blocks():
        block = supernet.build_block(spec)
        _randomise_bn(block, seed=3)
        x = torch.randn(supernet.block_input_shape(spec, 2))
        with torch.no_grad():
            y = block.eval()(x)
            supernet.fuse_for_deploy(block)
            assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in block.modules()), spec.key
            assert _rel(block(x), y) < 1e-5, spec.key
