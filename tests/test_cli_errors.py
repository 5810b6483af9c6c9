"""Bad input to the four apps, as a user types it (issue 18): every case ends in one line,
`hwnas.<app>: error: <what is wrong and what to do>`, exit status 2 and no traceback; nonsense
values fail at start-up, before Hydra makes the run folder (so before any training, table loading
or file written).

The command lines run in-process through the apps' own entry points (`hwnas.<app>.main()`, which
parses `sys.argv` like `python -m hwnas.<app>` does): the same runner, Hydra composition and
checks, without a Python start per case. The full-disk case needs a process of its own (a file
size limit), and tests/test_apps.py runs each app as a real process too.
"""
from __future__ import annotations

import argparse
import importlib
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import search_spaces

ENTRY = {"search": "hwnas.search.__main__", "train": "hwnas.train", "profile": "hwnas.profile",
         "extract": "hwnas.extract"}
SEARCH0 = ["+target=onnxruntime_cpu", "evaluator=proxy", "progress=false"]
SEARCH = [*SEARCH0, "search.n_trials=2"]
TRAIN = ["train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=8", "train.eval_calib_batches=0",
         "train.progress=false", "data.limit_train=16"]
PROFILE = ["+target=onnxruntime_cpu", "progress=false"]


def run_cli(app: str, args: list[str], run_dir: Path, monkeypatch, capsys) -> tuple[int, str]:
    """`python -m hwnas.<app> ARGS hydra.run.dir=RUN_DIR`, in this process: (exit status, stderr)."""
    monkeypatch.setattr(sys, "argv", [f"hwnas.{app}", *args, f"hydra.run.dir={run_dir}"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        importlib.import_module(ENTRY[app]).main()
    return e.value.code, capsys.readouterr().err


def assert_one_line(app: str, code: int, err: str, message: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith(f"hwnas.{app}: error: ")]
    assert code == 2, err[-3000:]
    assert len(lines) == 1 and message in lines[0], err[-3000:]
    assert "Traceback" not in err


# ---- files the cases read ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    (d / "random.bin").write_bytes(os.urandom(4096))
    (d / "corrupt_study").mkdir()
    (d / "corrupt_study" / "study.db").write_text("this is no SQLite database\n" * 40)
    (d / "bad_picks").mkdir()
    (d / "bad_picks" / "picks.yaml").write_text("efficientformerv2_s0: {pick: [1, 2\n  arch: {")
    arch = search_spaces.get_space("efficientformerv2").reference("efficientformerv2_s0").to_dict()
    import yaml
    (d / "other_space.yaml").write_text(yaml.safe_dump({**arch, "space": "nextvit"}))
    (d / "binary.yaml").write_bytes(os.urandom(512) + b"\xff\xfe")
    (d / "a_file").write_text("not a folder\n")
    (d / "tables").mkdir()
    (d / "truncated_run").mkdir()
    torch.save({"format": "hwnas.train_state", "blob": torch.zeros(50_000)}, d / "whole.pt")
    torch.save({"state_dict": {"w": torch.zeros(2)}, "args": argparse.Namespace(lr=0.1)}, d / "objects.pt")
    raw = (d / "whole.pt").read_bytes()
    (d / "truncated_run" / "train_state.pt").write_bytes(raw[: len(raw) // 2])
    return d


def _readonly_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write in: a read-only one, or (root ignores permissions) one in /sys."""
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    if os.access(d, os.W_OK):  # root
        return Path("/sys/hwnas-readonly-test")
    return d / "run"


# (app, arguments, what the one line says, fails at start-up: no run folder made)
CASES = {
    # issue 18, 3 and 9: budgets and counts out of range (search)
    "negative latency budget": ("search", [*SEARCH, "budget.latency_ms=-1"], "budget.latency_ms=-1.0: must be > 0", True),
    "zero latency budget": ("search", [*SEARCH, "budget.latency_ms=0"], "budget.latency_ms=0.0: must be > 0", True),
    "zero size budget": ("search", [*SEARCH, "budget.params_m=0"], "budget.params_m=0.0: must be > 0", True),
    "negative n_trials": ("search", [*SEARCH, "search.n_trials=-5"], "search.n_trials=-5: must be >= 1", True),
    "greedy takes no candidates": ("search", [*SEARCH0, "search=mes_greedy", "search.candidates_per_step=0"],
                                   "search.candidates_per_step=0: must be >= 1", True),
    "zero threads": ("search", [*SEARCH, "threads=0"], "threads=0: must be >= 1", True),
    "unknown objective": ("search", [*SEARCH, "search.objectives=[accuracy,speed]"], "search.objectives=", True),
    "no objectives": ("search", [*SEARCH, "search.objectives=[]"], "search.objectives=[]: each must be one of", True),
    # 9: internal schemas are no choices; a key the target does not take
    "base_target is no target": ("search", ["+target=base_target", "evaluator=proxy"],
                                 "target=base_target: no such option (the options of target: coreml, onnxruntime_cpu", True),
    "schema as a search strategy": ("search", [*SEARCH, "search=schema_search_nsga2"],
                                    "search=schema_search_nsga2: no such option", True),
    "key of another target": ("search", ["+target=torch_cuda", "evaluator=proxy", "target.clock=thread"],
                              "target.clock: no such key (the keys of target: name,", True),
    "target batch 0": ("search", [*SEARCH, "target.batch=0"], "target.batch=0: must be >= 1", True),
    # inf passes every lower bound: an infinite MES constant made every MES inf or 0
    "infinite MES score": ("search", [*SEARCH, "target.mes.score=inf"], "target.mes.score=inf: must be a finite number > 0", True),
    "infinite MES exponent": ("search", [*SEARCH, "target.mes.alpha_latency=inf"],
                              "target.mes.alpha_latency=inf: must be a finite number >= 0", True),
    # 8: storage URLs
    "bogus storage": ("search", [*SEARCH, "storage=bogus://x"], "storage=bogus://x: unknown database kind 'bogus'", True),
    "not a storage URL": ("search", [*SEARCH, "storage=not-a-url"], "storage=not-a-url: not a database URL", True),
    # 8: files a search reads
    "corrupt study.db": ("search", SEARCH, "study.db: not a readable SQLite database", False),
    "table is a folder": ("search", [*SEARCH, "target.table={files}/tables"], "is a folder, not a table file", False),
    "checkpoint is a folder": ("search", ["+target=onnxruntime_cpu", "progress=false", "checkpoint={files}"],
                               "a folder, not a checkpoint file", False),
    "checkpoint of random bytes": ("search", ["+target=onnxruntime_cpu", "progress=false",
                                              "checkpoint={files}/random.bin"], "not a PyTorch checkpoint file", False),
    "run folder is a file": ("search", [*SEARCH], "a_file is a file, not a folder", True),
    "unwritable run folder": ("search", [*SEARCH], "cannot write there", True),
    "unparsable override": ("search", [*SEARCH, "pretrain.overrides=[train.epochs=2]"],
                            "cannot read the command line", True),
    # issue 25, 4: the default evaluator (the shipped predictor) reads no data
    "own data with the predictor": ("search", ["+target=onnxruntime_cpu", "progress=false", "data=imagefolder",
                                               "data.root={files}"],
                                    "data=imagefolder: the accuracy predictor (the default evaluator) predicts top-1 "
                                    "on fashion_mnist from the arch alone and reads no data; to score archs on "
                                    "imagefolder, give evaluator=supernet checkpoint=SUPERNET", False),
    # 8, 9, 10: train
    "zero batch size": ("train", [*TRAIN, "train.batch_size=0"], "train.batch_size=0: must be >= 1", True),
    "zero epochs": ("train", [*TRAIN, "train.epochs=0"], "train.epochs=0: must be >= 1", True),
    "infinite lr": ("train", [*TRAIN, "train.lr=inf"], "train.lr=inf: must be a finite number > 0", True),
    "misspelt train key": ("train", [*TRAIN, "train.epoch=3"], "train.epoch: no such key (the keys of train: epochs,", True),
    "imagefolder without root": ("train", [*TRAIN, "data=imagefolder"], "data.root is not set", True),
    "bad device": ("train", [*TRAIN, "train.device=gpu"], "train.device='gpu': allowed: auto, cpu, cuda", True),
    "truncated training state": ("train", TRAIN, "truncated or corrupt training state", False),
    # 8, 9: profile
    "negative limit": ("profile", [*PROFILE, "limit=-1"], "limit=-1: must be >= 1", True),
    "negative n_fit": ("profile", [*PROFILE, "n_fit=-1"], "coreml.n_fit=-1: must be >= 0 (it is n_fit unless set: give n_fit=0 or more)", True),
    "unknown space": ("profile", [*PROFILE, "space=resnet"], "space=resnet: no such option", True),
    "opset of the target": ("profile", [*PROFILE, "target.opset=5"], "target.opset=5: must be in [13, 20]", True),
    "binary arch file to profile": ("profile", [*PROFILE, "archs=[{files}/binary.yaml]"],
                                    "is not a YAML/JSON arch file", False),
    # 8, 10: extract
    "extract batch 0": ("extract", ["arch=efficientformerv2_s0", "batch=0"], "batch=0: must be >= 1", True),
    "negative classes": ("extract", ["arch=efficientformerv2_s0", "num_classes=-3"], "num_classes=-3: must be >= 2", True),
    "no BN batches": ("extract", ["arch=efficientformerv2_s0", "bn_batches=0"], "bn_batches=0: must be >= 1", True),
    "opset 5": ("extract", ["arch=efficientformerv2_s0", "opset=5"], "opset=5: must be in [13, 20]", True),
    "corrupt picks.yaml": ("extract", ["run={files}/bad_picks", "pick=efficientformerv2_s0"],
                           "picks.yaml is not valid YAML", False),
    "binary arch file": ("extract", ["arch={files}/binary.yaml"], "is not a YAML/JSON arch file", False),
    # issue 24: a backbone as an AOTInductor package (was a traceback deep in torch.export)
    "aoti of a backbone": ("extract", ["arch=efficientformerv2_s0", "resolution=64", "format=[aoti]",
                                       "features_only=true"], "format=aoti packages a classifier", False),
    # issue 24: random bytes as pretrained= read as an unsafe-file refusal quoting torch's weights_only advice
    "pretrained of random bytes": ("extract", ["arch=efficientformerv2_s0", "format=pt",
                                               "pretrained={files}/random.bin"],
                                   "random.bin: not a PyTorch checkpoint file (it begins with bytes", False),
    "pretrained holding objects": ("extract", ["arch=efficientformerv2_s0", "format=pt",
                                               "pretrained={files}/objects.pt"],
                                   "objects.pt: holds Python objects besides tensors, which are not loaded", False),
    "arch file of the other space": ("extract", ["arch={files}/other_space.yaml"],
                                     "says space 'nextvit', but its stages are an arch of space 'efficientformerv2'", False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_user_error_is_one_line_exit_2_and_nonsense_fails_at_start_up(case, files, tmp_path, monkeypatch, capsys):
    app, args, message, at_start_up = CASES[case]
    args = [a.replace("{files}", str(files)) for a in args]
    run_dir = tmp_path / "run"
    if case == "corrupt study.db":
        run_dir = files / "corrupt_study"
    elif case == "truncated training state":
        run_dir = files / "truncated_run"
    elif case == "run folder is a file":
        run_dir = files / "a_file"
    elif case == "unwritable run folder":
        run_dir = _readonly_dir(tmp_path)
    code, err = run_cli(app, args, run_dir, monkeypatch, capsys)
    assert_one_line(app, code, err, message)
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err  # never that advice
    if at_start_up and case not in ("run folder is a file", "unwritable run folder"):
        assert not run_dir.exists(), "a start-up error must come before Hydra makes the run folder"


def test_profile_of_an_absent_runtime_is_one_line(tmp_path, monkeypatch, capsys):
    from hwnas.convert.tensorrt import tensorrt_available
    if tensorrt_available():
        pytest.skip("TensorRT is installed here")
    code, err = run_cli("profile", ["+target=tensorrt", "progress=false"], tmp_path / "run", monkeypatch, capsys)
    assert_one_line("profile", code, err, "TensorRT is not installed")


def test_a_missing_database_driver_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util
    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg is installed here")
    code, err = run_cli("search", [*SEARCH, "storage=postgresql://user@localhost/db"], tmp_path / "run",
                        monkeypatch, capsys)
    assert_one_line("search", code, err, "its database driver is not installed (No module named 'psycopg')")
    assert not (tmp_path / "run").exists()


def test_a_full_disk_is_one_line_naming_the_file(tmp_path):
    """A write the file system refuses (here: past a file-size limit, as a full disk refuses one)
    names the file and the reason, not torch's "unexpected pos"; nothing half-written is left."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "hwnas.extract", "arch=efficientformerv2_s0", "resolution=64",
                        "format=pt", f"hydra.run.dir={run_dir}"], capture_output=True, text=True, timeout=300,
                       preexec_fn=limit, cwd=tmp_path)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("hwnas.extract: error: ")]
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-3000:]
    assert "model.pt: File too large" in lines[0] and "unexpected pos" not in r.stderr and "Traceback" not in r.stderr
    assert not (run_dir / "model.pt").exists() and not list(run_dir.glob(".export-*"))


def test_help_lists_real_choices_only(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hwnas.search", "--help"])
    with pytest.raises(SystemExit) as e:
        importlib.import_module(ENTRY["search"]).main()
    out = capsys.readouterr().out
    assert e.value.code == 0 and "target: coreml, onnxruntime_cpu, tensorrt, torch_cuda" in out
    assert "base_" not in out and "schema_" not in out


def test_a_failed_extract_leaves_an_earlier_export_and_its_hydra_files(tmp_path, monkeypatch, capsys):
    """Issue 18, 7: the earlier export's `.hydra/` still describes the run that made it."""
    out = tmp_path / "export"
    monkeypatch.setattr(sys, "argv", ["hwnas.extract", "arch=efficientformerv2_s0", "resolution=64", "format=pt",
                                      "num_classes=10", f"hydra.run.dir={out}"])
    importlib.import_module(ENTRY["extract"]).main()
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".log"}
    assert Path(".hydra/config.yaml") in before and Path("model.pt") in before
    # a run that fails in its task (not at start-up): its checkpoint is no checkpoint
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(2048))
    code, err = run_cli("extract", ["arch=efficientformerv2_s0", "resolution=64", "format=pt", f"checkpoint={junk}"],
                        out, monkeypatch, capsys)
    assert_one_line("extract", code, err, "not a PyTorch checkpoint file")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.suffix != ".log"}
    assert after == before


# ---- issue 24: numbers that are not numbers --------------------------------------------------------
def _files_of(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.suffix != ".log"
            and ".hydra" not in p.parts}


def test_a_diverged_training_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path, monkeypatch, capsys):
    """A huge learning rate drove the loss to NaN: training exited 0 and wrote a NaN supernet, and
    resuming a good run with that setting overwrote its good checkpoint. Now such a resume is refused
    as another run's settings before a step (the good run's files byte for byte what they were), and a
    run that diverges names the step and exits 2."""
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["hwnas.train", *TRAIN, f"hydra.run.dir={run_dir}"])
    importlib.import_module(ENTRY["train"]).main()
    good = _files_of(run_dir)
    assert {Path("supernet.pt"), Path("train_state.pt")} <= set(good)
    code, err = run_cli("train", [*TRAIN, "train.max_steps_per_epoch=2", "train.epochs=3", "train.lr=1e30",
                                  "train.min_lr=0", "train.warmup_epochs=0"], run_dir, monkeypatch, capsys)
    assert_one_line("train", code, err, "written by a run with other settings")
    assert "train.lr=0.002 (this run: 1e+30)" in err
    assert _files_of(run_dir) == good
    # a fresh run with that setting leaves no checkpoint at all
    code, err = run_cli("train", [*TRAIN, "train.max_steps_per_epoch=2", "train.lr=1e30", "train.min_lr=0",
                                  "train.warmup_epochs=0"], tmp_path / "fresh", monkeypatch, capsys)
    assert_one_line("train", code, err, "at step 2 (epoch 1)")
    assert not (tmp_path / "fresh" / "supernet.pt").exists()


def test_nan_weights_are_refused_as_pretrained_and_as_checkpoint(tmp_path, monkeypatch, capsys):
    import supernet
    from hwnas.checkpoint import save_supernet
    space = search_spaces.get_space("efficientformerv2")
    net = supernet.build_supernet(space, num_classes=10, resolution=32)
    with torch.no_grad():
        net.head.fc.weight[0, 0] = float("nan")
    torch.save(net.state_dict(), tmp_path / "nan_weights.pth")  # the hwnas layout, as pretrained= reads it
    code, err = run_cli("train", [*TRAIN, f"train.pretrained={tmp_path / 'nan_weights.pth'}"], tmp_path / "run",
                        monkeypatch, capsys)
    assert_one_line("train", code, err, "nan_weights.pth: its weights hold NaN or inf (supernet tensor 'head.fc.weight')")
    assert not (tmp_path / "run" / "supernet.pt").exists()
    save_supernet(net, tmp_path / "nan_supernet.pt", {"data": "digits", "image_size": 32})
    code, err = run_cli("search", [*SEARCH0, "evaluator=supernet", "search.n_trials=2",
                                   f"checkpoint={tmp_path / 'nan_supernet.pt'}"], tmp_path / "s", monkeypatch, capsys)
    assert_one_line("search", code, err, "nan_supernet.pt: tensor 'head.fc.weight' holds NaN or inf")


BAD_BUDGETS = {
    "nan": (["budget.latency_ms=nan"], "budget.latency_ms=nan: must be > 0, a finite number of ms"),
    "inf": (["budget.params_m=inf"], "budget.params_m=inf: must be > 0, a finite number of millions of parameters"),
    "negative": (["budget.latency_ms=-3"], "budget.latency_ms=-3.0: must be > 0, a finite number of ms"),
    "a word": (["budget.latency_ms=fast"], "budget.latency_ms='fast': must be > 0, a finite number of ms"),
    "a list": (["budget.latency_ms=[1,2]"], "budget.latency_ms=[1, 2]: must be > 0, a finite number of ms"),
    "mapping of a word": (["budget.latency_ms={onnxruntime_cpu:fast}"],
                          "budget.latency_ms.onnxruntime_cpu='fast': must be > 0, a finite number of ms"),
    "nested mapping": (["budget.latency_ms={onnxruntime_cpu:{p10:3}}"],
                       "budget.latency_ms.onnxruntime_cpu={'p10': 3}: must be > 0, a finite number of ms"),
    "mapping of inf": (["budget.latency_ms={onnxruntime_cpu:inf}"],
                       "budget.latency_ms.onnxruntime_cpu=inf: must be > 0, a finite number of ms"),
}


@pytest.mark.parametrize("case", sorted(BAD_BUDGETS))
def test_a_malformed_or_non_finite_budget_is_one_config_line_at_start_up(case, tmp_path, monkeypatch, capsys):
    """Issue 24: a malformed budget mapping ended in a Python comparison error ('>' not supported
    between 'str' and 'int'), and inf or a mapping of inf was accepted."""
    args, message = BAD_BUDGETS[case]
    code, err = run_cli("search", [*SEARCH, *args], tmp_path / "run", monkeypatch, capsys)
    assert_one_line("search", code, err, message)
    assert not (tmp_path / "run").exists()


def test_synthetic_data_is_refused_as_a_search_accuracy_source(tmp_path, monkeypatch, capsys):
    """Issue 24: data=synthetic (random labels) was accepted as the data a search scores subnets on,
    and with no checkpoint= it trained the built-in supernet on it at 224 px (up to 9 GB)."""
    monkeypatch.setenv("HOME", str(tmp_path))  # where the built-in supernet would be trained and cached
    code, err = run_cli("search", ["+target=onnxruntime_cpu", "progress=false", "search.n_trials=2",
                                   "evaluator=supernet", "data=synthetic", "data.image_size=224"],
                        tmp_path / "run", monkeypatch, capsys)
    assert_one_line("search", code, err, "data=synthetic with evaluator=supernet: synthetic data has random labels")
    assert not (tmp_path / "run").exists() and not (tmp_path / ".cache").exists()


# ---- issue 24: writes, Ctrl-C, misleading fixes ------------------------------------------------------
def test_profile_out_without_csv_is_refused_and_leaves_the_table_of_that_name(tmp_path, monkeypatch, capsys):
    """`out=DIR/NAME` (no `.csv`) wrote its provenance to `DIR/NAME.json`: the `.json` of the complete
    table `DIR/NAME.csv`, which then no longer loaded. Refused at once, the table untouched."""
    (tmp_path / "cpu.csv").write_text("key,median_ms\n")
    (tmp_path / "cpu.json").write_text('{"complete": {"efficientformerv2": true}}\n')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for out in ("cpu", "cpu.json", "cpu.partial.csv"):
        code, err = run_cli("profile", [*PROFILE, f"out={tmp_path / out}", "limit=1"], tmp_path / "run",
                            monkeypatch, capsys)
        assert_one_line("profile", code, err, f"give out={tmp_path / 'cpu.csv'}")
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != "run"} == before


def test_profile_never_writes_into_the_shipped_tables(tmp_path, monkeypatch, capsys):
    from hwnas.latency.table import TABLES_DIR
    before = sorted(p.name for p in TABLES_DIR.rglob("*"))
    for arg in (f"tables_dir={TABLES_DIR}", f"out={TABLES_DIR / 'onnxruntime_cpu' / 'mine.csv'}"):
        code, err = run_cli("profile", [*PROFILE, arg, "limit=1"], tmp_path / "run", monkeypatch, capsys)
        assert_one_line("profile", code, err, "inside the tables shipped with hwnas")
    assert sorted(p.name for p in TABLES_DIR.rglob("*")) == before


def test_profile_writes_to_a_user_folder_by_default(tmp_path):
    """No `tables_dir=`/`out=`: the table goes to `outputs/latency_tables/` under the working folder,
    never into the package (here the source tree of an editable install)."""
    r = subprocess.run([sys.executable, "-m", "hwnas.profile", *PROFILE, "limit=1", "target.canary=false",
                        f"hydra.run.dir={tmp_path / 'run'}"], capture_output=True, text=True, timeout=300,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert list((tmp_path / "outputs" / "latency_tables" / "onnxruntime_cpu").glob("*.partial.csv")), r.stderr[-2000:]


@pytest.mark.parametrize("app,task,kept", [
    ("search", "hwnas.search.app.run", "resume it with the same command and hydra.run.dir="),
    ("train", "hwnas.train._task", "no epoch finished"),  # interrupted before one: it names what is (not) kept
    ("profile", "hwnas.profile.run", "rerun the same command to resume"),
    ("extract", "hwnas.extract._task", "no half-made file"),
])
def test_ctrl_c_is_one_line_saying_what_was_kept_and_how_to_resume(app, task, kept, tmp_path, monkeypatch, capsys):
    def interrupted(*_a, **_k):
        raise KeyboardInterrupt
    monkeypatch.setattr(task, interrupted)
    args = {"search": SEARCH, "train": TRAIN, "profile": PROFILE, "extract": ["arch=efficientformerv2_s0"]}[app]
    code, err = run_cli(app, args, tmp_path / "run", monkeypatch, capsys)
    lines = [ln for ln in err.splitlines() if ln.startswith(f"hwnas.{app}: interrupted (Ctrl-C); ")]
    assert code == 130 and len(lines) == 1 and kept in lines[0], err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_a_write_failure_outside_the_run_folder_does_not_suggest_moving_the_run_folder(tmp_path):
    import errno
    from hwnas.cli import environment_message
    run = tmp_path / "run"
    cache = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache" / "supernet.pt"))
    msg = environment_message(cache, run)
    assert "disk is full" in msg and str(tmp_path / "cache") in msg and "hydra.run.dir" not in msg
    inside = OSError(errno.ENOSPC, "No space left on device", str(run / "model.pt"))
    assert "hydra.run.dir=DIR" in environment_message(inside, run)


def test_the_storage_proxy_and_predictor_fit_on_bad_input_are_one_line(files, capsys):
    """`python -m hwnas.search.server --storage bogus://x` (a SQLAlchemy traceback) and
    `python -m hwnas.predictor fit` on a binary file (a UnicodeDecodeError traceback)."""
    from hwnas.predictor import main as predictor_main
    from hwnas.search.server import main as server_main
    for url, says in (("bogus://x", "unknown database kind 'bogus'"), ("not-a-url", "not a database URL")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            server_main(["--storage", url, "--port", "0"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith(f"hwnas.search.server: error: --storage {url}: {says}"), err
        assert len(err.strip().splitlines()) == 1 and "null for sqlite" not in err
    code = predictor_main(["fit", "--space", "efficientformerv2", str(files / "random.bin"), "--out",
                           str(files / "p.json")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hwnas.predictor: error: ") and "random.bin: not a text file" in err, err
    assert len(err.strip().splitlines()) == 1 and not (files / "p.json").exists()


def test_aoti_without_a_cxx_compiler_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no g++ (nor anything else) on PATH
    code, err = run_cli("extract", ["arch=efficientformerv2_s0", "resolution=64", "format=[aoti]"], tmp_path / "run",
                        monkeypatch, capsys)
    assert_one_line("extract", code, err, "format=aoti compiles C++ (AOTInductor) and finds no C++ compiler here "
                                          "(g++ is not on PATH)")
    assert not list((tmp_path / "run").glob("model.*"))


def test_a_tiny_image_folder_names_the_searchs_own_batch_size_key(tmp_path, monkeypatch, capsys):
    """Issue 24: a search on a tiny image folder was told to lower train.batch_size, a key the search
    refuses; the line now gives the pretrain.overrides that the search takes (quoted as Hydra reads it)."""
    import numpy as np
    from PIL import Image
    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / "img" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 60 * i, dtype=np.uint8)).save(tmp_path / "img" / split / c / f"{i}.png")
    code, err = run_cli("search", ["+target=onnxruntime_cpu", "progress=false", "evaluator=supernet", "data=imagefolder",
                                   f"data.root={tmp_path / 'img'}", "data.image_size=32",
                                   f"pretrain.cache_dir={tmp_path / 'cache'}"], tmp_path / "run", monkeypatch, capsys)
    assert_one_line("search", code, err, "the training set has 4 samples")
    line = next(ln for ln in err.splitlines() if ln.startswith("hwnas.search: error: "))
    assert "'pretrain.overrides=[" in line and '"train.batch_size=N"]' in line and "N <= 4" in line
    assert "lower train.batch_size" not in line


def test_ctrl_c_in_predictor_pairs_says_the_pairs_are_kept(tmp_path, monkeypatch, capsys):
    import hwnas.predictor as predictor

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt
    monkeypatch.setattr(predictor, "measure_pairs", interrupted)
    code = predictor.main(["pairs", "--checkpoint", str(tmp_path / "s.pt"), "--out", str(tmp_path / "p.jsonl")])
    err = capsys.readouterr().err
    assert code == 130 and err.strip() == (f"hwnas.predictor: interrupted (Ctrl-C); every pair measured so far is in "
                                           f"{tmp_path / 'p.jsonl'}; rerun the same command to measure the rest")


def test_a_full_disk_at_start_is_named_a_full_disk(tmp_path, monkeypatch, capsys):
    """Issue 24: a full disk at start is said as a full disk, in one line, before anything runs."""
    import errno
    import tempfile

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(tempfile, "mkstemp", full)
    code, err = run_cli("search", SEARCH, tmp_path / "run", monkeypatch, capsys)
    assert_one_line("search", code, err, "the disk is full (No space left on device); free some space on it")
