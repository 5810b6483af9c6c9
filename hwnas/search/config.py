"""Typed schemas of `python -m hwnas.search`: the app, its `search` (strategy) and `evaluator` groups.

Every YAML file of a group starts with `defaults: [base_<x>, _self_]`; Hydra then checks it
against the dataclass here, so a misspelt key fails at start-up with the key's name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

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
    # predicted latency on the target must be <= this (ms); several targets: {target: ms, ...},
    # any subset of them (budget.latency_ms={coreml:1.0,torch_cuda:0.5})
    latency_ms: Any = None
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
    # several targets in one search, instead of +target=: targets=[coreml,onnxruntime_cpu,torch_cuda]
    targets: Optional[List[str]] = None
    # per-target settings of a search over several targets (the keys of hwnas/conf/target/<T>.yaml):
    # +target_settings.coreml.allow_stale=true
    target_settings: Dict[str, Any] = field(default_factory=dict)
    space: Any = MISSING
    search: Any = MISSING
    evaluator: Any = MISSING
    data: Any = None

    checkpoint: Optional[str] = None  # supernet checkpoint; null: train a short one (cached)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    # Optuna storage URL: sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB, grpc://HOST:PORT (Optuna's
    # gRPC storage proxy: python -m hwnas.search.server); null: sqlite in the run directory
    storage: Optional[str] = None
    storage_retry_s: float = 600.0  # how long a worker keeps retrying a storage server it cannot reach
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


def run_name(choice: Any, targets: Any) -> str:
    """The targets part of the default run directory: `coreml`, or `coreml+onnxruntime_cpu` for a
    search over several (`${hwnas.targets:...}` in conf/search.yaml)."""
    if targets:
        return "+".join(str(t) for t in targets)
    return str(choice)


def register() -> None:
    """Register every schema the search app composes against (idempotent)."""
    from omegaconf import OmegaConf

    from hwnas.latency.config import register_target
    OmegaConf.register_new_resolver("hwnas.targets", run_name, replace=True)
    register_common()
    register_target()
    cs = ConfigStore.instance()
    cs.store(name="base_search_app", node=SearchAppConfig)
    for name, node in (("base_nsga2", NSGA2Config), ("base_tpe", TPEConfig),
                       ("base_random", RandomConfig), ("base_mes_greedy", MESGreedyConfig)):
        cs.store(group="search", name=name, node=node)
    cs.store(group="evaluator", name="base_supernet", node=SupernetEvaluatorConfig)
    cs.store(group="evaluator", name="base_proxy", node=ProxyEvaluatorConfig)
