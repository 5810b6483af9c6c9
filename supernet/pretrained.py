"""Import official Next-ViT / EfficientFormerV2 checkpoints (and timm's) into our models.

    report = load_pretrained(model_or_supernet, "nextvit_small_in1k_224.pth")
    print(format_report(report))

`model_or_supernet` is a static model (`supernet.build_model(arch)`, whose arch must be the
checkpoint's) or a supernet (`supernet.build_supernet(space)`), into which any reference
checkpoint of its space goes by the sharing rule: block j of a stage lands at the supernet
position the space places it at, each tensor in the leading corner of the shared one. A
checkpoint of the max arch (Next-ViT-L, EfficientFormerV2-L) fills the supernet one-to-one.

Three key layouts are recognised by their keys:
- `timm`: our module names already are timm's except the head (timm `norm.*`, `head.fc.*` /
  `head.*`, `head_dist.*`; ours `head.norm.*`, `head.fc.*`, `head.fc_dist.*`);
- `official`: Next-ViT's `stem.N`, flat `features.N`, `mlp.conv1/conv2`, `proj_head.0`;
  EfficientFormerV2's `patch_embed.N`, `network.N` with the downsampling embeddings interleaved,
  `nn.Sequential` conv/BN pairs (`q.0`, `q.1`), `mlp.{fc1,norm1,mid,mid_norm,fc2,norm2}`,
  `layer_scale_1/2` of shape (C, 1, 1), `dist_head`;
- `hwnas`: our own static-model keys.
EfficientFormerV2's attention-bias tables are resampled when the model runs at another
resolution than the checkpoint (bicubic over the offset grid). A head of another number of
classes is skipped. Every tensor of the model that the checkpoint does not fill keeps its
initialisation and is listed in the report (`missing`).
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import torch

import search_spaces
from search_spaces import Arch
from search_spaces.errors import HwnasError

from .efficientformerv2 import resize_attention_biases
from .model import DeployModel
from .sharing import Supernet

_WRAPPERS = ("state_dict", "model", "model_ema", "state_dict_ema", "module")


class PretrainedError(HwnasError, ValueError):
    """A checkpoint that cannot be imported into the given model; the message says why and what to do."""


# ---- reading the file ---------------------------------------------------------------------------------
def read_state_dict(path_or_state_dict: Any) -> dict:
    """The tensor dict of a checkpoint file or dict: unwraps `model` / `state_dict` / ... and `module.`."""
    sd = path_or_state_dict
    if isinstance(sd, (str, os.PathLike)):
        from pathlib import Path
        p = Path(sd).expanduser()
        if not p.is_file():
            raise PretrainedError(f"{p}: no such file (download the official or timm checkpoint first)")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            raise PretrainedError(f"{p}: cannot be read as a PyTorch checkpoint with weights_only=True "
                                  f"({str(e).splitlines()[0][:200]})") from None
    for _ in range(3):
        if isinstance(sd, Mapping) and not any(torch.is_tensor(v) for v in sd.values()):
            inner = next((sd[k] for k in _WRAPPERS if isinstance(sd.get(k), Mapping)), None)
            if inner is None:
                break
            sd = inner
    if not isinstance(sd, Mapping) or not any(torch.is_tensor(v) for v in sd.values()):
        raise PretrainedError("no tensors found: expected a state dict, possibly under 'model' or 'state_dict'")
    out = {}
    for k, v in sd.items():
        if torch.is_tensor(v):
            out[k[7:] if k.startswith("module.") else k] = v
    return out


# ---- key layouts --------------------------------------------------------------------------------------
def detect_layout(sd: Mapping, space: str) -> str:
    keys = set(sd)
    if "head.norm.weight" in keys:
        return "hwnas"
    if space == "nextvit":
        if any(k.startswith("features.") for k in keys) or "proj_head.0.weight" in keys:
            return "official"
        if "head.fc.weight" in keys and any(k.startswith("stages.") for k in keys):
            return "timm"
    else:
        if any(k.startswith("network.") for k in keys):
            return "official"
        if "head.weight" in keys and any(k.startswith("stages.") for k in keys):
            return "timm"
    raise PretrainedError(f"unrecognised key layout for a {space} checkpoint (first keys: {sorted(keys)[:5]}); "
                          "expected the official, timm or hwnas layout of this space (is it the other family?)")


def _head_map(space: str) -> dict:
    if space == "nextvit":
        return {"norm.": "head.norm.", "head.fc.": "head.fc.", "proj_head.0.": "head.fc."}
    return {"norm.": "head.norm.", "head_dist.": "head.fc_dist.", "dist_head.": "head.fc_dist.", "head.": "head.fc."}


def _rename_head(k: str, space: str) -> str:
    for old, new in _head_map(space).items():
        if k.startswith(old):
            return new + k[len(old):]
    return k


_NEXTVIT_MLP = {"mlp.conv1.": "mlp.fc1.", "mlp.conv2.": "mlp.fc2."}


def _official_nextvit(sd: Mapping) -> dict:
    """features.N -> stages.s.blocks.j with Next-ViT's depths (3, 4, 5*L, 3)."""
    n = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"features\.(\d+)\.", k)))
    depths = (3, 4, n - 10, 3)
    if n <= 10 or (n - 10) % 5:
        raise PretrainedError(f"an official Next-ViT checkpoint with {n} blocks: expected 10 + 5*L "
                              "(Next-ViT-S/B/L have 20/30/40)")
    where = [(s, j) for s, d in enumerate(depths) for j in range(d)]
    out = {}
    for k, v in sd.items():
        m = re.match(r"features\.(\d+)\.(.*)", k)
        if m:
            s, j = where[int(m.group(1))]
            rest = m.group(2)
            for old, new in _NEXTVIT_MLP.items():
                rest = rest.replace(old, new) if rest.startswith(old) else rest
            k = f"stages.{s}.blocks.{j}.{rest}"
        else:
            k = _rename_head(k, "nextvit")
        out[k] = v
    return out


_EFV2_SEQ = [  # nn.Sequential indices of the official code -> our ConvNorm names
    (r"token_mixer\.(q|k|v|v_local|stride_conv)\.0\.", r"token_mixer.\1.conv."),
    (r"token_mixer\.(q|k|v|v_local|stride_conv)\.1\.", r"token_mixer.\1.bn."),
    (r"token_mixer\.proj\.1\.", "token_mixer.proj.conv."), (r"token_mixer\.proj\.2\.", "token_mixer.proj.bn."),
    (r"mlp\.fc1\.(weight|bias)$", r"mlp.fc1.conv.\1"), (r"mlp\.norm1\.", "mlp.fc1.bn."),
    (r"mlp\.mid\.(weight|bias)$", r"mlp.mid.conv.\1"), (r"mlp\.mid_norm\.", "mlp.mid.bn."),
    (r"mlp\.fc2\.(weight|bias)$", r"mlp.fc2.conv.\1"), (r"mlp\.norm2\.", "mlp.fc2.bn."),
    (r"^layer_scale_1$", "ls1.gamma"), (r"^layer_scale_2$", "ls2.gamma"),
]
_EFV2_DOWN = [
    (r"^proj\.", "conv.conv."), (r"^norm\.", "conv.bn."),  # plain embedding
    (r"^conv\.", "conv.conv."), (r"^bn\.", "conv.bn."),  # attention embedding: conv path
    (r"^attn\.q\.local\.0\.", "attn.q.local."), (r"^attn\.q\.proj\.0\.", "attn.q.proj.conv."),
    (r"^attn\.q\.proj\.1\.", "attn.q.proj.bn."),
    (r"^attn\.(k|v|v_local)\.0\.", r"attn.\1.conv."), (r"^attn\.(k|v|v_local)\.1\.", r"attn.\1.bn."),
    (r"^attn\.proj\.1\.", "attn.proj.conv."), (r"^attn\.proj\.2\.", "attn.proj.bn."),
]
_EFV2_STEM = {"0": "conv1.conv", "1": "conv1.bn", "3": "conv2.conv", "4": "conv2.bn"}


def _sub(rules, s: str) -> str:
    for pat, rep in rules:
        s2 = re.sub(pat, rep, s)
        if s2 != s:
            return s2
    return s


def _official_efficientformerv2(sd: Mapping) -> dict:
    """network.{0,2,4,6}.j -> stages.s.blocks.j; network.{1,3,5} -> stages.s.downsample."""
    out = {}
    for k, v in sd.items():
        if k.endswith("attention_bias_idxs"):
            continue  # derived indices, rebuilt by our modules
        m = re.match(r"patch_embed\.(\d+)\.(.*)", k)
        if m:
            out[f"stem.{_EFV2_STEM[m.group(1)]}.{m.group(2)}"] = v
            continue
        m = re.match(r"network\.(\d+)\.(.*)", k)
        if not m:
            out[_rename_head(k, "efficientformerv2")] = v
            continue
        idx, rest = int(m.group(1)), m.group(2)
        if idx % 2 == 0:
            j, _, rest = rest.partition(".")
            if rest.startswith("layer_scale_"):
                v = v.reshape(-1)
            out[f"stages.{idx // 2}.blocks.{j}.{_sub(_EFV2_SEQ, rest)}"] = v
        else:
            out[f"stages.{(idx + 1) // 2}.downsample.{_sub(_EFV2_DOWN, rest)}"] = v
    return out


def to_hwnas_keys(sd: Mapping, space: str) -> tuple[dict, str]:
    """(state dict in our static-model key names, the layout it came in)."""
    layout = detect_layout(sd, space)
    if layout == "hwnas":
        return dict(sd), layout
    if layout == "timm":
        return {_rename_head(k, space): v for k, v in sd.items() if not k.endswith("attention_bias_idxs")}, layout
    if space == "nextvit":
        return _official_nextvit(sd), layout
    return _official_efficientformerv2(sd), layout


def from_hwnas_keys(sd: Mapping, space: str, layout: str) -> dict:
    """The inverse of `to_hwnas_keys`: a static model's state dict in the `timm` or `official` layout
    (to hand a model trained here to code that expects those, and to test the import)."""
    inv_head = {"nextvit": {"head.norm.": "norm.", "head.fc.": "proj_head.0." if layout == "official" else "head.fc."},
                "efficientformerv2": {"head.norm.": "norm.", "head.fc_dist.": "dist_head." if layout == "official"
                                      else "head_dist.", "head.fc.": "head."}}[space]
    depths: dict = {}
    for k in sd:
        m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.", k)
        if m:
            depths[int(m.group(1))] = max(depths.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    offsets = [sum(depths.get(i, 0) for i in range(s)) for s in range(len(depths))]
    out = {}
    for k, v in sd.items():
        new = next((n + k[len(o):] for o, n in inv_head.items() if k.startswith(o)), None)
        if new is not None or layout == "timm":
            out[new or k] = v
            continue
        m = re.match(r"stages\.(\d+)\.(blocks\.(\d+)|downsample)\.(.*)", k)
        if space == "nextvit":
            if m:
                rest = re.sub(r"^mlp\.fc([12])\.", r"mlp.conv\1.", m.group(4))
                k = f"features.{offsets[int(m.group(1))] + int(m.group(3))}.{rest}"
            out[k] = v
            continue
        if k.startswith("stem."):
            part, _, rest = k[5:].rpartition(".")
            idx = {n: i for i, n in _EFV2_STEM.items()}[part]
            out[f"patch_embed.{idx}.{rest}"] = v
            continue
        s, rest = int(m.group(1)), m.group(4)
        if m.group(3) is not None:
            rest = _sub(_EFV2_SEQ_INV, rest)
            if rest.startswith("layer_scale_"):
                v = v.reshape(-1, 1, 1)
            out[f"network.{2 * s}.{m.group(3)}.{rest}"] = v
        else:
            rules = _EFV2_DOWN_INV_ATTN if s == 3 else _EFV2_DOWN_INV
            out[f"network.{2 * s - 1}.{_sub(rules, rest)}"] = v
    return out


_EFV2_SEQ_INV = [
    (r"token_mixer\.proj\.conv\.", "token_mixer.proj.1."), (r"token_mixer\.proj\.bn\.", "token_mixer.proj.2."),
    (r"token_mixer\.(q|k|v|v_local|stride_conv)\.conv\.", r"token_mixer.\1.0."),
    (r"token_mixer\.(q|k|v|v_local|stride_conv)\.bn\.", r"token_mixer.\1.1."),
    (r"mlp\.fc1\.conv\.", "mlp.fc1."), (r"mlp\.fc1\.bn\.", "mlp.norm1."),
    (r"mlp\.mid\.conv\.", "mlp.mid."), (r"mlp\.mid\.bn\.", "mlp.mid_norm."),
    (r"mlp\.fc2\.conv\.", "mlp.fc2."), (r"mlp\.fc2\.bn\.", "mlp.norm2."),
    (r"^ls1\.gamma$", "layer_scale_1"), (r"^ls2\.gamma$", "layer_scale_2"),
]
_EFV2_DOWN_INV = [(r"^conv\.conv\.", "proj."), (r"^conv\.bn\.", "norm.")]
_EFV2_DOWN_INV_ATTN = [
    (r"^conv\.conv\.", "conv."), (r"^conv\.bn\.", "bn."),
    (r"^attn\.q\.local\.", "attn.q.local.0."), (r"^attn\.q\.proj\.conv\.", "attn.q.proj.0."),
    (r"^attn\.q\.proj\.bn\.", "attn.q.proj.1."),
    (r"^attn\.proj\.conv\.", "attn.proj.1."), (r"^attn\.proj\.bn\.", "attn.proj.2."),
    (r"^attn\.(k|v|v_local)\.conv\.", r"attn.\1.0."), (r"^attn\.(k|v|v_local)\.bn\.", r"attn.\1.1."),
]


# ---- which model the checkpoint holds -----------------------------------------------------------------
def _expected(arch: Arch, num_classes: int) -> dict:
    with torch.device("meta"):
        m = DeployModel(arch, num_classes, init=False)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _comparable(k: str) -> bool:
    return not (k.startswith("head.fc") or k.endswith("attention_biases") or k.endswith("num_batches_tracked"))


def identify(sd: Mapping, space: search_spaces.SearchSpace, resolution: int) -> tuple[str, Arch]:
    """(reference name, arch) whose static model has exactly the checkpoint's tensors (heads aside)."""
    got = {k: tuple(v.shape) for k, v in sd.items() if _comparable(k)}
    for name in space.reference_names:
        arch = space.reference(name).with_resolution(resolution)
        want = {k: s for k, s in _expected(arch, 1000).items() if _comparable(k)}
        if want == got:
            return name, arch
    raise PretrainedError(f"the checkpoint matches none of the {space.name} references "
                          f"({', '.join(space.reference_names)}): {len(got)} tensors besides the head")


# ---- copying ---------------------------------------------------------------------------------------
def _placement(arch: Arch, target: Any) -> dict:
    """Static module path of `arch` -> module path in `target` (identity, or supernet positions)."""
    if not isinstance(target, Supernet):
        return {}
    layout = target.space.layout(arch, target.num_classes)
    return {f"stages.{s}.blocks.{j}.": f"stages.{s}.blocks.{p.pos}."
            for s, st in enumerate(layout.stages) for j, p in enumerate(st.blocks)}


def _target_key(k: str, placement: dict) -> str:
    m = re.match(r"(stages\.\d+\.blocks\.\d+\.)(.*)", k)
    if m and m.group(1) in placement:
        return placement[m.group(1)] + m.group(2)
    return k


@torch.no_grad()
def load_pretrained(model: Any, path_or_state_dict: Any) -> dict:
    """Copy an official, timm or hwnas checkpoint into a static model or a supernet (in place).

    Returns a report: `layout` (official / timm / hwnas), `source_arch` (the reference it holds),
    `loaded`, `resized` (attention biases resampled to the model's resolution), `partial` (a
    smaller reference copied into the leading corner of a supernet tensor), `skipped` (key and
    reason: a head of another class count), `missing` (tensors of the model left at their
    initialisation) and `unexpected` (checkpoint tensors with no place in the model).
    """
    if isinstance(model, Supernet):
        space, resolution = model.space, model.resolution
    elif isinstance(model, DeployModel):
        space, resolution = search_spaces.get_space(model.arch.space), model.arch.resolution
    else:
        raise PretrainedError(f"expected a supernet.build_model(...) model or a supernet, got {type(model).__name__}")
    sd, layout = to_hwnas_keys(read_state_dict(path_or_state_dict), space.name)
    if layout == "hwnas" and isinstance(model, DeployModel):
        source_name, arch = "hwnas", model.arch  # our own static layout: whatever arch it is
    else:
        source_name, arch = identify(sd, space, resolution)
        if isinstance(model, DeployModel) and arch.with_resolution(model.arch.resolution) != model.arch:
            raise PretrainedError(f"the checkpoint holds {source_name}, the model is another arch of "
                                  f"{space.name}: build it with supernet.build_model(space.reference("
                                  f"{source_name!r})) or import into the supernet and extract")
    placement = _placement(arch, model)
    target = model.state_dict()
    report = {"layout": layout, "source_arch": source_name, "loaded": [], "resized": [], "partial": [],
              "skipped": [], "missing": [], "unexpected": []}
    filled = set()
    for k, v in sd.items():
        tk = _target_key(k, placement)
        if tk not in target:
            report["unexpected"].append(k)
            continue
        dst = target[tk]
        v = v.to(dst.dtype)
        if v.shape == dst.shape:
            dst.copy_(v)
            report["loaded"].append(tk)
        elif tk.endswith("attention_biases") and v.shape[0] == dst.shape[0]:
            res = int(round(dst.shape[1] ** 0.5))
            src = resize_attention_biases(v.float(), res) if v.shape[1] != dst.shape[1] else v
            if isinstance(model, Supernet) or src.shape == dst.shape:
                dst.copy_(src.to(dst.dtype))
                report["resized"].append(tk)
            else:
                report["skipped"].append((k, f"shape {tuple(v.shape)} vs {tuple(dst.shape)}"))
                continue
        elif k.startswith("head.fc") and v.shape[0] != dst.shape[0]:
            report["skipped"].append((k, f"head of {v.shape[0]} classes, the model has {dst.shape[0]}"))
            continue
        elif (isinstance(model, Supernet) and v.dim() == dst.dim()
              and all(a <= b for a, b in zip(v.shape, dst.shape))):
            dst[tuple(slice(0, n) for n in v.shape)] = v
            report["partial"].append(tk)
        else:
            report["skipped"].append((k, f"shape {tuple(v.shape)} vs {tuple(dst.shape)}"))
            continue
        filled.add(tk)
    report["missing"] = [k for k in target if k not in filled and not k.endswith("num_batches_tracked")]
    return report


def format_report(report: dict) -> str:
    """A few lines for a log: what was imported from where, what kept its initialisation."""
    lines = [f"pretrained import ({report['layout']} layout, {report['source_arch']}): "
             f"{len(report['loaded'])} tensors loaded, {len(report['resized'])} attention-bias tables resized, "
             f"{len(report['partial'])} copied into larger supernet tensors"]
    if report["skipped"]:
        lines.append(f"  skipped {len(report['skipped'])}: " + ", ".join(f"{k} ({why})" for k, why in report["skipped"][:4]))
    if report["missing"]:
        lines.append(f"  kept init {len(report['missing'])}: " + ", ".join(report["missing"][:6])
                     + (" ..." if len(report["missing"]) > 6 else ""))
    if report["unexpected"]:
        lines.append(f"  unused {len(report['unexpected'])}: " + ", ".join(report["unexpected"][:6]))
    return "\n".join(lines)


__all__ = ["PretrainedError", "detect_layout", "format_report", "from_hwnas_keys", "identify", "load_pretrained",
           "read_state_dict", "to_hwnas_keys"]
