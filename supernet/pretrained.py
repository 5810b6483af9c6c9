"""Import official Next-ViT / EfficientFormerV2 checkpoints (and timm's) into our models.

    report = load_pretrained(model_or_supernet, "nextvit_small_in1k_224.pth")
    print(format_report(report))

`model_or_supernet` is a static model (`supernet.build_model(arch)`, whose arch must be the
checkpoint's) or a supernet (`supernet.build_supernet(space)`), into which any reference
checkpoint of its space goes by the sharing rule (`supernet.sharing`): block j of a stage lands at
the supernet position the space places it at, each tensor in the leading corner of the shared one
(of each branch's range, for the channels a Next-ViT NTB concatenates). A checkpoint of
EfficientFormerV2-L fills its supernet one-to-one; one of Next-ViT-L fills the leading ranges of
the supernet's NTBs, which hold wider branches (r = 1, r = 0.5) than Next-ViT-L has -- the rest
keeps its initialisation, listed per tensor in the report (`partial`, `filled`).

A checkpoint's key layout is recognised by its keys: ours (`hwnas`), or one of the layouts its
family registers (`Family.checkpoint_layouts`: one table per layout, read one way to import and
the other way to write, kept beside the family's blocks). The built-in families have two each:
- `timm`: our module names already are timm's except the head (timm `norm.*`, `head.fc.*` /
  `head.*`, `head_dist.*`; ours `head.norm.*`, `head.fc.*`, `head.fc_dist.*`);
- `official`: Next-ViT's `stem.N`, flat `features.N`, `mlp.conv1/conv2`, `proj_head.0`;
  EfficientFormerV2's `patch_embed.N`, `network.N` with the downsampling embeddings interleaved,
  `nn.Sequential` conv/BN pairs (`q.0`, `q.1`), `mlp.{fc1,norm1,mid,mid_norm,fc2,norm2}`,
  `layer_scale_1/2` of shape (C, 1, 1), `dist_head`;
- `hwnas`: our own static-model keys.
Tensors tied to the input resolution (`Family.resample`: EfficientFormerV2's attention-bias
tables) are resampled when the model runs at another
resolution than the checkpoint (bicubic over the offset grid). A head of another number of
classes is skipped. Every tensor of the model that the checkpoint does not fill keeps its
initialisation and is listed in the report (`missing`).
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Mapping

import torch

import search_spaces
from search_spaces import Arch

from .family import Family, PretrainedError, get_family
from .model import DeployModel
from .sharing import Supernet, scatter_

_WRAPPERS = ("state_dict", "model", "model_ema", "state_dict_ema", "module")


# ---- reading the file ---------------------------------------------------------------------------------
def _first_line(e: BaseException) -> str:
    """The first line of an error, without torch's advice to load with weights_only=False."""
    line = (str(e).splitlines() or [type(e).__name__])[0]
    return line.split(" In PyTorch 2.6")[0].split("Re-running `torch.load`")[0].strip()[:200] or type(e).__name__


def read_state_dict(path_or_state_dict: Any) -> dict:
    """The tensor dict of a checkpoint file or dict: unwraps `model` / `state_dict` / ... and `module.`."""
    sd = path_or_state_dict
    if isinstance(sd, (str, os.PathLike)):
        from pathlib import Path
        p = Path(sd).expanduser()
        if not p.is_file():
            raise PretrainedError(f"{p}: no such file (download the official or timm checkpoint first)")
        with open(p, "rb") as f:
            head = f.read(8)
        # torch.save writes a zip archive (or, before torch 1.6, a pickle beginning with its magic number)
        if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80\x02\x8a\x0a")):
            begins = f"it begins with bytes {head.hex()}" if head else "it is empty"
            raise PretrainedError(f"{p}: not a PyTorch checkpoint file ({begins}; a file written by torch.save "
                                  "begins with a zip header); check the path, or download it again")
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # torch's own message advises weights_only=False, which runs any code the file holds: never that
            raise PretrainedError(f"{p}: holds Python objects besides tensors, which are not loaded (a file's "
                                  "code is never run); load it where you trust it and re-save its state dict "
                                  "(torch.save(model.state_dict(), PATH))") from None
        except Exception as e:  # noqa: BLE001 -- a damaged archive: RuntimeError, EOFError, BadZipFile ...
            raise PretrainedError(f"{p}: truncated or corrupt checkpoint ({_first_line(e)}); download it "
                                  "again") from None
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
    """`hwnas` (our static-model keys) or the name of the family's checkpoint layout these keys are in."""
    keys = frozenset(sd)
    if "head.norm.weight" in keys:
        return "hwnas"
    layouts = get_family(space).checkpoint_layouts
    for layout in layouts:
        if layout.detect(keys):
            return layout.name
    names = [layout.name for layout in layouts]
    expected = f"{', '.join(names)} or hwnas" if names else "hwnas"
    raise PretrainedError(f"unrecognised key layout for a {space} checkpoint (first keys: {sorted(keys)[:5]}); "
                          f"expected the {expected} layout of this space (is it the other family?)")


def to_hwnas_keys(sd: Mapping, space: str) -> tuple[dict, str]:
    """(state dict in our static-model key names, the layout it came in)."""
    layout = detect_layout(sd, space)
    if layout == "hwnas":
        return dict(sd), layout
    return get_family(space).checkpoint_layout(layout).to_ours(sd), layout


def from_hwnas_keys(sd: Mapping, space: str, layout: str) -> dict:
    """The inverse of `to_hwnas_keys`: a static model's state dict in the `timm` or `official` layout
    (to hand a model trained here to code that expects those, and to test the import)."""
    return get_family(space).checkpoint_layout(layout).to_theirs(sd)


# ---- timm's layout, out --------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimmCheckpoint:
    """A static model as timm holds it: `timm.create_model(model_name, **create_kwargs,
    checkpoint_path=FILE)` loads `state_dict` (a backbone: `features_only=True, pretrained=True,
    pretrained_cfg_overlay=dict(file=FILE)`, as timm loads weights into a features-only model)."""

    model_name: str
    state_dict: dict
    create_kwargs: dict
    features_only: bool

    def how(self, file: str = "FILE") -> str:
        kw = "".join(f", {k}={v!r}" for k, v in self.create_kwargs.items())
        if self.features_only:
            return (f"timm.create_model({self.model_name!r}{kw}, features_only=True, pretrained=True, "
                    f"pretrained_cfg_overlay=dict(file={file!r}))")
        return f"timm.create_model({self.model_name!r}{kw}, checkpoint_path={file!r})"


def timm_checkpoint(model) -> TimmCheckpoint:
    """The state dict of a static model (`supernet.build_model`, `hwnas.load`) in timm's layout,
    with the `timm.create_model` name and arguments that build the same network.

    timm builds only its registered models: a reference arch (Next-ViT-S/B/L, EfficientFormerV2-S0/
    S1/S2/L). Any other arch raises `PretrainedError` saying where it differs from the closest one."""
    arch = getattr(model, "arch", None)
    if arch is None or not isinstance(model, DeployModel):
        raise PretrainedError(f"expected a static model (supernet.build_model, hwnas.load), got {type(model).__name__}")
    family = get_family(arch.space)
    name = timm_model_name(arch)
    kwargs: dict = {}
    if not model.features_only and model.num_classes != 1000:
        kwargs["num_classes"] = model.num_classes
    if family.resample and tuple(arch.input_size) != (224, 224):
        kwargs["img_size"] = tuple(arch.input_size)  # tensors tied to the input size (attention biases)
    sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return TimmCheckpoint(name, from_hwnas_keys(sd, arch.space, "timm"), kwargs, bool(model.features_only))


def timm_model_name(arch: Arch) -> str:
    """The `timm.create_model` name of `arch` (any input size or task), or `PretrainedError` saying
    why there is none: timm builds only its registered models, with their stage layouts fixed."""
    family = get_family(arch.space)
    if not family.timm_models:
        raise PretrainedError(f"format=timm: the {arch.space} family names no timm models (Family.timm_models)")
    name, diff = _closest_reference(arch, search_spaces.get_space(arch.space), family.timm_models)
    if diff:
        shown = "; ".join(diff[:6]) + (f"; ... ({len(diff)} differences)" if len(diff) > 6 else "")
        raise PretrainedError(
            f"format=timm: this {arch.space} arch is not a timm model. timm.create_model builds only its "
            f"registered models ({', '.join(family.timm_models.values())}), whose stage layouts (depths, "
            f"widths, ratios, where attention sits) are fixed in their constructors; the closest, "
            f"{family.timm_models[name]} ({name}), differs here: {shown}. Export format=pt (hwnas.load), onnx, "
            "torchscript or coreml instead.")
    return family.timm_models[name]


def _closest_reference(arch: Arch, space, names) -> tuple[str, list[str]]:
    """(the reference with the fewest differing stage fields, those differences)."""
    best = None
    for name in names:
        ref = space.reference(name)
        diff = []
        for s, (mine, theirs) in enumerate(zip(arch.stages, ref.stages)):
            for k in sorted(set(mine) | set(theirs)):
                if mine.get(k) != theirs.get(k):
                    diff.append(f"stages[{s}].{k} is {mine.get(k)!r}, {name} has {theirs.get(k)!r}")
        if best is None or len(diff) < len(best[1]):
            best = (name, diff)
    return best


# ---- which model the checkpoint holds -----------------------------------------------------------------
def _expected(arch: Arch, num_classes: int) -> dict:
    with torch.device("meta"):
        m = DeployModel(arch, num_classes, init=False)
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


def _comparable(k: str, family: Family) -> bool:
    """Whether a tensor's shape identifies the model: not the classifier (any class count), not a
    tensor tied to the resolution, not a counter."""
    return not (k.startswith(family.classifier) or family.resampler(k) is not None
                or k.endswith("num_batches_tracked"))


def identify(sd: Mapping, space: search_spaces.SearchSpace, resolution) -> tuple[str, Arch]:
    """(reference name, arch) whose static model has exactly the checkpoint's tensors (heads aside)."""
    family = get_family(space)
    got = {k: tuple(v.shape) for k, v in sd.items() if _comparable(k, family)}
    for name in space.reference_names:
        arch = space.reference(name).with_resolution(resolution).with_task("classify")
        want = {k: s for k, s in _expected(arch, 1000).items() if _comparable(k, family)}
        if want == got:
            return name, arch
    raise PretrainedError(f"the checkpoint matches none of the {space.name} references "
                          f"({', '.join(space.reference_names)}): {len(got)} tensors besides the head")


# ---- copying ---------------------------------------------------------------------------------------
def _places(arch: Arch, target: Any, state: dict) -> dict:
    """Static key of `arch` -> (key in `target`, plan, the static tensor's shape): the identity for a
    static model, the sharing rule (`Supernet.shared_places`) for a supernet."""
    if isinstance(target, Supernet):
        return target.shared_places(arch)
    return {k: (k, None, tuple(v.shape)) for k, v in state.items()}


def _ranges(plan, shape: tuple) -> list:
    """The index ranges a plan fills, per dimension: [[(start, stop), ...], ...]."""
    if plan is None:
        return [[(0, n)] for n in shape]
    return [[(sl.start, sl.stop) for sl in (p if isinstance(p, tuple) else (p,))] for p in plan]


@torch.no_grad()
def load_pretrained(model: Any, path_or_state_dict: Any) -> dict:
    """Copy an official, timm or hwnas checkpoint into a static model or a supernet (in place).

    Returns a report: `layout` (official / timm / hwnas), `source_arch` (the reference it holds),
    `loaded`, `resized` (tensors tied to the resolution -- attention biases -- resampled to the
    model's), `partial` (supernet tensors the checkpoint fills only in part: a smaller reference, or
    Next-ViT's NTBs, whose supernet tensors hold wider branches than any reference), `filled`
    ({key: the index ranges the checkpoint wrote, per dimension} for every partial tensor; the rest
    of it keeps its initialisation), `skipped` (key and reason: a head of another class count),
    `missing` (tensors of the model left entirely at their initialisation) and `unexpected`
    (checkpoint tensors with no place in the model).
    """
    if isinstance(model, Supernet):
        space, resolution = model.space, model.resolution
    elif isinstance(model, DeployModel):
        space, resolution = search_spaces.get_space(model.arch.space), model.arch.resolution
    else:
        raise PretrainedError(f"expected a supernet.build_model(...) model or a supernet, got {type(model).__name__}")
    family = get_family(space)
    sd, layout = to_hwnas_keys(read_state_dict(path_or_state_dict), space.name)
    if layout == "hwnas" and isinstance(model, DeployModel):
        source_name, arch = "hwnas", model.arch  # our own static layout: whatever arch it is
    else:
        source_name, arch = identify(sd, space, resolution)
        if isinstance(model, DeployModel) and \
                arch.with_resolution(model.arch.resolution).with_task(model.arch.task) != model.arch:
            raise PretrainedError(f"the checkpoint holds {source_name}, the model is another arch of "
                                  f"{space.name}: build it with supernet.build_model(space.reference("
                                  f"{source_name!r})) or import into the supernet and extract")
    target = model.state_dict()
    places = _places(arch, model, target)
    report = {"layout": layout, "source_arch": source_name, "loaded": [], "resized": [], "partial": [],
              "filled": {}, "skipped": [], "missing": [], "unexpected": []}
    filled = set()
    for k, v in sd.items():
        if k not in places or places[k][0] not in target:
            report["unexpected"].append(k)
            continue
        tk, plan, shape = places[k]
        dst = target[tk]
        v = v.to(dst.dtype)
        if tuple(v.shape) != shape:
            if (resample := family.resampler(tk)) is not None and v.shape[0] == shape[0]:
                owner = model.get_submodule(tk.rpartition(".")[0])
                v = resample(v.float(), shape, owner).to(dst.dtype)
                report["resized"].append(tk)
            elif k.startswith(family.classifier) and v.shape[0] != shape[0]:
                report["skipped"].append((k, f"head of {v.shape[0]} classes, the model has {shape[0]}"))
                continue
            else:
                report["skipped"].append((k, f"shape {tuple(v.shape)} vs {tuple(shape)}"))
                continue
        if plan == "resize":  # a resolution-tied tensor at another resolution than the supernet's
            dst.copy_(family.resampler(tk)(v.float(), tuple(dst.shape)).to(dst.dtype))
            plan = None
        else:
            scatter_(dst, plan, v)
        if plan is not None:
            report["partial"].append(tk)
            report["filled"][tk] = _ranges(plan, tuple(dst.shape))
        elif tk not in report["resized"]:
            report["loaded"].append(tk)
        filled.add(tk)
    report["missing"] = [k for k in target if k not in filled and not k.endswith("num_batches_tracked")]
    return report


def _fmt_ranges(ranges: list, shape: tuple) -> str:
    dims = [",".join("all" if (a, b) == (0, n) else f"{a}:{b}" for a, b in r) for r, n in zip(ranges, shape)]
    return f"[{'; '.join(dims)}] of {tuple(shape)}"


def format_report(report: dict, shapes: Mapping[str, tuple] | None = None) -> str:
    """A few lines for a log: what was imported from where, what kept its initialisation
    (`shapes`, {key: shape} of the model, lets it print the filled part of partial tensors)."""
    lines = [f"pretrained import ({report['layout']} layout, {report['source_arch']}): "
             f"{len(report['loaded'])} tensors loaded, {len(report['resized'])} attention-bias tables resized, "
             f"{len(report['partial'])} copied into part of larger supernet tensors"]
    if report["skipped"]:
        lines.append(f"  skipped {len(report['skipped'])}: " + ", ".join(f"{k} ({why})" for k, why in report["skipped"][:4]))
    if report["missing"]:
        lines.append(f"  kept init {len(report['missing'])}: " + ", ".join(report["missing"][:6])
                     + (" ..." if len(report["missing"]) > 6 else ""))
    if report["partial"]:
        shown = [k for k in report["partial"] if k.endswith(".weight")][:3]
        lines.append(f"  kept init outside the filled part of {len(report['partial'])}: " + ", ".join(
            f"{k} {_fmt_ranges(report['filled'][k], shapes[k])}" if shapes and k in shapes else k for k in shown)
            + (" ..." if len(report["partial"]) > 3 else ""))
    if report["unexpected"]:
        lines.append(f"  unused {len(report['unexpected'])}: " + ", ".join(report["unexpected"][:6]))
    return "\n".join(lines)


__all__ = ["PretrainedError", "TimmCheckpoint", "detect_layout", "format_report", "from_hwnas_keys", "identify",
           "load_pretrained", "read_state_dict", "timm_checkpoint", "timm_model_name", "to_hwnas_keys"]
