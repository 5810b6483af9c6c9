"""`python -m hwnas.extract`: one subnet with its weights, exported for deployment and proven right.

    python -m hwnas.extract arch=nextvit_s format=[pt,onnx] hydra.run.dir=DIR
    python -m hwnas.extract run=SEARCH_DIR pick=nextvit_s checkpoint=DIR/supernet.pt format=[onnx,coreml]

The arch comes from a reference name, an arch YAML/JSON file, or a pick of a search run; the
weights from a supernet checkpoint, a pretrained (official or timm) checkpoint, or -- said loudly
-- a fresh initialisation; BatchNorm statistics are re-estimated on `data=` when given. Each
format is checked on its own runtime and everything lands in the run directory at once (see
`hwnas.export.bundle`). The functions below are the app's steps and usable without Hydra.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hwnas.errors import HwnasError, check_min, check_range

log = logging.getLogger("hwnas.extract")


class ExtractError(HwnasError, ValueError):
    """Bad input to the extract app; the message names the problem and the fix."""


# ---- where the arch comes from ------------------------------------------------------------
def reference_names() -> dict[str, str]:
    """Every reference architecture name -> its space."""
    import search_spaces
    return {n: s for s in search_spaces.list_spaces() for n in search_spaces.get_space(s).reference_names}


def read_pick(run: str | os.PathLike, pick: str | None):
    """The arch of pick `pick` in a search run's `picks.yaml`."""
    import yaml
    from search_spaces import Arch

    path = Path(run) / "picks.yaml" if Path(run).is_dir() or not str(run).endswith((".yaml", ".yml")) else Path(run)
    if not path.exists():
        raise ExtractError(f"no picks.yaml in {run}: give run= the directory of a finished "
                           "`python -m hwnas.search` run")
    try:
        picks = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExtractError(f"{path} is not valid YAML ({first}); it is written by `python -m hwnas.search` "
                           "(rerunning the search in its folder rewrites it)") from None
    if not isinstance(picks, dict):
        raise ExtractError(f"{path} is not a mapping of pick names to picks")
    if not pick:
        raise ExtractError(f"run= needs pick=NAME; the picks in {path}: {sorted(picks)}")
    if pick not in picks:
        raise ExtractError(f"no pick {pick!r} in {path}; available picks: {sorted(picks)}")
    entry = picks[pick]
    # picks.yaml: name -> {reference: {...}, pick: {arch: {...}, ...} | null}; a bare {arch: ...} is read too
    if isinstance(entry, dict) and "pick" in entry and "arch" not in entry:
        entry = entry["pick"]
        if entry is None:
            raise ExtractError(f"pick {pick!r} in {path} is empty: the search found no subnet at or under "
                               f"{pick}'s latency and size; relax the budget or run more trials")
    arch = entry.get("arch") if isinstance(entry, dict) else None
    if not isinstance(arch, dict):
        raise ExtractError(f"pick {pick!r} in {path} has no arch mapping")
    a = Arch.from_dict(arch)
    if entry.get("arch_id") is not None and a.id != entry["arch_id"]:  # its figures are arch_id's, not this arch's
        raise ExtractError(f"pick {pick!r} in {path} records arch_id {entry['arch_id']}, but its arch is "
                           f"{a.id}: the file was edited; rerun the search in its folder to rewrite it, or export "
                           "an arch of your own with arch=FILE.yaml")
    return a


def resolve_arch(arch: str | None = None, run: str | None = None, pick: str | None = None,
                 resolution=None, features_only: bool | None = None):
    """The `Arch` named by `arch=` (reference name or YAML/JSON file) or by `run=` + `pick=`,
    validated, at `resolution` (an int, or [H, W]) when given, as a backbone when `features_only`
    (a classifier when False; None keeps the arch's task). Returns (arch, a description of its source)."""
    import search_spaces
    from hwnas.export.pt import read_arch

    if arch and run:
        raise ExtractError("give either arch= (a reference name or an arch file) or run= with pick=, not both")
    if run:
        a, source = read_pick(run, pick), f"pick {pick!r} of search run {run}"
    elif pick:
        raise ExtractError(f"pick={pick} needs run=SEARCH_DIR (the search run whose picks.yaml holds it)")
    elif arch:
        refs = reference_names()
        if arch in refs:
            a, source = search_spaces.get_space(refs[arch]).reference(arch), f"reference {arch}"
        elif Path(arch).is_file():
            a, source = read_arch(arch), f"arch file {arch}"
        else:
            raise ExtractError(f"arch={arch!r} is neither a reference name ({sorted(refs)}) nor an "
                               "existing arch YAML/JSON file")
    else:
        raise ExtractError("no architecture given: arch=nextvit_s (a reference), arch=path/arch.yaml, "
                           f"or run=SEARCH_DIR pick=NAME. References: {sorted(reference_names())}")
    if resolution is not None:
        from search_spaces.core import check_resolution
        res = search_spaces.canonical_resolution(list(resolution) if isinstance(resolution, (list, tuple))
                                                 else resolution)
        check_resolution(res, "input")  # [224] or 33: one clear line, not an IndexError below
        if res != a.resolution:
            a = a.with_resolution(res)
            source += " at input {}x{}".format(*a.input_size)
    if features_only is not None:
        task = "backbone" if features_only else "classify"
        if task != a.task:
            a = a.with_task(task)
            source += f" as a {task}" + (" (features only)" if features_only else "")
    search_spaces.get_space(a.space).validate(a)
    return a, source


# ---- where the weights come from ----------------------------------------------------------
def search_weights(run: str | os.PathLike, pick: str | None, arch) -> str | None:
    """The supernet a search scored its picks with (its run folder's `accuracy_source.json`), for
    `run=DIR pick=NAME` without `checkpoint=`/`pretrained=`: that file, checked by content hash. A
    search scored by the accuracy predictor holds no weights: refused, naming the `checkpoint=` to
    give. None (a fresh init, said loudly) for a proxy-scored search (no accuracy: tests, dry runs)
    and a run folder of an hwnas that did not record its source."""
    import hashlib
    import json
    path = Path(run) / "accuracy_source.json"
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ExtractError(f"{path}: unreadable ({e}); pass checkpoint= the supernet that search scored with") from None
    evaluator = rec.get("evaluator")
    space = arch.space
    if evaluator == "supernet":
        w = rec.get("weights") or {}
        ckpt = Path(str(w.get("checkpoint", "")))
        digest = None
        if ckpt.is_file():
            h = hashlib.sha1()
            with open(ckpt, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = h.hexdigest()[:16]
        if digest is None or digest != w.get("sha1_16"):
            what = "is no longer there" if digest is None else "has changed since (another content)"
            raise ExtractError(f"run={run} scored its archs with the supernet {ckpt} (sha1 {w.get('sha1_16')}), which "
                               f"{what}: pass checkpoint= that supernet (python -m hwnas.extract run={run} "
                               f"pick={pick} checkpoint=SUPERNET.pt)")
        log.info("weights: the supernet run=%s scored with, %s (sha1 %s%s)", run, ckpt, digest,
                 "; the built-in short supernet: a SMOKE TEST, not trained weights" if rec.get("builtin") else "")
        return str(ckpt)
    if evaluator == "predictor":
        raise ExtractError(f"run={run} scored its archs with the accuracy predictor, which holds no weights: pass "
                           f"checkpoint= a {space} supernet (python -m hwnas.train space={space} "
                           f"data=fashion_mnist), e.g. python -m hwnas.extract run={run} pick={pick} "
                           "checkpoint=SUPERNET.pt, or pretrained= an official checkpoint")
    return None


def model_from_checkpoint(arch, checkpoint: str | os.PathLike, out_indices=None):
    """The plain model of `arch` with weights extracted from a supernet checkpoint."""
    from search_spaces import ArchError
    from hwnas.checkpoint import load_supernet

    net, meta = load_supernet(checkpoint)
    space = net.space
    if arch.space != space.name:
        raise ExtractError(f"the arch is of space {arch.space!r} but checkpoint {checkpoint} holds a "
                           f"{space.name!r} supernet: pick an arch of {space.name!r} or that space's checkpoint")
    try:
        space.validate(arch)
    except ArchError as e:
        raise ExtractError(f"the arch is outside the space of checkpoint {checkpoint}: {e}") from None
    model = net.extract(arch, out_indices)
    info = {"source": "supernet_checkpoint", "path": str(checkpoint),
            "supernet_resolution": getattr(net, "resolution", None)}
    if isinstance(meta, dict):
        info.update({k: meta[k] for k in ("epoch", "space", "data", "seed") if k in meta
                     and isinstance(meta[k], (str, int, float, bool))})
    return model, net.num_classes, info


def model_from_pretrained(arch, pretrained: str | os.PathLike, num_classes: int | None = None, out_indices=None):
    """The plain model of `arch` from an official, timm or hwnas checkpoint file.

    A checkpoint of a reference model is imported into the space's supernet by the sharing rule
    (`supernet.sharing`: a smaller reference, and Next-ViT-L in the supernet's wider NTB branches,
    land in the leading range of each tensor) and `arch` is extracted from it by the same rule --
    so the same file serves every subnet.
    A checkpoint of no reference (an hwnas `model.pt` of a searched subnet) must be exactly `arch`'s.
    """
    import supernet
    from supernet.pretrained import PretrainedError, format_report, load_pretrained

    num_classes = num_classes or 1000
    # a supernet holds one square size; a non-square arch gets its size-dependent tensors resampled
    # from it when extracted (set_active), as a square one of another size does on import
    res = arch.resolution if isinstance(arch.resolution, int) else None
    net = supernet.build_supernet(arch.space, num_classes=num_classes, resolution=res)
    try:
        report = load_pretrained(net, pretrained)
        model, how = net.extract(arch, out_indices), "imported into the supernet, arch extracted (first-k)"
    except PretrainedError as into_supernet:
        model = supernet.build_model(arch, num_classes=num_classes, out_indices=out_indices)
        try:
            report = load_pretrained(model, pretrained)
        except PretrainedError as e:
            why = str(into_supernet) if str(e) == str(into_supernet) else f"{into_supernet}; {e}"
            raise ExtractError(f"cannot import {pretrained}: {why}") from None
        if report["skipped"] or report["unexpected"] or report["missing"]:
            raise ExtractError(f"{pretrained} holds neither a reference model of {arch.space} nor this arch "
                               f"({into_supernet}); as this arch: {format_report(report)}")
        how = "imported into the static model of the arch"
    del net
    log.info("%s", format_report(report))
    info = {"source": "pretrained", "path": str(pretrained), "how": how, "layout": report["layout"],
            "source_arch": report["source_arch"], "kept_init": len(report["missing"]),
            "skipped": [k for k, _ in report["skipped"]]}
    return model, num_classes, info


def fresh_model(arch, num_classes: int | None = None, out_indices=None):
    import supernet
    log.warning("=" * 78)
    log.warning("NO WEIGHTS GIVEN (checkpoint= or pretrained=): exporting a FRESHLY INITIALISED model.")
    log.warning("Its outputs are meaningless; use it for latency and deployment tests only.")
    log.warning("=" * 78)
    num_classes = num_classes or 1000
    model = supernet.build_model(arch, num_classes=num_classes, out_indices=out_indices)
    return model, num_classes, {"source": "fresh_init"}


# ---- BatchNorm statistics ----------------------------------------------------------------------
def recalibrate(model, data_cfg, batches: int, batch_size: int = 32, seed: int = 0) -> dict:
    """Re-estimate the model's BatchNorm statistics on `batches` training batches of `data_cfg`,
    with the images at the model's deployment resolution (the statistics the export will see; a
    non-square input size: square images of its longer side, which the model takes as well)."""
    import torch
    from hwnas.data import build_loaders, data_config
    from hwnas.evaluate import recalibrate_bn

    res = max(model.arch.input_size)
    train, _, _ = build_loaders(data_cfg, image_size=res, batch_size=batch_size, seed=seed, augment=False)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    recalibrate_bn(model.to(device), train, batches)
    model.cpu().eval()
    return {"data": data_config(data_cfg).name, "batches": batches, "batch_size": batch_size,
            "image_size": res, "device": device}


def search_tables(run: str | os.PathLike) -> list[Path]:
    """The latency tables a search run predicted with (its `latency_source.json`) that still exist; [] for a
    run folder of an hwnas that did not record them. A table that is gone is said, not fatal: the export does
    not depend on a table."""
    import json
    path = Path(run) / "latency_source.json"
    if not path.is_file():
        return []
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        log.warning("%s: unreadable (%s); predicting with the shipped tables only", path, e)
        return []
    out = []
    for target, table in sorted(rec.items()):
        if Path(table).is_file():
            out.append(Path(table))
        else:
            log.warning("run=%s predicted %s with %s, which is no longer there; predicting with the shipped tables",
                        run, target, table)
    return out


# ---- latency: what each table timed vs what ships --------------------------------------------------
def deployed_latencies(model, arch, tables=None) -> dict:
    """The manifest's `predicted_latency_ms`: for every table covering the arch's space, the
    prediction (or why there is none: missing or stale rows) and the proof that the table timed
    what ships -- each block of this model in the table's deploy form (the very module a
    `torch_cuda` user runs, the graph the ONNX/Core ML exports are made from) has the fingerprint
    of the table's row for it."""
    import copy
    from hwnas.latency.predict import predicted_latencies, shipped_tables, table_key
    from hwnas.latency import LatencyTable
    from hwnas.latency.fingerprint import model_block_fingerprints, network_fingerprint
    from hwnas.latency.target import get_target

    tables = shipped_tables() if tables is None else [Path(t) for t in tables]
    out = predicted_latencies(arch, tables)
    for path in tables:
        key = table_key(path)
        if key not in out:
            continue
        try:
            table = LatencyTable.load(path)
            form, rows_form = table.deploy_form(), table.rows_form()
            pairs = model_block_fingerprints(rows_form.module(copy.deepcopy(model).cpu()), rows_form)
            shipped = pairs if table.rows_target == table.target else \
                model_block_fingerprints(form.module(copy.deepcopy(model).cpu()), form)
        except Exception as e:  # noqa: BLE001 -- recorded, not fatal: the export does not depend on a table
            out[key]["deploy"] = {"error": f"{type(e).__name__}: {e}"}
            continue
        differ = [k for k, fp in pairs if (table.rows.get(k) or {}).get("fingerprint") != fp]
        out[key]["deploy"] = {
            "form": form.describe(), "fingerprint": network_fingerprint([fp for _, fp in shipped]),
            "blocks": len(pairs), "blocks_timed_as_shipped": len(pairs) - len(differ),
            "timed_what_ships": not differ, "differing_blocks": differ[:5],
            "format": get_target(table.target).ships, "how": get_target(table.target).how_to_run(form),
            "settings": form.settings()}
        if table.rows_target != table.target:  # adapted across targets: rows of the form before its last step
            out[key]["deploy"].update({
                "rows_target": table.rows_target, "rows_form": rows_form.describe(),
                "what": f"each block's row was timed in the {table.rows_target} form of this very block (the "
                        f"module {table.target} compiles); whole networks were timed as {table.target} ships them "
                        f"to fit the correction"})
    return out


#: the torch_inductor form settings a package takes from the table that timed it (batch and precision follow
#: the export: its batch, and fp16 on CUDA / fp32 for a CPU package)
AOTI_FORM_KEYS = ("channels_last", "attention", "depthwise", "autotune")


def aoti_form_of(latency: dict, prefer=()) -> tuple[str | None, dict]:
    """(the table, the settings) format=aoti compiles with so that it ships what a torch_inductor table among
    `latency` (`deployed_latencies`) timed (depthwise as the table resolved it, autotune), the tables keyed in
    `prefer` (the search's own) first; (None, {}: the form's defaults) where no such table predicted this export."""
    for key in [k for k in prefer if k in latency] + sorted(k for k in latency if k not in prefer):
        p = latency[key]
        settings = (p.get("deploy") or {}).get("settings")
        if key.split("/")[0] == "torch_inductor" and settings:
            return key, {k: settings[k] for k in AOTI_FORM_KEYS if k in settings}
    return None, {}


def _replaced(out_dir) -> str:
    """What an export into `out_dir` replaces, said where the log says the export was written (the
    bundle replaces a folder's earlier export whole: docs/export.md, "Never half-written")."""
    import json
    try:
        old = json.loads((Path(out_dir) / "manifest.json").read_text())
        return f", replacing the export of {old['space']} arch {old['arch_id']} written {old['created']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


# ---- the app ---------------------------------------------------------------------------------------
def extract(arch: str | None = None, run: str | None = None, pick: str | None = None,
            checkpoint: str | None = None, pretrained: str | None = None,
            formats=("pt", "onnx"), out_dir: str | os.PathLike = ".", resolution=None,
            num_classes: int | None = None, data_cfg: Any = None, bn_batches: int = 16, bn_batch_size: int = 32,
            batch: int = 1, opset: int = 17, strict: bool = True, seed: int = 0,
            latency_tables: list | None = None, extra_files: dict | None = None,
            features_only: bool | None = None, out_indices=None) -> dict:
    """Every step of the app: resolve the arch, get the weights, recalibrate, export, check.
    Returns the manifest (also written to `out_dir/manifest.json`). `latency_tables`: the tables
    whose predictions and deploy-form fingerprints the manifest records (default: the shipped ones).
    `extra_files` (relative name -> text, e.g. the app's `.hydra/config.yaml`) are committed with
    the export. `features_only=True` exports the backbone (the stage outputs `out_indices`, default
    all; no head); None follows the arch (a backbone pick of a `task=backbone` search stays one)."""
    import torch
    from hwnas.export.bundle import write_export
    from hwnas.export.format import check_formats, preflight

    from hwnas._files import remove_stale_temps
    remove_stale_temps(out_dir)  # what a killed extract left in this folder, even if this one fails
    # bad formats fail before anything slow; `pt` (model.pt + arch.yaml) is always written, so every
    # export can be reloaded with hwnas.load(DIR) and re-exported later
    formats = check_formats(["pt", *check_formats(formats)])
    preflight(formats)
    if checkpoint and pretrained:
        raise ExtractError("give either checkpoint= (a supernet) or pretrained= (an official/timm "
                           "checkpoint), not both")
    for name, p in (("checkpoint", checkpoint), ("pretrained", pretrained)):
        if p and not Path(p).exists():
            raise ExtractError(f"{name}={p}: no such file")
    a, arch_source = resolve_arch(arch, run, pick, resolution, features_only)
    preflight(formats, a)  # formats that cannot be made for this arch (a backbone as aoti, not timm's as timm)
    if run and not checkpoint and not pretrained:
        checkpoint = search_weights(run, pick, a)
    if out_indices is not None:
        if a.task != "backbone":
            raise ExtractError("out_indices= picks the stages a backbone returns: add features_only=true")
        out_indices = [int(i) for i in out_indices]
    log.info("arch %s (%s): %s %s, %.2f M params, %.3f GMACs at %dx%d", a.id, arch_source, a.space, a.task,
             a.params() / 1e6, a.macs() / 1e9, *a.input_size)
    torch.manual_seed(seed)
    if checkpoint:
        model, n_cls, weights = model_from_checkpoint(a, checkpoint, out_indices)
    elif pretrained:
        model, n_cls, weights = model_from_pretrained(a, pretrained, num_classes, out_indices)
    else:
        model, n_cls, weights = fresh_model(a, num_classes, out_indices)
    weights["arch_source"] = arch_source
    if a.task == "classify" and n_cls != 1000:
        log.info("this export has a %d-class head: %.2f M params (the search and the latency tables count the "
                 "1000-class head, deploy_num_classes: %.2f M)", n_cls, a.params(n_cls) / 1e6, a.params() / 1e6)
    if data_cfg is not None:
        weights["bn_recalibration"] = recalibrate(model, data_cfg, bn_batches, bn_batch_size, seed)
        log.info("BatchNorm statistics re-estimated on %d batches of %d images", bn_batches, bn_batch_size)
    else:
        weights["bn_recalibration"] = None
        if checkpoint:
            log.warning("no data= given: BatchNorm statistics are the supernet's shared ones, not this "
                        "subnet's; pass data=... to re-estimate them (better accuracy)")
    from hwnas.latency.predict import shipped_tables, table_key
    searched = search_tables(run) if run and latency_tables is None else []
    if searched:  # the search's own tables too (profiled here, adapted, target.table=)
        shipped = shipped_tables()
        known = {p.resolve() for p in shipped}
        latency_tables = shipped + [p for p in searched if p.resolve() not in known]
    latency = deployed_latencies(model, a, latency_tables)
    aoti_table, aoti_form = (aoti_form_of(latency, prefer=[table_key(p) for p in searched]) if "aoti" in formats
                             else (None, {}))
    if aoti_table:
        log.info("format=aoti compiles as the torch_inductor table %s timed: %s", aoti_table,
                 ", ".join(f"{k}={v}" for k, v in aoti_form.items()))
    replaced = _replaced(out_dir)
    manifest = write_export(model, a, out_dir, formats, num_classes=n_cls, weights=weights, batch=batch,
                            opset=opset, log=log.info, latency=latency, extra_files=extra_files, aoti_form=aoti_form)
    head_only = []  # tables whose only untimed block is the classifier head (another class count)
    for key, p in manifest["predicted_latency_ms"].items():
        if p.get("ms") is not None:
            log.info("predicted latency %-40s %8.3f ms%s", key, p["ms"], "  (ESTIMATED table)" if p.get("estimated") else "")
        else:
            log.warning("no latency from %s: %s", key, p.get("error", "?"))
        d = p.get("deploy") or {}
        if d and not d.get("timed_what_ships", False):
            differ = d.get("differing_blocks") or []
            if not d.get("error") and d["blocks"] - d["blocks_timed_as_shipped"] == len(differ) \
                    and differ and all(".head(" in k for k in differ):
                head_only.append(key)
                continue
            log.warning("%s did not time this export's deploy form: %s", key,
                        d.get("error") or f"{d['blocks'] - d['blocks_timed_as_shipped']} of {d['blocks']} blocks "
                                          f"differ, e.g. {differ[:2]}")
    if head_only:  # one line, not one warning per table
        log.info("the predicted latencies are the arch's with the 1000-class head the tables timed (the search's "
                 "deploy_num_classes); this export's %d-class head is its only block they did not time (%s)",
                 n_cls, ", ".join(head_only))
    log.info("export written to %s (manifest.json)%s", Path(out_dir).resolve(), replaced)
    if not manifest["checks_passed"]:
        msg = "export checks FAILED: " + "; ".join(f"{k}: {v}" for k, v in manifest["errors"].items())
        if strict:
            raise ExtractError(msg + f" (the export and its manifest are in {out_dir}; strict=false "
                               "accepts a failed check)")
        log.error(msg)
    return manifest


@dataclass
class ExtractConfig:
    arch: Optional[str] = None  # reference name (nextvit_s, efficientformerv2_s1, ...) or arch YAML/JSON file
    run: Optional[str] = None  # a search run directory (holding picks.yaml) ...
    pick: Optional[str] = None  # ... and the pick's name in it (e.g. nextvit_s)
    checkpoint: Optional[str] = None  # supernet checkpoint (python -m hwnas.train)
    pretrained: Optional[str] = None  # official Next-ViT / EfficientFormerV2 or timm checkpoint file
    # any of pt onnx coreml tensorrt torchscript aoti timm: format=[pt,onnx] or format=onnx (Any: a list or one name)
    format: Any = field(default_factory=lambda: ["pt", "onnx"])
    input: Optional[Any] = None  # deployment input size [H, W] (or one int); null: the arch's own
    resolution: Optional[int] = None  # the same as one int (square); give one of input= and resolution=
    features_only: Optional[bool] = None  # true: the backbone (stage outputs, no head); null: as the arch says
    out_indices: Optional[Any] = None  # the stages a backbone returns (null: all four, strides 4/8/16/32)
    num_classes: Optional[int] = None  # pretrained / fresh init only (a checkpoint fixes it); null: 1000
    data: Any = None  # data group (data=digits, data=imagefolder ...): re-estimate BatchNorm statistics
    bn_batches: int = 16  # training batches for that (at the deployment resolution) ...
    bn_batch_size: int = 32  # ... of this many images
    batch: int = 1  # the static batch size of the exported models
    opset: int = 17  # ONNX opset: TensorRT 8.6+/10 and ONNX Runtime >= 1.14 all run 17
    strict: bool = True  # a failed export check is an error (exit status 2)
    seed: int = 0

    def __post_init__(self):
        from hwnas.export.format import check_formats
        from hwnas.latency.config import OPSETS
        check_formats(self.format if isinstance(self.format, str) else list(self.format))
        if self.resolution is not None and (self.resolution < 32 or self.resolution % 32):
            raise ExtractError(f"resolution={self.resolution}: must be a multiple of 32 (>= 32), or null for the "
                               "arch's own")
        check_min("", "num_classes", self.num_classes, 2, optional=True, hint="null: 1000", error=ExtractError)
        check_min("", "bn_batches", self.bn_batches, 1, error=ExtractError)
        check_min("", "bn_batch_size", self.bn_batch_size, 1, error=ExtractError)
        check_min("", "batch", self.batch, 1, error=ExtractError)
        check_range("", "opset", self.opset, *OPSETS, error=ExtractError)
        check_min("", "seed", self.seed, 0, error=ExtractError)


def _register() -> None:
    from hydra.core.config_store import ConfigStore
    from hwnas.config import register_common
    register_common()  # the data group's schema (the training app's)
    ConfigStore.instance().store(name="schema_app_extract", node=ExtractConfig)


def _task(cfg: Any, run_dir: Path) -> None:
    from omegaconf import ListConfig, OmegaConf
    if cfg.input is not None and cfg.resolution is not None:
        raise ExtractError("give the input size once: input=[H,W] (or resolution=R for a square one)")
    size = cfg.input if cfg.input is not None else cfg.resolution
    if isinstance(size, ListConfig):
        size = OmegaConf.to_container(size)
    out_indices = cfg.out_indices
    if isinstance(out_indices, ListConfig):
        out_indices = OmegaConf.to_container(out_indices)
    elif isinstance(out_indices, int):
        out_indices = [out_indices]
    from hwnas.cli import hydra_files
    extract(extra_files=hydra_files(cfg), arch=cfg.arch, run=cfg.run, pick=cfg.pick, checkpoint=cfg.checkpoint,
            pretrained=cfg.pretrained,
            formats=cfg.format if isinstance(cfg.format, str) else list(cfg.format), out_dir=run_dir,
            resolution=size, num_classes=cfg.num_classes, data_cfg=cfg.data,
            bn_batches=cfg.bn_batches, bn_batch_size=cfg.bn_batch_size, batch=cfg.batch, opset=cfg.opset,
            strict=cfg.strict, seed=cfg.seed, features_only=cfg.features_only, out_indices=out_indices)


def main() -> None:
    from hwnas.cli import run_app
    from hwnas.export import loads_cxx_packages
    run_app("extract", "extract", _task, register=_register, preload=loads_cxx_packages,
            interrupted="an export is written whole or not at all, so {run_dir} holds no half-made file; "
                        "rerun the same command to export again")


if __name__ == "__main__":
    main()
