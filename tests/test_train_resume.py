"""Resuming a supernet training: what a rerun continues, what it refuses, what it repairs.

- A rerun with settings that change the result (learning rate, epochs, data subset, steps per epoch,
  micro-batch, ...) is refused with one line naming every differing key and both values; settings
  that cannot change the weights (progress bar, time limit, evaluation, workers) are accepted.
- Ctrl-C between `train_state.pt` and `supernet.pt` of the last epoch: the line says what is on
  disk, and the rerun brings `supernet.pt` and `metrics.csv` up to the state.

Tiny on purpose: digits at 32 px, one step of batch 8 per epoch, no random subnets.
"""
import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hwnas.checkpoint import CheckpointError, load_supernet
from hwnas.train import train_supernet

ROOT = Path(__file__).resolve().parents[1]
RUN = ["space=efficientformerv2", "data=digits", "data.limit_train=96", "train.batch_size=8",
       "train.max_steps_per_epoch=1", "train.num_random=0", "train.eval_calib_batches=0", "train.progress=false",
       "train.epochs=2"]


def compose(*overrides):
    from hwnas.config import compose as _compose
    return _compose("train", overrides)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished")
    train_supernet(compose(*RUN), out)
    return out


def test_a_rerun_with_other_settings_is_refused_naming_every_difference(finished):
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    changed = ["train.lr=0.05", "data.limit_train=400", "train.max_steps_per_epoch=3", "train.label_smoothing=0",
               "train.epochs=3"]  # a finished run extended: its epochs had another cosine schedule
    with pytest.raises(CheckpointError) as e:
        train_supernet(compose(*RUN, *changed), finished)
    said = str(e.value)
    assert "\n" not in said
    for key, was, now in (("train.lr", "0.002", "0.05"), ("data.limit_train", "96", "400"),
                          ("train.max_steps_per_epoch", "1", "3"), ("train.label_smoothing", "0.1", "0.0"),
                          ("train.epochs", "2", "3")):
        assert f"{key}={was} (this run: {now})" in said, said
    assert "(data.limit_train=96 train.epochs=2 train.lr=0.002 train.label_smoothing=0.1 " \
           "train.max_steps_per_epoch=1) to continue it" in said, said
    assert "learning-rate schedule" in said and "hydra.run.dir" in said, said
    # the same global batch (4 x 2) in micro-batches of another size: other BatchNorm statistics
    with pytest.raises(CheckpointError, match=r"train.batch_size=8 \(this run: 4\)"):
        train_supernet(compose(*RUN, "train.batch_size=4", "train.accum_steps=2"), finished)
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before  # nothing touched


def test_a_rerun_may_change_what_cannot_change_the_weights(finished, caplog):
    before = {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()}
    with caplog.at_level("INFO"):
        train_supernet(compose(*RUN, "train.progress=true", "train.time_limit_s=3600", "train.eval_calib_batches=2",
                               "data.num_workers=1", "train.device=cpu"), finished)
    assert "2/2 epochs done" in caplog.text
    assert {p.name: p.read_bytes() for p in finished.iterdir() if p.is_file()} == before  # up to date: kept


# Ctrl-C (or a kill) in the window the last epoch leaves between its train_state.pt and its supernet.pt
INTERRUPT_BEFORE_LAST_SUPERNET = """
import sys
import hwnas.training.trainer as T
real = T.save_supernet
def save_supernet(net, path, meta=None):
    if meta["epoch"] == meta["epochs"]:
        raise KeyboardInterrupt
    return real(net, path, meta)
T.save_supernet = save_supernet
sys.argv = ["hwnas.train", *sys.argv[1:]]
from hwnas.train import main
main()
"""


def test_interrupted_before_the_last_supernet_says_so_and_the_rerun_catches_up(tmp_path, caplog):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", INTERRUPT_BEFORE_LAST_SUPERNET, *RUN, f"hydra.run.dir={run}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 130, r.stderr[-3000:]
    [line] = [x for x in r.stderr.splitlines() if "interrupted (Ctrl-C)" in x]
    assert f"epoch 2/2 is kept in {run}/train_state.pt; supernet.pt holds epoch 1" in line, line
    assert "and supernet.pt" not in line, line
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2 and load_supernet(run / "supernet.pt")[1]["epoch"] == 1

    with caplog.at_level("INFO"):
        path = train_supernet(compose(*RUN), run)  # the same command again
    assert "2/2 epochs done" in caplog.text and "written again from it" in caplog.text
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["epoch"] == 2 and [h["epoch"] for h in ckpt["meta"]["history"]] == [1, 2]
    want = state["supernet"]["state_dict"]
    assert ckpt["state_dict"].keys() == want.keys()
    assert all(torch.equal(ckpt["state_dict"][k], want[k]) for k in want)
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert float(rows[1]["loss_largest"]) == state["history"][1]["loss_largest"]


def test_interrupted_line_before_any_epoch_promises_nothing(tmp_path):
    from hwnas.train import _interrupted
    said = _interrupted(compose(*RUN), tmp_path)
    assert "no epoch finished" in said and "supernet.pt" not in said
