"""Typed schemas of `python -m hwnas.search`: the app, its `search` (strategy) and `evaluator` groups.

Every YAML file of a group starts with `defaults: [base_<x>, _self_]`; Hydra then checks it
against the dataclass here, so a misspelt key fails at start-up with the key's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from hwnas.config import register_common

OBJECTIVES = ("accuracy", "latency", "params", "mes")
DIRECTIONS = {"accuracy": "maximize", "latency": "minimize", "params": "minimize", "mes": "maximize"}


# ---- search= (strategy) ----------------------------------------------------------------------
@dataclass
class StrategyConfig:
    name: str = MISSING
    # accuracy↑ latency↓ params↓ (a 3-D front) or accuracy↑ mes↑
    objectives: List[str] = field(default_factory=lambda: ["accuracy", "latency", "params"])


@dataclass
class OptunaStrategyConfig(StrategyConfig):
    n_trials: int = 64  # completed trials the study should hold (a rerun runs only the remainder)
    # first trials of a fresh study: any of "min" (the space's min arch), "max", "references"
    seed_archs: List[str] = field(default_factory=lambda: ["min", "references"])


@dataclass
class NSGA2Config(OptunaStrategyConfig):
    name: str = "nsga2"
    population_size: int = 16
    mutation_prob: Optional[float] = None  # null: Optuna's 1/number-of-parameters
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class TPEConfig(OptunaStrategyConfig):
    name: str = "tpe"
    n_startup_trials: int = 16
    multivariate: bool = True


@dataclass
class RandomConfig(OptunaStrategyConfig):
    name: str = "random"


@dataclass
class MESGreedyConfig(StrategyConfig):
    name: str = "mes_greedy"
    objectives: List[str] = field(default_factory=lambda: ["accuracy", "mes"])
    # actions evaluated per step: null = every valid slimming action (the paper's frontier);
    # a number = that many, drawn at random (seeded) from them, for a cheaper search
    candidates_per_step: Optional[int] = None
    max_steps: int = 500


# ---- evaluator= --------------------------------------------------------------------------------
@dataclass
class EvaluatorConfig:
    name: str = MISSING  # supernet | proxy


@dataclass
class SupernetEvaluatorConfig(EvaluatorConfig):
    name: str = "supernet"
    recalib_batches: int = 4  # training batches that re-estimate each subnet's BN statistics
    max_val_batches: Optional[int] = None  # null: the whole validation set
    batch_size: int = 64
    device: str = "auto"  # auto | cpu | cuda


@dataclass
class ProxyEvaluatorConfig(EvaluatorConfig):
    # NOT accuracy: a deterministic score that grows with MACs and parameters, for tests and
    # dry runs of latency/size trade-offs without a supernet
    name: str = "proxy"


# ---- the app -------------------------------------------------------------------------------------
@dataclass
class BudgetConfig:
    latency_ms: Optional[float] = None  # predicted latency on the target must be <= this
    params_m: Optional[float] = None  # millions of parameters (deployment model)


@dataclass
class PretrainConfig:
    """The supernet trained when no `checkpoint=` is given (cached, reused by the next run)."""
    # overrides of the train app's config (`python -m hwnas.train`); space= is added from ours
    overrides: List[str] = field(default_factory=list)
    cache_dir: str = "~/.cache/hwnas/supernets"


@dataclass
class SearchAppConfig:
    # groups (filled by the defaults list and `+target=`)
    target: Any = None
    space: Any = MISSING
    search: Any = MISSING
    evaluator: Any = MISSING
    data: Any = None

    # what is deployed and timed: classify (the whole classifier) | backbone (stem and stages only,
    # the features of a detector or segmenter), at input [H, W] (or one int; null: the space's resolution)
    task: str = "classify"
    input: Optional[Any] = None
    checkpoint: Optional[str] = None  # supernet checkpoint; null: train a short one (cached)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    storage: Optional[str] = None  # Optuna storage URL; null: sqlite in the run directory
    study_name: Optional[str] = None  # null: <target>-<space>-<strategy>
    seed: int = 0
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    references: Optional[List[str]] = None  # null: every reference of the space
    deploy_num_classes: int = 1000  # the head latency and size are reported for
    stale_after_s: float = 3600.0  # a RUNNING trial of another machine older than this is dead
    verify: bool = False  # export the picks and measure them on the target's backend
    progress: bool = True
    # CPU threads for evaluating subnets; null: this machine's cores shared among the study's live
    # workers on it (two workers each on all cores run 5-9x slower than sharing them: docs/search.md)
    threads: Optional[int] = None


def register() -> None:
    """Register every schema the search app composes against (idempotent)."""
    from hwnas.latency.config import register_target
    register_common()
    register_target()
    cs = ConfigStore.instance()
    cs.store(name="base_search_app", node=SearchAppConfig)
    for name, node in (("base_nsga2", NSGA2Config), ("base_tpe", TPEConfig),
                       ("base_random", RandomConfig), ("base_mes_greedy", MESGreedyConfig)):
        cs.store(group="search", name=name, node=node)
    cs.store(group="evaluator", name="base_supernet", node=SupernetEvaluatorConfig)
    cs.store(group="evaluator", name="base_proxy", node=ProxyEvaluatorConfig)
