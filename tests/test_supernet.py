"""supernet: extracted subnets compute what the supernet computes, BN folding is exact, sharing is first-k."""
import random

import pytest
import torch

import search_spaces
import supernet
from conftest import randomise
from search_spaces import ArchError

RES = 32


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def net(space_name):
    torch.manual_seed(0)
    space = search_spaces.get_space(space_name)
    # Resolution 32 keeps CPU time small; the reference counts and MACs are checked at 224 elsewhere.
    n = supernet.build_supernet(space, num_classes=10, resolution=RES).eval()
    randomise(n)
    return n


def _with_r(arch, r):
    """`arch` with shrink ratio r in every NTB."""
    return search_spaces.Arch(arch.space, [dict(st, r=r) if "r" in st else st for st in arch.stages], arch.resolution)


def _archs(space, res, count, seed):
    rng = random.Random(seed)
    archs = [space.min_arch(), space.max_arch()] + list(space.references().values())
    if space.name == "nextvit":  # r = 0.5 and r = 1 at full width: the supernet's largest branches
        archs += [_with_r(space.reference(n), r) for n in ("nextvit_s", "nextvit_l") for r in (0.5, 1.0)]
    archs += [space.sample(rng) for _ in range(count)]
    return [a.with_resolution(res) for a in archs]


def test_extract_equals_supernet_and_fusion_is_exact(net):
    x = torch.randn(2, 3, RES, RES)
    for arch in _archs(net.space, RES, 20, seed=1):
        with torch.no_grad():
            y = net.set_active(arch)(x)
            model = net.extract(arch)
            assert not any(type(m).__module__.endswith("sharing") for m in model.modules())
            assert arch.params(10) == sum(p.numel() for p in model.parameters()), arch.to_dict()
            y_static = model(x)
            assert _rel(y_static, y) < 1e-5, arch.to_dict()
            supernet.fuse_for_deploy(model)
            assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
            assert _rel(model(x), y) < 1e-5, arch.to_dict()


def _shared_index(net, arch):
    """{static key: (supernet key, index into it)} by the sharing rule, written out by hand: the
    leading corner of every tensor, except the dimensions that index a Next-ViT NTB's concatenated
    channels, which take the first mhsa of the supernet's E-MHSA range and the first mhca of its
    MHCA range (the supernet NTB of stage s holds max_branches(s))."""
    from search_spaces.nextvit import max_branches
    out_dims = {"norm2.weight": 0, "norm2.bias": 0, "norm2.running_mean": 0, "norm2.running_var": 0,
                "mlp.fc1.weight": 1, "mlp.fc2.weight": 0, "mlp.fc2.bias": 0}
    in_dims = {"nextvit.ncb": {"patch_embed.conv.weight": 1},
               "nextvit.head": {"norm.weight": 0, "norm.bias": 0, "norm.running_mean": 0, "norm.running_var": 0,
                                "fc.weight": 1}}
    model_state = net.extract(arch).state_dict()
    layout = net.space.layout(arch, 10)
    where, prev = {"stem.": ("stem.", None)}, None  # static prefix -> (supernet prefix, input branches)
    for s, st in enumerate(layout.stages):
        for j, placed in enumerate(st.blocks):
            where[f"stages.{s}.blocks.{j}."] = (f"stages.{s}.blocks.{placed.pos}.", prev)
            prev = None
            if placed.spec.kind == "nextvit.ntb":
                prev = ((placed.spec["mhsa"], placed.spec["out"] - placed.spec["mhsa"]), max_branches(s))
    where["head."] = ("head.", prev)
    out = {}
    for k, v in model_state.items():
        prefix = next(p for p in where if k.startswith(p))
        src_prefix, in_br = where[prefix]
        name = k[len(prefix):]
        index = [torch.arange(n) for n in v.shape]
        spec = layout.head.spec if prefix == "head." else layout.stem.spec
        if prefix.startswith("stages"):
            s, j = int(prefix.split(".")[1]), int(prefix.split(".")[3])
            spec = layout.stages[s].blocks[j].spec
        if spec.kind == "nextvit.ntb" and name in out_dims:
            (mhsa, mhca), (held_mhsa, _) = (spec["mhsa"], spec["out"] - spec["mhsa"]), max_branches(s)
            index[out_dims[name]] = torch.cat([torch.arange(mhsa), held_mhsa + torch.arange(mhca)])
        if in_br is not None and name in in_dims.get(spec.kind, {}):
            (mhsa, mhca), (held_mhsa, _) = in_br
            index[in_dims[spec.kind][name]] = torch.cat([torch.arange(mhsa), held_mhsa + torch.arange(mhca)])
        out[k] = (src_prefix + name, index)
    return model_state, out


def _take(t, index):
    for d, i in enumerate(index):
        t = t.index_select(d, i)
    return t


def test_extracted_weights_follow_the_sharing_rule(net):
    space = net.space
    archs = [space.min_arch(), space.sample(random.Random(5))]
    if space.name == "nextvit":  # NTBs narrower than the supernet's at r = 0.75 (both branches cut)
        d = space.reference("nextvit_s").to_dict()
        d["stages"][2].update(ntb_width=448, ncb_width=320)
        d["stages"][3].update(ntb_width=896)
        archs.append(search_spaces.Arch.from_dict(d))
    shared = net.state_dict()
    for arch in archs:
        arch = arch.with_resolution(RES)
        if space.name != "nextvit":
            model_state = net.extract(arch).state_dict()
            layout = net.space.layout(arch, 10)
            index = {}
            for k, v in model_state.items():
                src = k
                if k.startswith("stages."):
                    parts = k.split(".")
                    if parts[2] == "blocks":
                        parts[3] = str(layout.stages[int(parts[1])].blocks[int(parts[3])].pos)
                    src = ".".join(parts)
                index[k] = (src, [torch.arange(n) for n in v.shape])
        else:
            model_state, index = _shared_index(net, arch)
        for k, v in model_state.items():
            if "attention_biases" in k or not v.dim():
                continue
            src, idx = index[k]
            assert torch.equal(v, _take(shared[src], idx)), (arch.to_dict(), k)


def test_an_ntb_channel_means_the_same_in_every_subnet(net):
    """E-MHSA channel c and MHCA channel c of an NTB sit at the same supernet place whatever r and
    the width: the concatenation-reading tensors of r = 0.5 and r = 0.75 subnets agree channel by
    channel (a plain first-k rule would hand MHCA channel 0 of one the E-MHSA channel 256 of the other)."""
    if net.space.name != "nextvit":
        pytest.skip("no concatenated branches in this family")
    space = net.space
    a = _with_r(space.reference("nextvit_s"), 0.5).with_resolution(RES)
    b = space.reference("nextvit_s").with_resolution(RES)
    d = b.to_dict()
    d["stages"][3]["ntb_width"] = 768
    c = search_spaces.Arch.from_dict(d)  # stage-4 NTB 768 wide, r = 0.75: (576, 192)
    sa, sb, sc = (net.extract(x).state_dict() for x in (a, b, c))
    key = "stages.3.blocks.2.norm2.weight"  # stage 4's NTB: (512, 512) in a, (768, 256) in b
    assert torch.equal(sa[key][:512], sb[key][:512])  # E-MHSA channels 0..511
    assert torch.equal(sa[key][512:512 + 256], sb[key][768:])  # MHCA channels 0..255
    assert torch.equal(sb[key][:576], sc[key][:576]) and torch.equal(sb[key][768:768 + 192], sc[key][576:])
    fc_a, fc_b = sa["head.fc.weight"], sb["head.fc.weight"]
    assert torch.equal(fc_a[:, 512:512 + 256], fc_b[:, 768:])
    assert not torch.equal(fc_a[:, 512:768], fc_b[:, 512:768])  # the first-k reading would equate these


def test_subnet_gradients_reach_only_its_slice_of_the_shared_tensors(net):
    arch = net.space.min_arch().with_resolution(RES)
    net.zero_grad(set_to_none=True)
    net.train()
    try:
        net.set_active(arch)(torch.randn(4, 3, RES, RES)).logsumexp(-1).sum().backward()
    finally:
        net.eval()
    w = net.head.fc.weight
    spec = arch.layout(10).head.spec
    if net.space.name == "nextvit":  # the head reads the last NTB's two branch ranges
        ntb = arch.layout(10).stages[3].blocks[-1].spec
        mhsa, mhca = ntb["mhsa"], ntb["out"] - ntb["mhsa"]
        cols = torch.zeros(w.shape[1], dtype=torch.bool)
        cols[:mhsa] = cols[1024:1024 + mhca] = True
    else:
        cols = torch.arange(w.shape[1]) < spec["in"]
    assert w.grad is not None and (w.grad[:, cols].abs().sum(0) > 0).all()
    assert w.grad[:, ~cols].abs().sum() == 0
    n_with_grad = sum(p.grad is not None for p in net.parameters())
    assert 0 < n_with_grad < len(list(net.parameters()))
    net.zero_grad(set_to_none=True)


def _sandwich(net, archs, x, y, *, reference: bool, train: bool, amp: bool = False, backward: bool = True):
    """One sandwich of `archs` on (x, y) from the current weights: (losses, the gradients accumulated
    over the subnets, the buffers after it), through `_SharedSlices` or, as `reference`, through plain
    differentiable slicing, handed to the kernels as contiguous copies. Contiguous, because that is
    the layout `_SharedSlices` (and an extracted static model) gives them: a strided view makes some
    kernels choose another summation order (oneDNN on Intel Xeons; torch's mm backward transposes
    its product for it), and then the comparison measures the kernels, not the sharing."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.train(train)
    net.zero_grad(set_to_none=True)
    if reference:
        net._subnet_tensors = lambda device_type, steps=None: [
            t.contiguous() if t.requires_grad else t for t in net._plain_tensors(device_type, steps)]
    try:
        losses = []
        for arch in archs:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                out = net.set_active(arch.with_resolution(RES))(x)
            loss = torch.nn.functional.cross_entropy(out.float(), y)
            if backward:
                loss.backward()
            losses.append(loss.item())
        return (losses, [None if p.grad is None else p.grad.clone() for p in net.parameters()],
                [b.clone() for b in net.buffers()])
    finally:
        if reference:
            del net._subnet_tensors
        net.eval()
        net.load_state_dict(state)
        net.zero_grad(set_to_none=True)


@pytest.mark.parametrize("amp,threads", [(False, 1), (False, 2), (True, 1)])
def test_shared_slices_train_exactly_like_plain_slicing(net, amp, threads):
    """`_SharedSlices` writes gradients into .grad itself and pre-casts conv weights for autocast:
    losses, gradients (accumulated over a sandwich of subnets) and BN statistics must equal those of
    plain autograd slicing, with one thread and with several (issue 24).

    One thread: both sides run the same kernels on the same layouts in the same order, and adding a
    gradient into a zero-initialised corner is exact, so nothing may differ: bit-equal, training mode,
    bf16 autocast too. (Seen so: on AMD EPYC, torch 2.13, and on an Intel Xeon, torch 2.11, both
    bit-equal with 1 and 2 threads; with strided views as the reference, the Xeon's 2 threads differ.)

    Two threads: a kernel may split a reduction differently between the two sides (by the memory
    alignment of its operands, say), so float32 sums of K terms may differ by about sqrt(K)*eps of
    their terms' size, and what a network does with that is measured, not guessed:
    - gradients are compared with BatchNorm in eval mode (the affine map of its running statistics;
      the sharing is the same in both modes). There float32 gives each tensor's gradient to within
      1.5e-6 of its largest entry (median 4e-7; against float64, Next-ViT's sandwich on AMD EPYC),
      about sqrt(K)*eps for K ~ 1e3-1e4: two correct results differ by at most twice that, and the
      tolerance, 2e-5 of each tensor's largest entry, allows 6x more. A wrong slice or a lost
      channel moves the gradients it touches by O(their size) (checked by mutating _SharedSlices:
      rolling one tensor's channels, zeroing one channel's gradient; both fail this test).
    - training-mode gradients are not compared at two threads: at batch 4 and 1x1 last-stage maps,
      BatchNorm's batch statistics make them ill-conditioned (float32 vs float64: 1.5e-3 of the
      largest gradient, and no digit at all for tensors whose exact gradient is 0, such as a bias
      before a BatchNorm), which is what failed on Intel (issue 24). The training-mode forward
      (losses, BN running statistics of the same batches) is well-conditioned and is compared.
    """
    space = net.space
    archs = [space.min_arch(), space.max_arch(), space.sample(random.Random(3))]
    x, y = torch.randn(4, 3, RES, RES), torch.randint(0, 10, (4,))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if threads == 1:
            (l0, g0, b0), (l1, g1, b1) = (_sandwich(net, archs, x, y, reference=r, train=True, amp=amp)
                                          for r in (True, False))
            assert l0 == l1
            assert [g is None for g in g0] == [g is None for g in g1]
            assert sum(g is not None for g in g0) > len(g0) // 2
            assert all(a is None or torch.equal(a, b) for a, b in zip(g0, g1))
            assert all(torch.equal(a, b) for a, b in zip(b0, b1))  # BN running statistics and counters
            return
        (l0, g0, _), (l1, g1, _) = (_sandwich(net, archs, x, y, reference=r, train=False) for r in (True, False))
        assert l0 == pytest.approx(l1, rel=1e-5)
        assert [g is None for g in g0] == [g is None for g in g1]
        assert sum(g is not None for g in g0) > len(g0) // 2
        names = [n for n, _ in net.named_parameters()]
        for name, a, b in zip(names, g0, g1):
            if a is not None:
                assert (a - b).abs().max() <= 2e-5 * a.abs().max(), name
        # training mode, forward only: the losses and BN statistics of the same batches
        (l0, _, b0), (l1, _, b1) = (_sandwich(net, archs, x, y, reference=r, train=True, backward=False)
                                    for r in (True, False))
        assert l0 == pytest.approx(l1, rel=1e-5)
        for a, b in zip(b0, b1):
            assert torch.allclose(a.double(), b.double(), rtol=1e-5, atol=1e-6), (a, b)
    finally:
        torch.set_num_threads(before)


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
    state = {k: v.clone() for k, v in net.state_dict().items()}
    if net.space.name == "nextvit":  # a BN over an NTB's two branch ranges: a copy, written back
        ntb = arch.layout(10).stages[2].blocks[-1]
        branch_bn = net.stages[2].blocks[ntb.pos].norm2
        mhsa, mhca = ntb.spec["mhsa"], ntb.spec["out"] - ntb.spec["mhsa"]
        used = torch.zeros(branch_bn.num_features, dtype=torch.bool)
        used[:mhsa] = used[512:512 + mhca] = True
        branch_before = branch_bn.running_var.clone()
    net.train()
    try:
        with torch.no_grad():
            net.set_active(arch)(torch.randn(4, 3, RES, RES))
    finally:
        net.eval()
    try:
        assert not torch.equal(before, bn.running_mean)
        if net.space.name == "nextvit":
            changed = branch_bn.running_var != branch_before
            assert changed[used].all() and not changed[~used].any()
    finally:
        net.load_state_dict(state)


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
    # at another input size the bias is resampled as the official detection code does (issue 13;
    # tests/test_backbones.py checks the values), no longer refused
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 10)


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
        randomise(block, seed=3)
        x = torch.randn(supernet.block_input_shape(spec, 2))
        with torch.no_grad():
            y = block.eval()(x)
            supernet.fuse_for_deploy(block)
            assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in block.modules()), spec.key
            assert _rel(block(x), y) < 1e-5, spec.key
