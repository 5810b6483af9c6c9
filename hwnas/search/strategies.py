"""The `search=` strategies, a registry: nsga2, tpe and random through Optuna samplers, and mes_greedy.

A strategy is a `Strategy` registered by name (`@register_strategy`), as timm registers a model;
one can be registered from outside hwnas. Its interface is thin, as Optuna's `BaseSampler` is:
a name and a schema (a `StrategyConfig` dataclass: the `search.*` keys), then override only what
differs -- `sampler()` for a strategy that is an Optuna sampler (Optuna's loop runs it), or `run()`
for one with a loop of its own (mes_greedy).

    @register_strategy
    class QMC(Strategy):
        name, config = "qmc", QMCConfig          # search=qmc search.n_trials=64
        def sampler(self, cfg, seed):
            return optuna.samplers.QMCSampler(seed=seed)

Every strategy writes what it evaluates into the one Optuna study, as trials with the same user
attributes (arch, arch_id, accuracy, latency_ms, params, macs, mes), so outputs, resuming and the
evaluation cache work the same for all of them.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import optuna

import search_spaces
from search_spaces import Arch, ArchError

from hwnas._registry import Registry
from hwnas.errors import ConfigError
from hwnas.latency.table import MissingRowsError

from . import codec
from .actions import slimming_actions
from .config import (DIRECTIONS, MESGreedyConfig, NSGA2Config, OptunaStrategyConfig, RandomConfig,
                     StrategyConfig, TPEConfig, check_objectives)
from .objectives import Metrics, Scorer
from .study import Infeasible, completed, run_trials


@dataclass(frozen=True)
class Budget:
    """Constraints of the search; None / absent = unconstrained.

    `latency_ms` maps targets to their latency budget (any subset of the search's targets). The
    constraint names follow the record names: `latency` with one target, `latency.<target>` with
    several; `params` either way.
    """
    latency_ms: Mapping[str, float] = field(default_factory=dict)
    params: float | None = None  # parameters (not millions)

    def violations(self, m: Metrics) -> dict[str, float]:
        """Optuna constraint values (<= 0 is feasible), relative to the budget."""
        out = {}
        single = len(m.latency) == 1
        for t, limit in self.latency_ms.items():
            out["latency" if single else f"latency.{t}"] = m.latency[t] / limit - 1.0
        if self.params is not None:
            out["params"] = m.params / self.params - 1.0
        return out

    def holds(self, m: Metrics) -> bool:
        return all(v <= 0 for v in self.violations(m).values())

    @property
    def empty(self) -> bool:
        return not self.latency_ms and self.params is None


def directions(objectives: list[str]) -> list[str]:
    """Optuna's directions for objectives (`latency.<target>`: one target's latency)."""
    return [DIRECTIONS[o.split(".", 1)[0]] for o in check_objectives(objectives)]


# ---- the registry ------------------------------------------------------------------------------------
@dataclass
class SearchRun:
    """What a strategy runs on: the study (it adds its trials there), the space, the scorer of archs,
    its settings (`search.*`, objectives expanded per target), the budget, and the app's settings."""
    study: optuna.Study
    space: search_spaces.SearchSpace
    scorer: Scorer
    cfg: dict
    budget: Budget
    seed: int = 0
    progress: bool = True
    stale_after_s: float = 3600.0
    seed_archs: list = field(default_factory=list)  # first trials of a fresh study (search.seed_archs)
    on_local_workers: Any = None  # run_trials' callback (CPU threads shared among the study's workers)


class Strategy:
    """A search strategy (`search=NAME`). Override what differs; the rest has defaults.

    - `name`: what `search=` names (and the study's default name ends with);
    - `config`: its schema, a `StrategyConfig` dataclass (an `OptunaStrategyConfig` for `run_optuna`:
      `n_trials`, `seed_archs`, `objectives`); Hydra checks `search.*` against it at start-up;
    - `needs_budget`: with no budget given, the search's budget is the references' (the smallest
      latency per target and the smallest size among them);
    - `sampler(cfg, seed)`: the Optuna sampler of the study (default: random);
    - `run(r)`: fills the study (default: Optuna's loop with `sampler`, until `n_trials` completed
      trials); returns the rows of the strategy's path (written to greedy_path.csv) or None.
    """
    name: str = ""
    config: type = OptunaStrategyConfig
    needs_budget: bool = False

    def sampler(self, cfg: Mapping[str, Any], seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)

    def run(self, r: SearchRun) -> list[dict] | None:
        run_optuna(r.study, r.space, r.scorer, r.cfg, r.budget, stale_after_s=r.stale_after_s,
                   progress=r.progress, seed_archs=r.seed_archs, on_local_workers=r.on_local_workers)
        return None


#: every registered strategy, by name
STRATEGIES: Registry[Strategy] = Registry(
    "search strategy", ConfigError, "a new one is a Strategy subclass registered with hwnas.search.register_strategy")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: register `cls` (a `Strategy` subclass with a `name` and a `config`) as
    `search=<name>`. Its schema becomes Hydra's `schema_search_<name>`, and, where hwnas/conf has no
    `search/<name>.yaml`, the `search=<name>` option itself (the schema's defaults)."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or not cls.name:
        raise ConfigError(f"register_strategy: {cls!r} is not a Strategy subclass with a name")
    if not (isinstance(cls.config, type) and issubclass(cls.config, StrategyConfig)):
        raise ConfigError(f"register_strategy: {cls.__name__}.config must be a StrategyConfig dataclass "
                          "(an OptunaStrategyConfig for Optuna's loop)")
    _store_schema(STRATEGIES.add(cls.name, cls()))
    return cls


def _store_schema(strategy: Strategy) -> None:
    from hydra.core.config_store import ConfigStore
    from hwnas.config import CONF_DIR
    cs = ConfigStore.instance()
    cs.store(name=f"schema_search_{strategy.name}", node=strategy.config)
    if not (CONF_DIR / "search" / f"{strategy.name}.yaml").is_file():
        cs.store(group="search", name=strategy.name, node=strategy.config)


def list_strategies() -> list[str]:
    return STRATEGIES.names()


def get_strategy(name: str) -> Strategy:
    return STRATEGIES.lookup(name)


def make_sampler(cfg: Mapping[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of the strategy `cfg` names."""
    return get_strategy(cfg["name"]).sampler(cfg, seed)


def trial_attrs(arch: Arch, m: Metrics) -> dict[str, Any]:
    return dict(arch=arch.to_json(), arch_id=arch.id, **m.as_dict())


def latency_sources(scorer: Scorer) -> dict[str, str]:
    """Trial attributes saying, per target, whether its latency is estimated or measured
    (`latency_source`, or `latency_source.<target>` with several targets)."""
    names = scorer.target_names
    return {("latency_source" if len(names) == 1 else f"latency_source.{t.name}"):
            ("estimated" if t.estimated else "measured") for t in scorer.targets}


def cached_accuracies(study: optuna.Study) -> dict[str, float]:
    return {t.user_attrs["arch_id"]: t.user_attrs["accuracy"] for t in completed(study)
            if "arch_id" in t.user_attrs and "accuracy" in t.user_attrs}


def _seed_cache(scorer: Scorer, study: optuna.Study, arch: Arch) -> None:
    """Before evaluating an arch this worker has not seen, look in the study (other workers, runs)."""
    if arch.id not in scorer.accuracies:
        scorer.accuracies.update(cached_accuracies(study))


def optuna_objective(study: optuna.Study, space: search_spaces.SearchSpace, scorer: Scorer,
                     objectives: list[str], budget: Budget) -> Callable[[optuna.Trial], list[float]]:
    def objective(trial: optuna.Trial) -> list[float]:
        params = codec.suggest(trial, space)
        try:
            arch = codec.decode(params, space)
        except ArchError as e:
            raise Infeasible(str(e)) from None
        if codec.encode(arch, space) != params:
            trial.set_user_attr("repaired", True)
        _seed_cache(scorer, study, arch)
        try:
            m = scorer.metrics(arch)  # latency first: a missing row costs no accuracy evaluation
        except MissingRowsError as e:  # a table that lacks some blocks: search the archs it covers
            raise Infeasible(f"no latency row for {len(e.keys)} block(s) of this arch on this target, "
                             f"e.g. {e.keys[0]}") from None
        for k, v in (trial_attrs(arch, m) | latency_sources(scorer)).items():
            trial.set_user_attr(k, v)
        for k, v in budget.violations(m).items():
            trial.set_constraint(k, v)
        return [m.objective(o) for o in objectives]
    return objective


def run_optuna(study: optuna.Study, space: search_spaces.SearchSpace, scorer: Scorer,
               cfg: Mapping[str, Any], budget: Budget, *, stale_after_s: float, progress: bool,
               seed_archs: list[Arch] = (), on_local_workers=None) -> int:
    """Run the Optuna strategy until the study holds `cfg.n_trials` completed trials.

    `seed_archs` (a fresh study only) are enqueued as the first trials: with the space's min arch
    and the references in the first generation, NSGA-II's crossovers reach the small end of the
    space, which per-position sampling (a block is kept with probability 3/4) rarely visits.
    """
    if seed_archs and not study.get_trials(deepcopy=False):
        for arch in seed_archs:
            study.enqueue_trial(codec.encode(arch, space), skip_if_exists=True)
    objective = optuna_objective(study, space, scorer, list(cfg["objectives"]), budget)
    return run_trials(study, int(cfg["n_trials"]), objective, stale_after_s=stale_after_s,
                      progress=progress, on_local_workers=on_local_workers)


# ---- mes_greedy ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GreedyStep:
    step: int
    action: str  # "start" for the max subnet
    arch: Arch
    metrics: Metrics
    candidates: int  # actions evaluated to choose this step


def mes_greedy(study: optuna.Study, space: search_spaces.SearchSpace, scorer: Scorer,
               cfg: Mapping[str, Any], budget: Budget, *, seed: int = 0,
               progress: bool = True) -> list[GreedyStep]:
    """EfficientFormerV2's search: slim the max subnet, one action at a time, until `budget` holds.

    Each step evaluates the valid slimming actions of the current arch and takes the one with the
    smallest accuracy drop per MES gain (actions that do not raise the MES are never taken). With
    several targets the MES is the worst across them, and the budget must hold on every target.
    Every evaluated arch becomes a trial of `study` (once: a rerun replays the path from the
    study's cached accuracies and evaluates only what is new).
    """
    if budget.empty:
        raise ConfigError("mes_greedy needs a budget: set budget.latency_ms and/or budget.params_m "
                         "(by default the search uses the references' latency and size)")
    objectives = list(cfg["objectives"])
    distributions = codec.distributions(space)
    scorer.accuracies.update(cached_accuracies(study))
    recorded = {t.user_attrs["arch_id"] for t in completed(study) if "arch_id" in t.user_attrs}
    rng = random.Random(seed)

    def evaluate(arch: Arch, step: int, action: str) -> Metrics:
        m = scorer.metrics(arch)
        if arch.id not in recorded:
            attrs = trial_attrs(arch, m) | latency_sources(scorer) | {"greedy_step": step, "greedy_action": action}
            study.add_trial(optuna.trial.create_trial(
                params=codec.encode(arch, space), distributions=distributions,
                values=[m.objective(o) for o in objectives], user_attrs=attrs,
                system_attrs={f"constraints:{k}": v
                              for k, v in budget.violations(m).items()}))
            recorded.add(arch.id)
        return m

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(desc="mes_greedy steps", unit="step", dynamic_ncols=True)
    arch = space.max_arch()
    path = [GreedyStep(0, "start", arch, evaluate(arch, 0, "start"), 0)]
    try:
        while not budget.holds(path[-1].metrics):
            step = len(path)
            if step > int(cfg["max_steps"]):
                break
            cur = path[-1].metrics
            actions = slimming_actions(space, arch)
            k = cfg.get("candidates_per_step")
            if k is not None and len(actions) > k:
                actions = rng.sample(actions, k)
            best = None
            for a in actions:
                try:
                    m = evaluate(a.arch, step, a.name)
                except MissingRowsError:  # the table lacks a block of this neighbour: not a step we can judge
                    continue
                gain = m.mes - cur.mes
                if gain <= 0:
                    continue
                key = ((cur.accuracy - m.accuracy) / gain, -gain)
                if best is None or key < best[0]:
                    best = (key, a, m)
            if best is None:  # nothing raises the MES: the budget cannot be reached this way
                break
            _, a, m = best
            arch = a.arch
            path.append(GreedyStep(step, a.name, arch, m, len(actions)))
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"MES {m.mes:.1f} acc {m.accuracy:.1f} "
                                    + " ".join(f"{v:.2f} ms" for v in m.latency.values()))
    finally:
        if bar is not None:
            bar.close()
    return path


def path_rows(path: list[GreedyStep]) -> list[dict]:
    return [dict(step=s.step, action=s.action, arch_id=s.arch.id, candidates=s.candidates,
                 **s.metrics.as_dict(), arch=json.dumps(s.arch.to_dict(), sort_keys=True))
            for s in path]



# ---- the built-in strategies ------------------------------------------------------------------------
@register_strategy
class NSGA2(Strategy):
    """NSGA-II (Optuna's NSGAIISampler); budgets become Optuna constraints (constrained domination)."""
    name, config = "nsga2", NSGA2Config

    def sampler(self, cfg, seed):
        return optuna.samplers.NSGAIISampler(
            population_size=cfg["population_size"], mutation_prob=cfg["mutation_prob"],
            crossover_prob=cfg["crossover_prob"], swapping_prob=cfg["swapping_prob"], seed=seed)


@register_strategy
class TPE(Strategy):
    """Multi-objective TPE (Optuna's TPESampler)."""
    name, config = "tpe", TPEConfig

    def sampler(self, cfg, seed):
        return optuna.samplers.TPESampler(n_startup_trials=cfg["n_startup_trials"],
                                          multivariate=cfg["multivariate"], seed=seed)


@register_strategy
class Random(Strategy):
    """Uniform random search (the baseline for hypervolume comparisons)."""
    name, config = "random", RandomConfig


@register_strategy
class MESGreedy(Strategy):
    """EfficientFormerV2's search (`mes_greedy`): its own loop, never the sampler."""
    name, config, needs_budget = "mes_greedy", MESGreedyConfig, True

    def run(self, r: SearchRun) -> list[dict]:
        return path_rows(mes_greedy(r.study, r.space, r.scorer, r.cfg, r.budget, seed=r.seed,
                                    progress=r.progress))
