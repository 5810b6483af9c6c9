"""A strategy and a dataset defined only here, in tests/, run through the search (and, for the
dataset, a tiny supernet training) with no edit under hwnas/ (issue 26, 4); a key of another
dataset is one clear error."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List

import optuna
import pytest

EXTRA = os.environ.get("HWNAS_TEST_SEARCH_OVERRIDES", "").split()


# ---- a strategy of our own ----------------------------------------------------------------------
from hwnas.search import Strategy, list_strategies, register_strategy  # noqa: E402
from hwnas.search.config import OptunaStrategyConfig  # noqa: E402

SAMPLED: list[str] = []  # the parameters our sampler chose: proof that the search asked it


class _CountingRandom(optuna.samplers.RandomSampler):
    def sample_independent(self, study, trial, param_name, param_distribution):
        SAMPLED.append(param_name)
        return super().sample_independent(study, trial, param_name, param_distribution)


@dataclass
class CountingConfig(OptunaStrategyConfig):
    name: str = "counting_random"
    n_trials: int = 6
    seed_archs: List[str] = field(default_factory=list)
    offset: int = 0  # a key only this strategy has: the sampler's seed is seed + offset


@register_strategy
class CountingRandom(Strategy):
    name, config = "counting_random", CountingConfig

    def sampler(self, cfg, seed):
        return _CountingRandom(seed=seed + cfg["offset"])


def _search_cfg(*overrides):
    from hwnas.search.app import compose_config
    return compose_config(["+target=onnxruntime_cpu", "evaluator=proxy", "progress=false", *EXTRA, *overrides])


def test_a_strategy_registered_outside_hwnas_runs_a_search(tmp_path):
    from hwnas.search.app import run
    assert "counting_random" in list_strategies()
    SAMPLED.clear()
    cfg = _search_cfg("search=counting_random", "search.n_trials=5", "search.offset=3")
    assert cfg.search.offset == 3 and cfg.search.objectives == ["accuracy", "latency", "params"]
    out = run(cfg, tmp_path)
    assert len(out["records"]) == 5  # Optuna's loop ran the strategy to n_trials completed trials
    assert SAMPLED  # and asked our sampler for the archs
    assert out["study"].study_name.endswith("-counting_random")
    assert "counting_random" in (tmp_path / "report.md").read_text()
    assert out["greedy_path"] is None


def test_a_registered_strategy_has_a_typed_schema_and_unknown_names_list_the_registered():
    from hwnas.errors import HwnasError
    from hwnas.search.strategies import get_strategy
    with pytest.raises(HwnasError, match="search.nosuchkey: no such key"):
        from hwnas.cli import check_config
        check_config(_search_cfg("search=counting_random", "+search.nosuchkey=1"))
    with pytest.raises(HwnasError, match=r"unknown search strategy 'nope' \(.*counting_random.*mes_greedy"):
        get_strategy("nope")


# ---- a dataset of our own -----------------------------------------------------------------------
import torch  # noqa: E402

from hwnas.data import DataConfig, DataError, DataSource, data_config, list_datasets, register_dataset  # noqa: E402


@dataclass
class ToyShapesConfig(DataConfig):
    name: str = "toy_shapes"
    num_images: int = 64  # per split
    contrast: float = 2.0  # how much brighter the labelled quadrant is than the noise


class ToyShapes(torch.utils.data.Dataset):
    """Noise images whose label (0-3) is the quadrant made brighter; each a function of (seed, index)."""
    classes = ["top_left", "top_right", "bottom_left", "bottom_right"]

    def __init__(self, n, size, contrast, seed):
        self.n, self.size, self.contrast, self.seed = n, size, contrast, seed

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        index = item[0] if isinstance(item, tuple) else item  # (index, epoch-seed) from the sampler
        g = torch.Generator().manual_seed(self.seed * 100003 + index)
        label = index % 4
        x = torch.randn(3, self.size, self.size, generator=g)
        h = self.size // 2
        x[:, (label // 2) * h:(label // 2 + 1) * h, (label % 2) * h:(label % 2 + 1) * h] += self.contrast
        return x, torch.tensor(label)


@register_dataset
class ToyShapesSource(DataSource):
    name, config = "toy_shapes", ToyShapesConfig

    def datasets(self, cfg, image_size, seed, augment):
        return (ToyShapes(cfg.num_images, image_size, cfg.contrast, seed=1),
                ToyShapes(cfg.num_images, image_size, cfg.contrast, seed=2))


def test_a_dataset_registered_outside_hwnas_trains_a_supernet_and_is_searched(tmp_path):
    from hwnas.checkpoint import load_supernet
    from hwnas.config import compose
    from hwnas.search.app import run
    from hwnas.train import train_supernet
    assert "toy_shapes" in list_datasets()
    tcfg = compose("train", ["space=efficientformerv2", "data=toy_shapes", "data.num_images=32", "train.epochs=1",
                             "train.batch_size=8", "train.max_steps_per_epoch=2", "train.num_random=0",
                             "train.eval_calib_batches=0", "train.progress=false"])
    assert tcfg.data.contrast == 2.0 and tcfg.data.num_images == 32  # the dataset's schema, through Hydra
    ckpt = train_supernet(tcfg, tmp_path / "train")
    net, meta = load_supernet(ckpt, space="efficientformerv2")
    assert net.num_classes == 4 and net.resolution == 32  # the data's classes and image size
    out = run(_search_cfg("evaluator=supernet", "evaluator.recalib_batches=1", "evaluator.max_val_batches=1",
                          "evaluator.batch_size=8", "data=toy_shapes", "data.num_images=16",
                          "search=counting_random", "search.n_trials=2", "references=[efficientformerv2_s0]",
                          f"checkpoint={ckpt}"), tmp_path / "search")
    assert len(out["records"]) == 2
    assert all(0.0 <= r["accuracy"] <= 100.0 for r in out["records"])
    assert "top-1 % on toy_shapes val" in (tmp_path / "search" / "report.md").read_text()


def test_a_key_of_another_dataset_is_one_line_naming_the_dataset_and_its_keys(tmp_path):
    from hwnas.cli import preflight
    from hwnas.config import register_common
    from hwnas.errors import HwnasError
    from hwnas.train import TrainAppConfig
    register_common()
    for override in ("data.root=X", "+data.root=X"):  # the command line: refused at start-up, before any training
        with pytest.raises(HwnasError) as e:
            preflight("train", ["data=digits", override, f"hydra.run.dir={tmp_path / 'run'}"], TrainAppConfig)
        msg = str(e.value)
        assert "\n" not in msg and not (tmp_path / "run").exists()
        assert msg.startswith("data.root: unknown key of data=digits (allowed: name, image_size,")
        assert "val_fraction, split_seed)" in msg and "root is a key of data=fashion_mnist, data=imagefolder" in msg
    with pytest.raises(DataError, match=r"^data\.root: unknown key of data=digits \(allowed: .*split_seed\)"):
        data_config({"name": "digits", "root": "X"})  # the same from Python (checkpoints, experiments)
    with pytest.raises(DataError, match=r"data\.val_fraction: unknown key of data=toy_shapes \(allowed: .*contrast\)"
                                        r"; val_fraction is a key of data=digits"):
        data_config({"name": "toy_shapes", "val_fraction": 0.2})
    # each dataset keeps its own keys and spellings
    assert data_config({"name": "fashion_mnist", "root": "/x"}).root == "/x"
    assert data_config({"name": "toy_shapes", "num_images": 8}).num_images == 8


def test_the_accuracy_fingerprint_sees_a_built_in_dataset_as_before_its_own_schema():
    """Studies made when every dataset shared one flat config still resume: the fingerprint's data
    part is that flat config (hwnas < 0.3's, written out here) for the built-in datasets."""
    from hwnas.data import fingerprint_view
    from hwnas.search.app import compose_config
    flat = dict(name="digits", image_size=32, val_fraction=0.2, split_seed=0, val_size=10000, root=None,
                train_dir="train", val_dir="val", test_dir=None, scale_min=0.08, crop_pct=0.875, crop_padding=0,
                hflip=0.0, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], num_classes=10, num_train=1024, num_val=256,
                limit_train=0, num_workers=0, on_bad_image="skip")
    cfg = compose_config(["+target=onnxruntime_cpu", "data=digits"])
    assert fingerprint_view(cfg.data) == flat
    assert fingerprint_view({"name": "toy_shapes", "num_images": 8}) == {"name": "toy_shapes", "num_images": 8}
