"""`python -m hwnas.extract`: where the arch and the weights come from, and its clear errors.

The first-k test slices the "official" Next-ViT-L weights by hand, written here independently of
`supernet.sharing`, and compares with what the app extracts from a supernet that imported them.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import hwnas
import search_spaces
import supernet
from hwnas.extract import ExtractError, extract, model_from_pretrained, read_pick, resolve_arch
from search_spaces import Arch, ArchError

ROOT = Path(__file__).resolve().parents[1]
RES = 32


def write_picks(run_dir: Path, picks: dict) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "picks.yaml").write_text(yaml.safe_dump(picks, sort_keys=False))
    return run_dir


def search_picks(arch: Arch) -> dict:
    """picks.yaml as `python -m hwnas.search` writes it: per reference, the reference and its pick."""
    ref = {"arch_id": "x", "accuracy": 50.0, "latency_ms": 1.0, "params": 1, "mes": 1.0}
    return {"efficientformerv2_s0": {"reference": ref, "pick": dict(ref, arch_id=arch.id, trial=3,
                                                                     arch=arch.to_dict())},
            "efficientformerv2_l": {"reference": ref, "pick": None}}


# ---- the arch --------------------------------------------------------------------------------------
def test_arch_from_a_reference_name_a_file_or_a_pick(tmp_path):
    ref = search_spaces.get_space("nextvit").reference("nextvit_s")
    assert resolve_arch("nextvit_s")[0] == ref
    assert resolve_arch("nextvit_s", resolution=64)[0] == ref.with_resolution(64)
    arch = search_spaces.get_space("efficientformerv2", resolution=RES).min_arch()
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(arch.to_dict()))
    (tmp_path / "a.json").write_text(json.dumps(arch.to_dict()))
    assert resolve_arch(str(tmp_path / "a.yaml"))[0] == arch
    assert resolve_arch(str(tmp_path / "a.json"))[0] == arch
    run = write_picks(tmp_path / "run", search_picks(arch))
    got, source = resolve_arch(run=str(run), pick="efficientformerv2_s0")
    assert got == arch and "efficientformerv2_s0" in source
    write_picks(tmp_path / "bare", {"mine": {"arch": arch.to_dict(), "accuracy": 1.0}})
    assert read_pick(tmp_path / "bare", "mine") == arch


def test_a_missing_pick_is_a_clear_error_listing_the_picks(tmp_path):
    arch = search_spaces.get_space("efficientformerv2", resolution=RES).min_arch()
    run = write_picks(tmp_path / "run", search_picks(arch))
    with pytest.raises(ExtractError, match=r"no pick 'nextvit_s'.*available picks.*efficientformerv2_l.*efficientformerv2_s0"):
        resolve_arch(run=str(run), pick="nextvit_s")
    with pytest.raises(ExtractError, match=r"needs pick=NAME.*efficientformerv2_s0"):
        resolve_arch(run=str(run))
    with pytest.raises(ExtractError, match=r"pick 'efficientformerv2_l' .* is empty"):
        resolve_arch(run=str(run), pick="efficientformerv2_l")
    with pytest.raises(ExtractError, match="no picks.yaml"):
        resolve_arch(run=str(tmp_path / "nowhere"), pick="x")


def test_bad_arch_inputs_are_clear_errors(tmp_path):
    with pytest.raises(ExtractError, match=r"neither a reference name.*nextvit_s"):
        resolve_arch("nextvit_xl")
    with pytest.raises(ExtractError, match="no architecture given"):
        resolve_arch()
    with pytest.raises(ExtractError, match="not both"):
        resolve_arch("nextvit_s", run=str(tmp_path), pick="x")
    d = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0").to_dict()
    d["stages"][2]["width"] = 100
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(ArchError, match=r"stages\[2\]\.width"):
        resolve_arch(str(tmp_path / "bad.yaml"))
    for size in ([224], 33, (224, 100)):  # [224] was an IndexError
        with pytest.raises(ArchError, match=rf"input: {re.escape(repr(size))} is not a supported input size"):
            resolve_arch("nextvit_s", resolution=size)
    # a pick whose arch was edited by hand is not the arch its figures (and arch_id) are of
    arch = search_spaces.get_space("efficientformerv2", resolution=RES).min_arch()
    picks = search_picks(arch)
    picks["efficientformerv2_s0"]["pick"]["arch"] = search_spaces.get_space("efficientformerv2", resolution=RES) \
        .max_arch().to_dict()
    run = write_picks(tmp_path / "edited", picks)
    with pytest.raises(ExtractError, match=rf"records arch_id {arch.id}, but its arch is \w+: the file was edited"):
        resolve_arch(run=str(run), pick="efficientformerv2_s0")


# ---- weights from a supernet checkpoint --------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from hwnas.checkpoint import save_supernet
    torch.manual_seed(0)
    net = supernet.build_supernet("efficientformerv2", num_classes=10, resolution=RES)
    for m in net.modules():  # statistics and LayerScales of a trained net, not the init values
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
        if hasattr(m, "gamma"):
            m.gamma.data.uniform_(0.3, 1.0)
    path = tmp_path_factory.mktemp("ckpt") / "supernet.pt"
    save_supernet(net, path, {"epoch": 2})
    return path, net.eval()


def test_extract_from_a_checkpoint_gives_the_supernets_subnet(checkpoint, tmp_path):
    path, net = checkpoint
    arch = search_spaces.get_space("efficientformerv2", resolution=RES).sample(__import__("random").Random(4))
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(arch.to_dict()))
    manifest = extract(arch=str(tmp_path / "arch.yaml"), checkpoint=str(path), formats=["pt", "onnx"],
                       out_dir=tmp_path / "out")
    assert manifest["checks_passed"] and manifest["weights"]["source"] == "supernet_checkpoint"
    assert manifest["num_classes"] == 10 and manifest["params"] == arch.params(10)
    want = net.extract(arch).state_dict()
    got = hwnas.load(tmp_path / "out").state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_an_arch_outside_the_checkpoints_space_is_a_clear_error(checkpoint, tmp_path):
    path, _ = checkpoint
    with pytest.raises(ExtractError, match=r"space 'nextvit' but checkpoint .* holds a 'efficientformerv2' supernet"):
        extract(arch="nextvit_s", resolution=RES, checkpoint=str(path), formats=["pt"], out_dir=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_unknown_format_fails_before_any_work(tmp_path):
    from hwnas.export.bundle import ExportError
    with pytest.raises(ExportError, match=r"unknown export format 'pth'.*pt.*onnx.*coreml.*tensorrt.*torchscript"):
        extract(arch="nextvit_xl", formats=["pt", "pth"], out_dir=tmp_path / "o")  # the arch is bad too


# ---- first-k from imported Next-ViT-L weights, sliced by hand -------------------------------------------
NMAX = (3, 3, 4, 2)  # Next-ViT-L's NCBs per pattern, per stage (the supernet holds L)


def l_position(stage: int, j: int, n: int) -> int:
    """Where block j of a stage with n NCBs per pattern sits in Next-ViT-L's stage."""
    if stage == 0:
        return j
    p, q = divmod(j, n + 1)
    return p * (NMAX[stage] + 1) + (q if q < n else NMAX[stage])


L_BRANCHES = {1: (192, 64), 2: (384, 128), 3: (768, 256)}  # Next-ViT-L's NTBs: (E-MHSA, MHCA) per stage
NTB_OUT = {"norm2.weight": 0, "norm2.bias": 0, "norm2.running_mean": 0, "norm2.running_var": 0,
           "mlp.fc1.weight": 1, "mlp.fc2.weight": 0, "mlp.fc2.bias": 0}


def _branch_index(sub: tuple, held: tuple) -> torch.Tensor:
    """Channels [0, mhsa) of L's E-MHSA range and [0, mhca) of its MHCA range, in L's concatenation."""
    return torch.cat([torch.arange(sub[0]), held[0] + torch.arange(sub[1])])


def hand_sliced(l_state: dict, arch: Arch, sub_state: dict) -> dict:
    """The subnet's tensors taken from L's: block positions as above, the leading corner of each --
    except the dimensions that index an NTB's concatenation [E-MHSA, MHCA] (the NTB's norm2 and MLP,
    the next NCB's input projection, the head), which take the leading channels of each branch."""
    layout = arch.layout()
    branches = {}  # static block prefix -> (its output branches if an NTB, its input branches)
    prev = None
    for s, st in enumerate(layout.stages):
        for j, p in enumerate(st.blocks):
            out = ((p.spec["mhsa"], p.spec["out"] - p.spec["mhsa"]), L_BRANCHES[s]) if p.spec.kind == "nextvit.ntb" else None
            branches[f"stages.{s}.blocks.{j}."] = (out, prev)
            prev = out
    branches["head."] = (None, prev)
    out = {}
    for key, t in sub_state.items():
        parts = key.split(".")
        index = [torch.arange(n) for n in t.shape]
        prefix = ".".join(parts[:4]) + "." if parts[0] == "stages" else parts[0] + "."
        own, inp = branches.get(prefix, (None, None))
        name = key[len(prefix):]
        if own is not None and name in NTB_OUT:
            index[NTB_OUT[name]] = _branch_index(*own)
        if inp is not None and t.dim() and (name == "patch_embed.conv.weight" or (prefix == "head." and name != "fc.bias")):
            index[1 if name.endswith("conv.weight") or name == "fc.weight" else 0] = _branch_index(*inp)
        if parts[0] == "stages":
            s, j = int(parts[1]), int(parts[3])
            parts[3] = str(l_position(s, j, arch.stages[s]["n"]))
        src = l_state.get(".".join(parts))
        if src is not None:
            for d, i in enumerate(index):
                src = src.index_select(d, i)
            out[key] = src
    return out


@pytest.fixture(scope="module")
def official_l(tmp_path_factory):
    """Stand-in for the official Next-ViT-L checkpoint: random tensors of `build_model(nextvit_l)`."""
    arch = search_spaces.get_space("nextvit").reference("nextvit_l")
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in supernet.DeployModel(arch, init=False).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    state = {}
    for k, (shape, dtype) in shapes.items():
        if not dtype.is_floating_point:
            state[k] = torch.zeros(shape, dtype=dtype)
        elif k.endswith("running_var"):
            state[k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[k] = torch.randn(shape, generator=g) * 0.05
    path = tmp_path_factory.mktemp("official") / "nextvit_large.pth"
    torch.save(state, path)
    return path, state


def _custom_nextvit() -> Arch:
    d = search_spaces.get_space("nextvit").reference("nextvit_s").to_dict()
    d["stages"][0].update(n=2, ncb_width=64)
    d["stages"][1].update(n=2, ncb_width=160, ntb_width=160, r=1.0, ncb_mlp_ratio=2)
    d["stages"][2].update(n=2, l=3, ncb_width=320, ntb_width=448, r=0.75, ntb_mlp_ratio=1.5)
    d["stages"][3].update(n=1, ncb_width=640, ntb_width=768, r=1.0)
    return Arch.from_dict(d)


@pytest.mark.parametrize("which", ["nextvit_s", "narrower"])
def test_extract_from_imported_l_weights_is_first_k_by_hand(official_l, which):
    path, l_state = official_l
    arch = search_spaces.get_space("nextvit").reference("nextvit_s") if which == "nextvit_s" else _custom_nextvit()
    search_spaces.get_space("nextvit").validate(arch)
    model, num_classes, info = model_from_pretrained(arch, path)
    assert info["source_arch"] == "nextvit_l" and num_classes == 1000
    got = model.state_dict()
    want = hand_sliced(l_state, arch, got)
    # L has no input projection in front of E-MHSA; a subnet whose NCB width differs from its
    # E-MHSA width needs one, which keeps the supernet's initialisation: those and only those differ.
    not_from_l = sorted(set(got) - set(want))
    assert all(".patch_embed." in k and k.startswith("stages.") for k in not_from_l), not_from_l
    assert bool(not_from_l) == (which == "narrower")
    for k, t in want.items():
        assert torch.equal(got[k], t), k


# ---- the app on the command line -------------------------------------------------------------------------
def run_app(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HYDRA_FULL_ERROR="0")
    return subprocess.run([sys.executable, "-m", "hwnas.extract", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_app_extracts_a_pick_from_a_checkpoint(checkpoint, tmp_path):
    path, net = checkpoint
    arch = search_spaces.get_space("efficientformerv2", resolution=RES).min_arch()
    run = write_picks(tmp_path / "search", search_picks(arch))
    out = tmp_path / "export"
    r = run_app(f"run={run}", "pick=efficientformerv2_s0", f"checkpoint={path}", "format=[onnx]",
                f"hydra.run.dir={out}", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("model.pt", "arch.yaml", "model.onnx", "manifest.json"):  # pt comes with every export
        assert (out / name).exists(), name
    m = json.loads((out / "manifest.json").read_text())
    assert m["arch_id"] == arch.id and m["checks_passed"] and m["weights"]["path"] == str(path)
    assert hwnas.load(out).arch == arch


def test_the_app_reports_a_missing_pick_and_an_unknown_format_clearly(tmp_path):
    arch = search_spaces.get_space("efficientformerv2", resolution=RES).min_arch()
    run = write_picks(tmp_path / "search", search_picks(arch))
    r = run_app(f"run={run}", "pick=nextvit_b", f"hydra.run.dir={tmp_path / 'a'}", cwd=tmp_path)
    assert r.returncode != 0
    assert "no pick 'nextvit_b'" in r.stderr and "available picks" in r.stderr and "Traceback" not in r.stderr
    r = run_app("arch=nextvit_s", "format=[onnx,tflite]", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert r.returncode != 0 and "unknown export format 'tflite'" in r.stderr and "Traceback" not in r.stderr
    assert not list((tmp_path / "b").glob("model.*"))


# ---- issue 24: a pick carries the weights its search scored with ------------------------------------
def _record(run: Path, **rec) -> None:
    from hwnas.search.app import AccuracySource, write_accuracy_source
    write_accuracy_source(run, AccuracySource(None, rec.get("label", ""), None, "", record=rec))


def test_a_pick_carries_the_weights_its_search_scored_with_or_is_refused(checkpoint, tmp_path):
    """`extract run=DIR pick=NAME` without checkpoint= exported random weights after a search on the
    built-in supernet. Now it takes the supernet the run folder records (checked by content hash), and
    refuses in one line naming checkpoint= when that file changed or the search had no weights."""
    import shutil
    from hwnas.extract import ExtractError, extract
    from hwnas.search.app import _file_digest
    path, _ = checkpoint
    ckpt = tmp_path / "supernet.pt"
    shutil.copyfile(path, ckpt)
    arch = search_spaces.get_space("efficientformerv2", resolution=RES).min_arch()
    run = write_picks(tmp_path / "search", search_picks(arch))
    _record(run, evaluator="supernet", builtin=True,
            weights=dict(checkpoint=str(ckpt), sha1_16=_file_digest(ckpt), num_classes=10))
    m = extract(run=str(run), pick="efficientformerv2_s0", formats=["pt"], out_dir=tmp_path / "e")
    assert m["weights"]["path"] == str(ckpt) and m["weights"]["source"] != "fresh_init"
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")  # another supernet under that name
    with pytest.raises(ExtractError, match="has changed since.*pass checkpoint= that supernet"):
        extract(run=str(run), pick="efficientformerv2_s0", formats=["pt"], out_dir=tmp_path / "e2")
    _record(run, evaluator="predictor", weights=None)
    with pytest.raises(ExtractError, match="accuracy predictor, which holds no weights: pass checkpoint= a "
                                           "efficientformerv2 supernet"):
        extract(run=str(run), pick="efficientformerv2_s0", formats=["pt"], out_dir=tmp_path / "e3")
    assert not (tmp_path / "e2" / "model.pt").exists() and not (tmp_path / "e3" / "model.pt").exists()


def test_a_pick_is_predicted_and_compiled_with_the_tables_its_search_used(tmp_path, caplog):
    """A search on a table that is not shipped (profiled here, adapted, `target.table=`): `extract run=` predicted
    the pick with the shipped tables only, and compiled format=aoti with the form's defaults instead of the
    settings that table timed (issue 27: max_autotune for a table timed without it). The run folder's
    `latency_source.json` now names the search's tables; a table that is gone is said, not fatal."""
    import logging
    import shutil
    from hwnas.extract import aoti_form_of
    from hwnas.latency.predict import shipped_tables
    from hwnas.search.app import write_latency_source
    src = next(p for p in shipped_tables() if p.parent.name == "onnxruntime_cpu")
    mine = tmp_path / "tables" / "onnxruntime_cpu" / "my-cpu.csv"
    mine.parent.mkdir(parents=True)
    for suffix in (".csv", ".json", ".networks.csv"):
        shutil.copyfile(src.with_name(src.stem + suffix), mine.with_name(mine.stem + suffix))
    arch = search_spaces.get_space("efficientformerv2").min_arch()
    run = write_picks(tmp_path / "search", search_picks(arch))
    write_latency_source(run, {"onnxruntime_cpu": mine})
    m = extract(run=str(run), pick="efficientformerv2_s0", formats=["pt"], out_dir=tmp_path / "e")
    pred = m["predicted_latency_ms"]
    assert pred["onnxruntime_cpu/my-cpu.csv"]["ms"] == pred[f"onnxruntime_cpu/{src.name}"]["ms"] > 0
    assert pred["onnxruntime_cpu/my-cpu.csv"]["deploy"]["timed_what_ships"]
    m = extract(run=str(run), pick="efficientformerv2_s0", formats=["pt"], out_dir=tmp_path / "e2",
                latency_tables=[src])  # tables given: those only
    assert "onnxruntime_cpu/my-cpu.csv" not in m["predicted_latency_ms"]
    mine.unlink()
    with caplog.at_level(logging.WARNING, logger="hwnas.extract"):
        m = extract(run=str(run), pick="efficientformerv2_s0", formats=["pt"], out_dir=tmp_path / "e3")
    assert "onnxruntime_cpu/my-cpu.csv" not in m["predicted_latency_ms"]
    assert any("which is no longer there" in r.getMessage() for r in caplog.records)
    # format=aoti compiles as the search's torch_inductor table timed, before any other one
    timed = {k: {"deploy": {"settings": {"channels_last": True, "depthwise": d, "autotune": t}}}
             for k, d, t in (("torch_inductor/a.csv", "auto", True), ("torch_inductor/b.csv", "cudnn", False))}
    assert aoti_form_of(timed) == ("torch_inductor/a.csv", {"channels_last": True, "depthwise": "auto", "autotune": True})
    assert aoti_form_of(timed, prefer=["torch_inductor/b.csv"]) == (
        "torch_inductor/b.csv", {"channels_last": True, "depthwise": "cudnn", "autotune": False})


def test_another_class_count_is_said_once_with_both_param_counts(tmp_path, caplog):
    """Issue 24: the search reports params with the 1000-class head, the extract exported 10 classes and
    warned once per shipped table that the tables did not time it. Now: one line with both counts, one
    line saying the head is the only block the tables did not time, and no warning about it."""
    import logging
    arch = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0")
    with caplog.at_level(logging.INFO, logger="hwnas.extract"):
        m = extract(arch="efficientformerv2_s0", num_classes=10, formats=["pt"], out_dir=tmp_path / "e")
    assert m["params"] == arch.params(10)
    msgs = [r.getMessage() for r in caplog.records if r.name == "hwnas.extract"]
    assert [x for x in msgs if x.startswith("this export has a 10-class head")] == [
        f"this export has a 10-class head: {arch.params(10) / 1e6:.2f} M params (the search and the latency tables "
        f"count the 1000-class head, deploy_num_classes: {arch.params() / 1e6:.2f} M)"]
    assert len([x for x in msgs if "10-class head is its only block they did not time" in x]) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "did not time" in r.getMessage()]


def test_an_export_over_another_says_what_it_replaces(tmp_path, caplog):
    import logging
    with caplog.at_level(logging.INFO, logger="hwnas.extract"):
        first = extract(arch="efficientformerv2_s0", num_classes=10, formats=["pt"], out_dir=tmp_path / "e")
        written = [r.getMessage() for r in caplog.records if r.getMessage().startswith("export written to")]
        caplog.clear()
        extract(arch="efficientformerv2_s1", num_classes=10, formats=["pt"], out_dir=tmp_path / "e")
    assert written and "replacing" not in written[0]  # a fresh folder replaces nothing
    again = [r.getMessage() for r in caplog.records if r.getMessage().startswith("export written to")]
    assert again == [f"export written to {(tmp_path / 'e').resolve()} (manifest.json), replacing the export of "
                     f"efficientformerv2 arch {first['arch_id']} written {first['created']}"]
