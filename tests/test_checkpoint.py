"""Supernet checkpoints: round trip, atomic writes, weights_only loading, clear errors."""
import os

import pytest
import torch

import search_spaces
import supernet
from hwnas.checkpoint import CheckpointError, load_supernet, save_supernet


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    net = supernet.build_supernet("efficientformerv2", num_classes=10, resolution=32)
    path = tmp_path_factory.mktemp("ckpt") / "supernet.pt"
    save_supernet(net, path, {"epoch": 3, "data": "digits"})
    return net, path


def test_round_trip_gives_the_same_subnets(saved):
    net, path = saved
    loaded, meta = load_supernet(path, space="efficientformerv2")
    assert meta == {"epoch": 3, "data": "digits"}
    assert (loaded.space.name, loaded.resolution, loaded.num_classes) == ("efficientformerv2", 32, 10)
    arch = search_spaces.get_space("efficientformerv2").sample_many(1, seed=4)[0].with_resolution(32)
    x = torch.randn(2, 3, 32, 32)
    net.eval(), loaded.eval()
    net.set_active(arch), loaded.set_active(arch)
    assert torch.equal(net(x), loaded(x))
    assert [p.name for p in path.parent.iterdir()] == ["supernet.pt"]  # no temporary file left behind


def test_other_space_is_refused_naming_both(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match=r"space 'efficientformerv2'.*space 'nextvit' was asked"):
        load_supernet(path, space="nextvit")


def test_truncated_file(saved, tmp_path):
    _, path = saved
    bad = tmp_path / "cut.pt"
    bad.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_supernet(bad)


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_supernet(text)
    weights = tmp_path / "weights.pt"
    torch.save({"stem.weight": torch.zeros(1)}, weights)
    with pytest.raises(CheckpointError, match="not an hwnas supernet checkpoint.*load_pretrained"):
        load_supernet(weights)
    with pytest.raises(CheckpointError, match="no such file.*python -m hwnas.train"):
        load_supernet(tmp_path / "missing.pt")


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (str(_Payload.target),))


def test_loading_runs_no_code_from_the_file(tmp_path):
    """weights_only=True: a pickle that would run code is refused, and the code does not run."""
    _Payload.target = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "hwnas.supernet", "payload": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_supernet(evil)
    assert not _Payload.target.exists()
