"""The `search=` strategies: nsga2, tpe and random through Optuna samplers, and mes_greedy.

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

from hwnas.errors import ConfigError
from hwnas.latency.table import MissingRowsError

from . import codec
from .actions import slimming_actions
from .config import DIRECTIONS, check_objectives
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


def make_sampler(cfg: Mapping[str, Any], seed: int) -> optuna.samplers.BaseSampler:
    name = cfg["name"]
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(
            population_size=cfg["population_size"], mutation_prob=cfg["mutation_prob"],
            crossover_prob=cfg["crossover_prob"], swapping_prob=cfg["swapping_prob"], seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=cfg["n_startup_trials"],
                                          multivariate=cfg["multivariate"], seed=seed)
    if name in ("random", "mes_greedy"):  # mes_greedy never asks the sampler
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown search strategy {name!r} (nsga2, tpe, random, mes_greedy)")


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

