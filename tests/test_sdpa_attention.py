"""`attention=sdpa` (issue 27): the GPU forms' attention as one `scaled_dot_product_attention` call. It computes
what the matmul form computes, runs the fused op where the switch exists (Next-ViT's E-MHSA, EfficientFormerV2's
downsampling attention), is fingerprinted apart, and leaves the default form -- and so every table timed before
the setting existed -- exactly as it was."""
from __future__ import annotations

import copy

import pytest
import torch

import search_spaces
from hwnas.errors import ConfigError
from hwnas.latency import deploy_form
from hwnas.latency.config import TorchCUDAConfig, TorchInductorConfig
from hwnas.latency.fingerprint import block_fingerprint, spec_for_key
from supernet.efficientformerv2 import Attention2dDownsample
from supernet.model import build_model
from supernet.nextvit import EfficientAttention

MODELS = {"nextvit": ("nextvit_s", EfficientAttention, 64), "efficientformerv2": ("efficientformerv2_s0",
                                                                                   Attention2dDownsample, 64)}


def _sdpa_calls(module: torch.nn.Module, x: torch.Tensor) -> int:
    """How many scaled_dot_product_attention ops the exported graph of `module` runs."""
    graph = torch.export.export(module, (x,)).graph
    return sum("scaled_dot_product_attention" in str(n.target) for n in graph.nodes)


@pytest.mark.parametrize("space", sorted(MODELS))
def test_sdpa_form_computes_what_the_matmul_form_computes(space):
    ref, cls, res = MODELS[space]
    torch.manual_seed(0)
    arch = search_spaces.get_space(space).reference(ref).with_resolution(res)
    model = build_model(arch, num_classes=10).eval()
    with torch.no_grad():  # every weight random and non-trivial (the init leaves some attention outputs ~1e-5)
        for p in model.parameters():
            p.normal_(0.0, 0.2)
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, res, res)
    plain = deploy_form("torch_cuda", precision="fp32", channels_last=False).module(copy.deepcopy(model))
    fused = deploy_form("torch_cuda", precision="fp32", channels_last=False, attention="sdpa").module(
        copy.deepcopy(model))
    switched = [m for m in fused.modules() if isinstance(m, cls)]
    assert switched and all(m.sdpa for m in switched)
    assert not any(m.sdpa for m in plain.modules() if isinstance(m, cls))
    # each switched attention's own output, beside its matmul twin's: the same, and far from zero
    seen = {"plain": [], "fused": []}
    for tag, net in (("plain", plain), ("fused", fused)):
        for m in net.modules():
            if isinstance(m, cls):
                m.register_forward_hook(lambda mod, i, o, tag=tag: seen[tag].append(o))
    with torch.no_grad():
        a, b = plain(x), fused(x)
    assert len(seen["fused"]) == len(seen["plain"]) == len(switched)
    for p_out, f_out in zip(seen["plain"], seen["fused"]):
        assert p_out.abs().max() > 0.1
        torch.testing.assert_close(f_out, p_out, rtol=1e-4, atol=1e-4 * float(p_out.abs().max()))
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4 * float(a.abs().max()))
    assert _sdpa_calls(fused, x) == len(switched)
    assert _sdpa_calls(plain, x) == 0


@pytest.mark.parametrize("target", ["torch_cuda", "torch_inductor"])
def test_the_default_form_is_unchanged_and_sdpa_is_fingerprinted_apart(target):
    default, sdpa = deploy_form(target), deploy_form(target, attention="sdpa")
    assert "attention" not in default.settings()  # what every table timed before the setting existed
    assert deploy_form(target, attention="matmul").settings() == default.settings()
    assert sdpa.settings()["attention"] == "sdpa"
    assert "scaled_dot_product_attention" in sdpa.describe() and "scaled_dot_product" not in default.describe()
    for key in ("nextvit.ntb(in=384,out=512,mhsa=384,stride=1,sr=2,hidden=1024,proj=0,hw=14)",
                "efficientformerv2.downsample(in=96,out=176,attn=1,hw=14)"):
        spec = spec_for_key(key)
        assert block_fingerprint(spec, sdpa) != block_fingerprint(spec, default)
    with pytest.raises(ConfigError, match="attention='flash': allowed: matmul, sdpa"):
        deploy_form(target, attention="flash")


def test_the_setting_is_a_checked_config_key_of_both_gpu_targets():
    assert TorchCUDAConfig().attention == TorchInductorConfig().attention == "matmul"
    assert TorchInductorConfig(attention="sdpa").attention == "sdpa"
    with pytest.raises(ConfigError, match="attention"):
        TorchCUDAConfig(attention="flash")
