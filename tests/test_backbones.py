"""Backbones for detection and segmentation: timm's model API, features-only models, any input size,
their exports, and timm's checkpoint layout out (issue 13)."""
from __future__ import annotations

import copy
import json
import random

import pytest
import torch
import torch.nn.functional as F
import yaml

import search_spaces
import supernet
from conftest import randomise
from search_spaces import Arch, ArchError

NON_SQUARE = (256, 192)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _archs(space, n, seed):
    rng = random.Random(seed)
    return list(space.references().values()) + [space.sample(rng) for _ in range(n)]


# ---- the arch as data --------------------------------------------------------------------------------
def test_an_arch_carries_its_input_size_and_task_and_old_files_read_back_as_before():
    nv = search_spaces.get_space("nextvit")
    s = nv.reference("nextvit_s")
    assert s.id == "f1537d91bf63"  # the id every table and study of 224 px classifiers keys it by
    old = {"space": "nextvit", "resolution": 224, "stages": [dict(st) for st in s.stages]}
    assert Arch.from_dict(old) == s and s.to_dict() == old  # no `task` key unless it is a backbone
    assert Arch.from_dict({k: v for k, v in old.items() if k != "resolution"}) == s
    b = s.with_resolution((640, 480)).with_task("backbone")
    d = b.to_dict()
    assert d["resolution"] == [640, 480] and d["task"] == "backbone" and b.input_size == (640, 480)
    for text in (json.dumps(d), yaml.safe_dump(d)):
        back = Arch.from_dict(yaml.safe_load(text))
        assert back == b and back.to_dict() == d and back.id == b.id
    assert b.id != s.id and b.with_task("classify").with_resolution(224) == s
    assert Arch("nextvit", s.stages, [512, 512]).resolution == 512  # a square pair is one int: one id
    with pytest.raises(ArchError, match="task"):
        Arch.from_dict({**old, "task": "detect"})
    with pytest.raises(ArchError, match="multiples of 32"):
        nv.validate(s.with_resolution((640, 470)))


def test_block_keys_of_square_inputs_are_unchanged_and_a_backbone_has_no_head():
    s = search_spaces.get_space("nextvit").reference("nextvit_s")
    keys = s.block_keys()
    assert keys[0] == "nextvit.stem(hw=224)" and keys[-1] == "nextvit.head(in=1024,classes=1000,hw=7)"
    b = s.with_task("backbone")
    assert b.block_keys() == keys[:-1]
    assert b.params() == s.params() - sum(search_spaces.get_space("nextvit").block_params(x)
                                          for x in s.blocks() if x.kind == "nextvit.head")
    w = s.with_resolution((640, 480)).with_task("backbone")
    assert w.block_keys()[0] == "nextvit.stem(hw=640x480)" and "hw=20x15" in w.block_keys()[-1]
    from hwnas.latency.fingerprint import spec_for_key
    for spec in w.blocks():  # a table key gives back its block
        assert spec_for_key(spec.key).key == spec.key


# ---- timm's model API --------------------------------------------------------------------------------
def test_feature_info_matches_the_intermediates_of_every_reference_and_20_samples(space_name):
    """Channels and strides as feature_info states them (from the layout) against the stage outputs
    a forward produces, at 224x224 and at a non-square size; on meta tensors (shapes only)."""
    space = search_spaces.get_space(space_name)
    for arch in _archs(space, 20, seed=7):
        for size in ((224, 224), NON_SQUARE):
            a = arch.with_resolution(size)
            with torch.device("meta"):
                model = supernet.build_model(a, num_classes=10)
                x = torch.empty(2, 3, *size)
            info = model.feature_info
            final, feats = model.forward_intermediates(x)
            assert [tuple(f.shape[:2]) for f in feats] == [(2, c) for c in info.channels()], a
            assert [size[0] // f.shape[2] for f in feats] == [size[1] // f.shape[3] for f in feats] \
                == info.reduction() == [4, 8, 16, 32], a
            assert all(model.get_submodule(m) is model.stages[i] for i, m in enumerate(info.module_name()))
            assert final.shape == feats[-1].shape and model.num_features == info.channels()[-1]


def test_features_only_returns_the_stages_timm_does(space_name):
    space = search_spaces.get_space(space_name)
    torch.manual_seed(0)
    model = supernet.build_model(space.reference(space.reference_names[0]), num_classes=10).eval()
    randomise(model, attention_biases=True)
    backbone = supernet.build_model(model.arch, features_only=True, out_indices=(1, 2, 3)).eval()
    assert backbone.features_only and backbone.arch.task == "backbone" and not hasattr(backbone.head, "fc")
    missing, unexpected = backbone.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("head.") for k in unexpected)
    x = torch.randn(2, 3, *NON_SQUARE)
    with torch.no_grad():
        feats = backbone(x)
        _, inter = model.forward_intermediates(x, indices=[1, 2, 3])
        last = model.forward_intermediates(x, indices=2, intermediates_only=True)  # the last two
    assert len(feats) == 3 and all(torch.equal(a, b) for a, b in zip(feats, inter))
    assert [f.shape[1] for f in feats] == backbone.feature_info.channels() == model.feature_info.channels([1, 2, 3])
    assert [torch.equal(a, b) for a, b in zip(last, inter[1:])] == [True, True]
    with pytest.raises(supernet.ModelError, match="features-only"):
        backbone.forward_head(feats[-1])
    with pytest.raises(supernet.ModelError, match="out of range"):
        model.forward_intermediates(x, indices=[4])


def test_forward_features_and_head_split_the_forward_as_timm_and_reset_classifier(space_name):
    space = search_spaces.get_space(space_name)
    torch.manual_seed(1)
    model = supernet.build_model(space.reference(space.reference_names[0])).eval()
    randomise(model, attention_biases=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, 7, 7)
        # forward_features ends after the final norm, as timm's: its output is the head's norm output
        raw = model.stages(model.stem(x))
        assert torch.equal(feats, model.head.norm(raw))
        assert torch.equal(model.forward_head(feats), model(x))
        pooled = model.forward_head(feats, pre_logits=True)
        assert torch.equal(pooled, feats.mean((2, 3)))
        final, _ = model.forward_intermediates(x)
        assert torch.equal(final, feats)
    model.reset_classifier(10)
    with torch.no_grad():
        assert model.forward_head(feats).shape == (2, 10) and model(x).shape == (2, 10)
    classifier = model.get_classifier()
    layers = classifier if isinstance(classifier, tuple) else (classifier,)
    assert all(fc.out_features == 10 for fc in layers)
    assert model.layout.head.spec["classes"] == 10  # latency keys follow the new head
    model.reset_classifier(0)
    with torch.no_grad():
        assert torch.equal(model.forward_head(feats), pooled)
    decay_free = model.no_weight_decay()
    biases = {n for n, _ in model.named_parameters() if "attention_biases" in n}
    assert decay_free == biases and (bool(biases) == (space_name == "efficientformerv2"))


@pytest.fixture(scope="module")
def net(space_name):
    torch.manual_seed(0)
    n = supernet.build_supernet(search_spaces.get_space(space_name), num_classes=10, resolution=64).eval()
    randomise(n, attention_biases=True)
    return n


def test_the_supernets_intermediates_at_an_arch_are_the_extracted_models(net):
    """forward_features, forward_intermediates and a backbone's forward honour set_active."""
    space = net.space
    archs = [space.reference(space.reference_names[0])] + [space.sample(random.Random(s)) for s in (1, 2)]
    seen = []
    for arch in archs:
        for size in ((64, 64), (96, 64)):
            a = arch.with_resolution(size)
            x = torch.randn(2, 3, *size)
            with torch.no_grad():
                net.set_active(a)
                final, inter = net.forward_intermediates(x)
                feats = net.forward_features(x)
                model = net.extract(a).eval()
                final2, inter2 = model.forward_intermediates(x)
                net.set_active(a.with_task("backbone"))
                stages = net(x)
                backbone = net.extract(a.with_task("backbone")).eval()
                stages2 = backbone(x)
            assert [t.shape for t in inter] == [t.shape for t in inter2]
            for p, q in zip(inter + [final, feats] + stages, inter2 + [final2, final2] + stages2):
                assert _rel(p, q) < 1e-5, a
            assert net.feature_info.channels() == model.feature_info.channels()
            seen.append(feats.shape[1])
    assert len(set(seen)) > 1  # the archs differ in width: a supernet ignoring set_active would not


# ---- any input size --------------------------------------------------------------------------------
def _old_attention2d(self, x):
    """EfficientFormerV2's Attention2d.forward before any input size was allowed (main at 9448da5)."""
    B, C, H, W = x.shape
    if self.stride_conv is not None:
        x = self.stride_conv(x)
    h, n = self.num_heads, self.N
    q = self.q(x).reshape(B, h, -1, n).transpose(-1, -2)
    k = self.k(x).reshape(B, h, -1, n)
    v = self.v(x)
    v_local = self.v_local(v)
    v = v.reshape(B, h, -1, n).transpose(-1, -2)
    attn = (q @ k) * self.scale + self.attention_bias()
    attn = self.talking_head2(self.talking_head1(attn).softmax(dim=-1))
    x = (attn @ v).transpose(-1, -2).reshape(B, self.dh, self.hw[0], self.hw[1]) + v_local
    if self.upsample is not None:
        x = self.upsample(x)
    return self.proj(self.act(x))


def _old_attention2d_downsample(self, x):
    B, C, H, W = x.shape
    h = self.num_heads
    q = self.q(x).reshape(B, h, -1, self.N2).transpose(-1, -2)
    k = self.k(x).reshape(B, h, -1, self.N)
    v = self.v(x)
    v_local = self.v_local(v)
    v = v.reshape(B, h, -1, self.N).transpose(-1, -2)
    attn = ((q @ k) * self.scale + self.attention_bias()).softmax(dim=-1)
    x = (attn @ v).transpose(-1, -2).reshape(B, self.dh, self.hw2[0], self.hw2[1]) + v_local
    return self.proj(self.act(x))


def _official_attention4d(self, x):
    """The official detection backbone's Attention4D.forward (EfficientFormer `detection/backbonev2.py`),
    on our module's layers: the build-size (heads, N, N) bias, bicubic-interpolated as an image to
    the attention map's size."""
    B, C, H, W = x.shape
    if self.stride_conv is not None:
        x = self.stride_conv(x)
        H, W = H // 2, W // 2
    nh = self.num_heads
    q = self.q(x).flatten(2).reshape(B, nh, -1, H * W).permute(0, 1, 3, 2)
    k = self.k(x).flatten(2).reshape(B, nh, -1, H * W).permute(0, 1, 2, 3)
    v = self.v(x)
    v_local = self.v_local(v)
    v = v.flatten(2).reshape(B, nh, -1, H * W).permute(0, 1, 3, 2)
    attn = (q @ k) * self.scale
    bias = self.attention_bias()
    bias = torch.nn.functional.interpolate(bias.unsqueeze(0), size=(attn.size(-2), attn.size(-1)), mode="bicubic")
    attn = attn + bias
    attn = self.talking_head1(attn)
    attn = attn.softmax(dim=-1)
    attn = self.talking_head2(attn)
    x = attn @ v
    out = x.transpose(2, 3).reshape(B, self.dh, H, W) + v_local
    if self.upsample is not None:
        out = F.interpolate(out, scale_factor=2, mode="bilinear")
    return self.proj(self.act(out))


@pytest.fixture(scope="module")
def s1():
    torch.manual_seed(0)
    m = supernet.build_model(search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s1"))
    randomise(m.eval(), attention_biases=True)
    return m


def test_efficientformerv2_at_its_build_size_computes_exactly_what_it_did(s1, monkeypatch):
    from supernet.efficientformerv2 import Attention2d, Attention2dDownsample
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        now = s1(x)
        feats = s1.forward_intermediates(x, intermediates_only=True)
        monkeypatch.setattr(Attention2d, "forward", _old_attention2d)
        monkeypatch.setattr(Attention2dDownsample, "forward", _old_attention2d_downsample)
        before = s1(x)
        feats_before = s1.forward_intermediates(x, intermediates_only=True)
    assert torch.equal(now, before)  # bit-identical: the same ops in the same order
    assert all(torch.equal(a, b) for a, b in zip(feats, feats_before))


def test_efficientformerv2_runs_at_any_size_resampling_its_biases_as_the_official_detection_code(s1):
    from supernet.efficientformerv2 import Attention2d
    with torch.no_grad():
        for size in ((512, 512), (640, 480), (224, 320)):
            feats = s1.forward_intermediates(torch.randn(1, 3, *size), intermediates_only=True)
            assert [tuple(f.shape[-2:]) for f in feats] == [(size[0] // r, size[1] // r) for r in (4, 8, 16, 32)]
        block = next(m for m in s1.modules() if isinstance(m, Attention2d) and m.stride_conv is not None)
        for size in ((14, 14), (20, 16)):  # its build size (14x14 at 224 px), then another
            x = torch.randn(2, block.q.conv.in_channels, *size)
            assert _rel(block(x), _official_attention4d(block, x)) < 1e-5
        # and the fused block (one (heads, N, N) bias table) resamples alike
        fused = copy.deepcopy(block).eval()
        fused.reparameterize()
        assert _rel(fused(x), block(x)) < 1e-5


def test_a_model_rejects_sides_that_are_not_multiples_of_32(s1):
    with pytest.raises(supernet.ModelError, match="multiples of 32"):
        s1(torch.randn(1, 3, 224, 200))


def test_the_supernet_runs_a_subnet_at_a_non_square_size_with_resampled_biases():
    torch.manual_seed(0)
    net = supernet.build_supernet("efficientformerv2", num_classes=10, resolution=64).eval()
    randomise(net, attention_biases=True)
    a = net.space.reference("efficientformerv2_s0").with_resolution((96, 64))
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        y = net.set_active(a)(x)
        m = net.extract(a)
        assert _rel(m(x), y) < 1e-5
    # the subnet's tables are the supernet's (2x2 grid at 64 px, stage 4) resampled over the offset grid
    from supernet.efficientformerv2 import resize_attention_biases
    held = net.stages[3].blocks[9].token_mixer.attention_biases
    got = m.stages[3].blocks[-1].token_mixer.attention_biases
    assert got.shape == (8, 3 * 2) and torch.allclose(got, resize_attention_biases(held, (3, 2)))
