"""Typed schemas of `python -m hwnas.search`: the app, its `search` (strategy) and `evaluator` groups.

Every YAML file of a group starts with `defaults: [/schema_<group>_<x>, _self_]`; Hydra then
checks it against the dataclass here, so a misspelt key fails at start-up with the key's name.
The schemas are stored outside the groups, so `search=` and `evaluator=` list only real choices.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from hwnas.config import register_common
from hwnas.data import DATASETS
from hwnas.device import check_device
from hwnas.errors import ConfigError, check_choice, check_min, check_positive, check_range

OBJECTIVES = ("accuracy", "latency", "params", "mes")
DIRECTIONS = {"accuracy": "maximize", "latency": "minimize", "params": "minimize", "mes": "maximize"}


# ---- search= (strategy) ----------------------------------------------------------------------
SEED_ARCHS = ("min", "max", "references")


def check_objectives(objectives) -> list[str]:
    """`search.objectives`: a non-empty list of distinct names of `DIRECTIONS` (`latency.<target>`: one
    target's latency in a search of several targets)."""
    objectives = list(objectives) if isinstance(objectives, (list, tuple)) else objectives
    base = [str(o).split(".", 1)[0] for o in objectives] if isinstance(objectives, list) else []
    if not isinstance(objectives, list) or not objectives or len(set(objectives)) != len(objectives) or \
            any(b not in DIRECTIONS or ("." in o and b != "latency") for o, b in zip(objectives, base)):
        raise ConfigError(f"search.objectives={objectives}: each must be one of {list(DIRECTIONS)}, "
                          "no repeats (e.g. [accuracy, latency, params] or [accuracy, mes])")
    return objectives


@dataclass
class StrategyConfig:
    name: str = MISSING
    # accuracy↑ latency↓ params↓ (a 3-D front) or accuracy↑ mes↑
    objectives: List[str] = field(default_factory=lambda: ["accuracy", "latency", "params"])

    def __post_init__(self):
        check_objectives(self.objectives)


@dataclass
class OptunaStrategyConfig(StrategyConfig):
    n_trials: int = 64  # completed trials the study should hold (a rerun runs only the remainder)
    # first trials of a fresh study: any of "min" (the space's min arch), "max", "references"
    seed_archs: List[str] = field(default_factory=lambda: ["min", "references"])

    def __post_init__(self):
        super().__post_init__()
        check_min("search", "n_trials", self.n_trials, 1, hint="the completed trials the study should hold")
        for a in self.seed_archs:
            check_choice("search", "seed_archs", a, SEED_ARCHS)


@dataclass
class NSGA2Config(OptunaStrategyConfig):
    name: str = "nsga2"
    population_size: int = 16
    mutation_prob: Optional[float] = None  # null: Optuna's 1/number-of-parameters
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        check_min("search", "population_size", self.population_size, 2)
        check_range("search", "mutation_prob", self.mutation_prob, 0.0, 1.0, optional=True)
        check_range("search", "crossover_prob", self.crossover_prob, 0.0, 1.0)
        check_range("search", "swapping_prob", self.swapping_prob, 0.0, 1.0)


@dataclass
class TPEConfig(OptunaStrategyConfig):
    name: str = "tpe"
    n_startup_trials: int = 16
    multivariate: bool = True

    def __post_init__(self):
        super().__post_init__()
        check_min("search", "n_startup_trials", self.n_startup_trials, 0)


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

    def __post_init__(self):
        super().__post_init__()
        check_min("search", "candidates_per_step", self.candidates_per_step, 1, optional=True,
                  hint="null: every valid slimming action")
        check_min("search", "max_steps", self.max_steps, 1)


# ---- evaluator= --------------------------------------------------------------------------------
@dataclass
class EvaluatorConfig:
    name: str = MISSING  # supernet | predictor | proxy


@dataclass
class SupernetEvaluatorConfig(EvaluatorConfig):
    name: str = "supernet"
    recalib_batches: int = 4  # training batches that re-estimate each subnet's BN statistics
    max_val_batches: Optional[int] = None  # null: the whole validation set
    batch_size: int = 64
    device: str = "auto"  # auto | cpu | cuda

    def __post_init__(self):
        check_min("evaluator", "recalib_batches", self.recalib_batches, 1)
        check_min("evaluator", "max_val_batches", self.max_val_batches, 1, optional=True,
                  hint="null: the whole validation set")
        check_min("evaluator", "batch_size", self.batch_size, 1)
        check_device("evaluator.device", self.device)


@dataclass
class PredictorEvaluatorConfig(EvaluatorConfig):
    # predicted inherited top-1 from the arch alone (hwnas.predictor), fitted on measured pairs
    name: str = "predictor"
    path: Optional[str] = None  # a predictor file (python -m hwnas.predictor fit); null: the one shipped for the space


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

    def __post_init__(self):
        if isinstance(self.latency_ms, Mapping):  # several targets: one budget per target
            for name, ms in self.latency_ms.items():
                _check_budget(f"latency_ms.{name}", ms, "ms", "null: no latency budget")
        else:  # one target: a number of ms (typed Any for the per-target mapping, so made a float here)
            _check_budget("latency_ms", self.latency_ms, "ms", "null: no latency budget; several targets: "
                          "{target: ms, ...}")
            if self.latency_ms is not None:
                self.latency_ms = float(self.latency_ms)
        _check_budget("params_m", self.params_m, "millions of parameters", "null: no size budget")


def _check_budget(key: str, value: Any, unit: str, hint: str) -> None:
    """A budget: null, or a finite positive number (a string, list or mapping, NaN or inf is refused
    here, not by a comparison deep in the search)."""
    if value is None:
        return
    if isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        shown = dict(value) if isinstance(value, Mapping) else list(value) if isinstance(value, (list, tuple)) \
            else value
        raise ConfigError(f"budget.{key}={shown!r}: must be > 0, a finite number of {unit} ({hint})")


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

    # what is deployed and timed: classify (the whole classifier) | backbone (stem and stages only,
    # the features of a detector or segmenter), at input [H, W] (or one int; null: the space's resolution)
    task: str = "classify"
    input: Optional[Any] = None
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

    def __post_init__(self):
        if self.target is None and not self.targets:
            from hwnas.latency.target import list_targets
            raise ConfigError("no target given: choose one with +target=NAME, or several with "
                              f"targets=[NAME,NAME,...] (targets: {', '.join(list_targets())})")
        check_positive("", "storage_retry_s", self.storage_retry_s)
        check_min("", "seed", self.seed, 0)
        check_min("", "deploy_num_classes", self.deploy_num_classes, 1)
        check_positive("", "stale_after_s", self.stale_after_s)
        check_min("", "threads", self.threads, 1, optional=True,
                  hint="null: this machine's cores shared among the study's workers")
        if self.references is not None and not list(self.references):
            raise ConfigError("references=[]: name at least one reference to pick against, or null for all of "
                              "the space's")
        if self.storage is not None:
            check_storage(self.storage)
        data = _name(self.data)
        if _name(self.evaluator) == "supernet" and data in DATASETS and DATASETS[data].random_labels:
            # random labels: every subnet scores at chance, and the built-in supernet would train on them
            real = [n for n in DATASETS.names() if not DATASETS[n].random_labels]
            raise ConfigError(f"data={data} with evaluator=supernet: {data} data has random labels, so its "
                              f"accuracies rank nothing; use one of data={', data='.join(real)} "
                              "(data=imagefolder data.root=DIR for your own images), or evaluator=predictor")


def _name(group: Any) -> str | None:
    """The `name` of a config group's value (a dataclass or a mapping), if any."""
    if isinstance(group, Mapping):
        return group.get("name")
    return getattr(group, "name", None)


def check_storage(url: str) -> None:
    """An Optuna storage URL whose database kind and driver are there (fails at start-up, not after
    the supernet was trained)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    if url.startswith("grpc:"):  # Optuna's gRPC storage proxy (python -m hwnas.search.server)
        from .study import parse_grpc_url
        parse_grpc_url(url)
        return
    try:
        dialect = make_url(url).get_dialect()
    except NoSuchModuleError:  # (a subclass of ArgumentError)
        raise ConfigError(f"storage={url}: unknown database kind {url.split(':', 1)[0]!r}; use sqlite:///PATH, "
                          "postgresql://..., mysql://... (or null for sqlite in the run folder)") from None
    except ArgumentError:
        raise ConfigError(f"storage={url}: not a database URL; give an Optuna storage such as "
                          "sqlite:///PATH/study.db or postgresql://USER@HOST/DB, or null for sqlite in the "
                          "run folder") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise ConfigError(f"storage={url}: its database driver is not installed ({e}); install the package "
                          "that provides it (or name another driver in the URL, e.g. postgresql+psycopg2://), or "
                          "use sqlite:///PATH") from None


def run_name(choice: Any, targets: Any) -> str:
    """The targets part of the default run directory: `coreml`, or `coreml+onnxruntime_cpu` for a
    search over several (`${hwnas.targets:...}` in conf/search.yaml)."""
    if targets:
        return "+".join(str(t) for t in targets)
    return str(choice)


def register() -> None:
    """Register every schema the search app composes against (idempotent)."""
    from omegaconf import OmegaConf

    from hwnas.latency.target import store_schemas as store_target_schemas
    OmegaConf.register_new_resolver("hwnas.targets", run_name, replace=True)
    register_common()
    store_target_schemas()  # every registered target's schema_target_<name> (and those registered later)
    cs = ConfigStore.instance()
    cs.store(name="schema_app_search", node=SearchAppConfig)
    # the strategies' schemas (schema_search_<name>) are stored as each registers
    # (hwnas.search.strategies.register_strategy; the app imports the built-in ones)
    cs.store(name="schema_evaluator_supernet", node=SupernetEvaluatorConfig)
    cs.store(name="schema_evaluator_predictor", node=PredictorEvaluatorConfig)
    cs.store(name="schema_evaluator_proxy", node=ProxyEvaluatorConfig)
