"""Pretrained import: official, timm and hwnas layouts load into static models and the supernet
with outputs equal to the source model's. (The comparison against timm's own modules runs on the
GPU machine: experiments/import_check.py.)"""
import pytest
import torch

import search_spaces
import supernet
from supernet.efficientformerv2 import resize_attention_biases
from supernet.pretrained import (PretrainedError, detect_layout, format_report, from_hwnas_keys, load_pretrained,
                                 to_hwnas_keys)


def _randomized(arch, num_classes=10, seed=0):
    torch.manual_seed(seed)
    m = supernet.build_model(arch, num_classes=num_classes)
    with torch.no_grad():
        for k, v in m.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.rand_like(v) + 0.5 if k.endswith("running_var") else torch.randn_like(v) * 0.1)
    return m.eval()


def _close(a, b, rel=1e-6):
    """Equal up to float summation order: the supernet runs on strided first-k views of its shared
    tensors, the static model on contiguous weights, and BLAS/oneDNN may choose another kernel for
    each (Intel and AMD differ); a wrong weight mapping is off by O(1), not 1e-6."""
    return ((a - b).abs().max() / b.abs().max()).item() <= rel


@pytest.fixture(scope="module")
def s0():
    arch = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0").with_resolution(64)
    return arch, _randomized(arch)


@pytest.mark.parametrize("layout", ["official", "timm", "hwnas"])
def test_efficientformerv2_layouts_into_static_model(s0, layout, tmp_path):
    arch, src = s0
    sd = src.state_dict() if layout == "hwnas" else from_hwnas_keys(src.state_dict(), "efficientformerv2", layout)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": sd} if layout == "official" else sd, path)  # official files wrap it in "model"
    model = supernet.build_model(arch, num_classes=10)
    rep = load_pretrained(model, path)
    assert rep["layout"] == layout and not rep["missing"] and not rep["unexpected"]
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(model.eval()(x), src(x))


def test_smaller_reference_into_supernet_by_the_sharing_rule(s0):
    arch, src = s0
    net = supernet.build_supernet("efficientformerv2", num_classes=10, resolution=64)
    rep = load_pretrained(net, from_hwnas_keys(src.state_dict(), "efficientformerv2", "official"))
    assert rep["source_arch"] == "efficientformerv2_s0" and rep["partial"]  # S0 sits in L's leading corners
    assert rep["missing"] and all(not k.startswith("stem.conv1.conv") for k in rep["missing"])
    x = torch.randn(2, 3, 64, 64)
    net.eval().set_active(arch)
    assert _close(net(x), src(x))


def test_official_layout_shapes_and_names():
    arch = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0")
    sd = from_hwnas_keys(supernet.build_model(arch).state_dict(), "efficientformerv2", "official")
    assert sd["network.4.4.layer_scale_1"].shape == (96, 1, 1)
    for key in ("patch_embed.0.weight", "patch_embed.4.running_var", "network.1.proj.weight",
                "network.5.attn.q.local.0.weight", "network.5.conv.weight", "network.6.3.token_mixer.q.0.weight",
                "network.6.3.token_mixer.proj.2.bias", "network.0.1.mlp.mid_norm.weight", "dist_head.weight"):
        assert key in sd, key
    assert detect_layout(sd, "efficientformerv2") == "official"


def test_nextvit_official_into_supernet_keeps_unfilled_tensors_listed():
    space = search_spaces.get_space("nextvit")
    arch = space.reference("nextvit_s").with_resolution(64)
    src = _randomized(arch)
    official = from_hwnas_keys(src.state_dict(), "nextvit", "official")
    assert "features.19.mlp.conv2.weight" in official and "proj_head.0.weight" in official
    net = supernet.build_supernet(space, num_classes=10, resolution=64)
    rep = load_pretrained(net, official)
    assert rep["layout"] == "official" and rep["source_arch"] == "nextvit_s" and not rep["unexpected"]
    # Next-ViT-S fills 2 of L's 6 stage-3 patterns; the rest, and the NTB input projections the
    # supernet holds beyond Next-ViT (proj), keep their initialisation and are listed.
    assert "stages.2.blocks.29.mlp.fc2.weight" in rep["missing"]
    assert "stages.1.blocks.3.patch_embed.conv.weight" in rep["missing"]
    x = torch.randn(2, 3, 64, 64)
    net.eval().set_active(arch)
    assert _close(net(x), src(x))


@pytest.fixture(scope="module")
def nextvit_l():
    """A random Next-ViT-L at 32 px and an initialised supernet to import it into (built once)."""
    arch = search_spaces.get_space("nextvit").reference("nextvit_l").with_resolution(32)
    return arch, _randomized(arch, seed=1), supernet.build_supernet("nextvit", num_classes=10, resolution=32)


@pytest.mark.parametrize("layout", ["official", "timm"])
def test_nextvit_l_into_the_supernet_fills_the_leading_branch_ranges(nextvit_l, layout):
    """Next-ViT-L's weights land in the leading range of each branch of the supernet's NTBs (which
    hold r = 1's E-MHSA and r = 0.5's MHCA); extracting L gives back exactly the checkpoint, and the
    report lists, tensor by tensor, the branch channels that keep their initialisation."""
    arch, src, net = nextvit_l
    rep = load_pretrained(net, from_hwnas_keys(src.state_dict(), "nextvit", layout))
    assert rep["layout"] == layout and rep["source_arch"] == "nextvit_l"
    assert not rep["unexpected"] and not rep["skipped"]
    # The stage-3 NTB of pattern 0: E-MHSA 384 of 512, MHCA 128 of 256; its concatenation (norm2, the
    # MLP) and the NCB reading it next take L's channels at [0, 384) and [512, 640) of 768.
    ntb, after = "stages.2.blocks.4.", "stages.2.blocks.5."
    assert rep["filled"][ntb + "e_mhsa.q.weight"] == [[(0, 384)], [(0, 384)]]
    assert rep["filled"][ntb + "mhca.group_conv3x3.weight"] == [[(0, 128)], [(0, 32)], [(0, 3)], [(0, 3)]]
    assert rep["filled"][ntb + "norm2.weight"] == [[(0, 384), (512, 640)]]
    assert rep["filled"][ntb + "mlp.fc1.weight"] == [[(0, 1024)], [(0, 384), (512, 640)], [(0, 1)], [(0, 1)]]
    assert rep["filled"][after + "patch_embed.conv.weight"] == [[(0, 384)], [(0, 384), (512, 640)], [(0, 1)], [(0, 1)]]
    assert rep["filled"]["head.norm.weight"] == [[(0, 768), (1024, 1280)]]
    partial = {k.rsplit(".", 2)[0] for k in rep["partial"]}
    assert {"stages.1.blocks.3.e_mhsa", "stages.2.blocks.29.e_mhsa", "stages.3.blocks.2.e_mhsa", "head"} <= partial
    assert all(".e_mhsa." in k or ".mhca." in k or ".projection." in k or ".norm1" in k or ".norm2" in k
               or ".mlp." in k or ".patch_embed." in k or k.startswith("head.") for k in rep["partial"])
    # tensors L has none of: the NTBs' input projections (L's NTBs take their input width straight)
    assert rep["missing"] == [k for k in net.state_dict() if ".patch_embed." in k and k.startswith(
        tuple(f"stages.{s}.blocks.{j}." for s, j in [(1, 3), (3, 2)] + [(2, 5 * p + 4) for p in range(6)]))
        and not k.endswith("num_batches_tracked")]
    text = format_report(rep, {k: tuple(v.shape) for k, v in net.state_dict().items()})
    assert "kept init outside the filled part of" in text and "stages.1.blocks.3.e_mhsa.q.weight [0:192; 0:192] of (256, 256)" in text
    # extract L: exactly the checkpoint's tensors, so exactly the static model's outputs
    model = net.extract(arch)
    want = src.state_dict()
    assert list(model.state_dict()) == list(want)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), src(x))
    net.eval().set_active(arch)
    assert _close(net(x), src(x), rel=1e-5)


def test_resolution_and_head_changes():
    """An L checkpoint for 224 px, 1000 classes into a 32 px, 10-class supernet: attention biases
    resampled, the head skipped and listed, everything else loaded one-to-one."""
    net = supernet.build_supernet("efficientformerv2", num_classes=10, resolution=32)
    sd = {}
    for k, v in net.state_dict().items():  # the supernet's state dict is L's; make it L's at 224 px
        if k.endswith("attention_biases"):
            v = torch.randn(v.shape[0], 196 if "downsample" in k else 49)
        elif k.startswith("head.fc"):
            v = torch.zeros((1000,) + tuple(v.shape[1:]))
        sd[k] = v
    rep = load_pretrained(net, from_hwnas_keys(sd, "efficientformerv2", "timm"))
    assert rep["source_arch"] == "efficientformerv2_l" and not rep["partial"]
    assert len(rep["resized"]) == 13  # 6 + 6 attention blocks (stages 3 and 4) + the attention downsampling
    assert {k for k, _ in rep["skipped"]} == {"head.fc.weight", "head.fc.bias", "head.fc_dist.weight",
                                              "head.fc_dist.bias"}
    assert sorted(rep["missing"]) == sorted(k for k, _ in rep["skipped"])
    expect = resize_attention_biases(sd["stages.2.blocks.14.token_mixer.attention_biases"], 1)
    assert torch.allclose(net.state_dict()["stages.2.blocks.14.token_mixer.attention_biases"], expect)


def test_wrong_model_or_family_is_a_clear_error():
    space = search_spaces.get_space("efficientformerv2")
    s0 = supernet.build_model(space.reference("efficientformerv2_s0")).state_dict()
    s1_model = supernet.build_model(space.reference("efficientformerv2_s1"))
    with pytest.raises(PretrainedError, match="holds efficientformerv2_s0.*build_model"):
        load_pretrained(s1_model, from_hwnas_keys(s0, "efficientformerv2", "timm"))
    nv = supernet.build_model(search_spaces.get_space("nextvit").min_arch())
    with pytest.raises(PretrainedError, match="unrecognised key layout for a nextvit checkpoint"):
        load_pretrained(nv, from_hwnas_keys(s0, "efficientformerv2", "official"))
    with pytest.raises(PretrainedError, match="no such file"):
        load_pretrained(nv, "/nonexistent/nextvit_small.pth")


@pytest.mark.parametrize("name", ["nextvit", "efficientformerv2"])
def test_every_reference_round_trips_through_every_checkpoint_layout(name):
    """Each family's layout table read one way, then the other, gives back every key in its order,
    each tensor in its shape (meta tensors: the tables move names and shapes, not values)."""
    space = search_spaces.get_space(name)
    for ref, arch in space.references().items():
        with torch.device("meta"):
            sd = supernet.DeployModel(arch.with_resolution(32), num_classes=10, init=False).state_dict()
        for layout in supernet.get_family(name).checkpoint_layouts:
            theirs = from_hwnas_keys(sd, name, layout.name)
            assert theirs.keys() != sd.keys()
            back, detected = to_hwnas_keys(theirs, name)
            assert detected == layout.name, (ref, layout.name)
            assert list(back) == list(sd), (ref, layout.name)
            assert all(back[k].shape == v.shape for k, v in sd.items()), (ref, layout.name)
