"""What a trial measures: accuracy (an evaluator), latency per target (latency tables), size and MES.

Latency and size are those of the deployment model (the arch at the space's input size, with the
deployment head -- or, for a backbone search, without any head); accuracy comes from the
evaluator at its own resolution (small images for the built-in digits supernet), always of the
arch as a classifier: the supernet's ImageNet-style proxy of how good the features are. A search
scores one or several targets: each arch gets one accuracy and one size, and one latency and one
MES per target. Accuracies are cached by arch id, and seeded from the study's earlier trials, so an
arch is evaluated once per study whatever the number of workers, reruns or targets.

How the figures are named (trial attributes, CSV columns, objectives, constraints) depends on the
number of targets, and is stated here once: with one target, `latency_ms` and `mes` (as before
several targets existed); with several, `latency_ms.<target>` and `mes.<target>` for each, and
`mes` is the worst (lowest) MES across them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Protocol, Sequence

from search_spaces import Arch

from hwnas.errors import HwnasError
from hwnas.mes import MES


class EvaluatorError(HwnasError, ValueError):
    """An accuracy source returned something that is no accuracy (NaN, inf)."""


class Evaluator(Protocol):
    def evaluate(self, arch: Arch) -> float: ...


@dataclass(frozen=True)
class LatencyTarget:
    """One target a search predicts latency (and MES) for."""
    name: str
    predict_ms: Callable[[Arch], float]
    mes: MES
    estimated: bool = False  # the table is a cost model, not a measurement on the device


def latency_key(target: str, targets: Sequence[str]) -> str:
    """The record column / trial attribute of a target's latency."""
    return "latency_ms" if len(targets) == 1 else f"latency_ms.{target}"


def mes_key(target: str, targets: Sequence[str]) -> str:
    """The record column / trial attribute of a target's MES."""
    return "mes" if len(targets) == 1 else f"mes.{target}"


def expand_objectives(objectives: Sequence[str], targets: Sequence[str]) -> list[str]:
    """The study's objectives: with several targets, `latency` becomes one objective per target
    (`latency.<target>`); `mes` is the worst MES across targets."""
    if len(targets) == 1:
        return list(objectives)
    return [x for o in objectives for x in ([f"latency.{t}" for t in targets] if o == "latency" else [o])]


def objective_key(objective: str) -> str:
    """The record column an (expanded) objective reads."""
    if objective == "latency":
        return "latency_ms"
    if objective.startswith("latency."):
        return "latency_ms." + objective.split(".", 1)[1]
    return objective


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    params: int
    macs: int
    latency: Mapping[str, float]  # target -> predicted ms (deployment arch)
    mes_by_target: Mapping[str, float]  # target -> MES

    @property
    def targets(self) -> list[str]:
        return list(self.latency)

    @property
    def latency_ms(self) -> float:
        """The latency of a one-target search."""
        if len(self.latency) != 1:
            raise ValueError(f"latency_ms of a {len(self.latency)}-target search: name the target")
        return next(iter(self.latency.values()))

    @property
    def mes(self) -> float:
        """The MES, the worst (lowest) across targets."""
        return min(self.mes_by_target.values())

    def objective(self, name: str) -> float:
        return float(self.as_dict()[objective_key(name)])

    def as_dict(self) -> dict:
        """The figures under their record names (one target: accuracy, latency_ms, params, macs, mes)."""
        t = self.targets
        if len(t) == 1:
            return dict(accuracy=self.accuracy, latency_ms=self.latency_ms, params=self.params,
                        macs=self.macs, mes=self.mes)
        return dict(accuracy=self.accuracy, **{latency_key(x, t): self.latency[x] for x in t},
                    params=self.params, macs=self.macs, mes=self.mes,
                    **{mes_key(x, t): self.mes_by_target[x] for x in t})


class ProxyEvaluator:
    """NOT accuracy: 100·(1 − e^(−√(MACs/50 M)·(params/3 M)^0.15 / 2)), monotone in both.

    A stand-in that needs no torch and no training, for tests and dry runs of latency/size
    trade-offs; every report made with it says "proxy score".
    """

    label = "proxy score (not accuracy)"
    resolution = None

    def __init__(self, num_classes: int = 1000):
        self.num_classes = num_classes
        self.calls = 0

    def evaluate(self, arch: Arch) -> float:
        self.calls += 1
        macs, params = arch.macs(self.num_classes), arch.params(self.num_classes)
        return 100.0 * (1.0 - math.exp(-math.sqrt(macs / 5e7) * (params / 3e6) ** 0.15 / 2.0))


class Scorer:
    """Metrics of archs for one or several targets: table latency and MES per target, analytic
    size, cached accuracy."""

    def __init__(self, targets: Sequence[LatencyTarget], evaluator: Evaluator,
                 num_classes: int = 1000, eval_resolution: int | None = None):
        if not targets:
            raise ValueError("a Scorer needs at least one target")
        self.targets = list(targets)
        self.evaluator = evaluator
        self.num_classes = num_classes
        self.eval_resolution = eval_resolution
        self.accuracies: dict[str, float] = {}  # arch id (deployment arch) -> accuracy
        self.evaluations = 0

    @property
    def target_names(self) -> list[str]:
        return [t.name for t in self.targets]

    def cost(self, arch: Arch) -> Metrics:
        """Latency, size and MES; accuracy NaN (no evaluator involved)."""
        params = arch.params(self.num_classes)
        lat = {t.name: float(t.predict_ms(arch)) for t in self.targets}
        return Metrics(math.nan, params, arch.macs(self.num_classes), lat,
                       {t.name: t.mes(lat[t.name], params) for t in self.targets})

    def accuracy(self, arch: Arch) -> float:
        if arch.id not in self.accuracies:
            eval_arch = arch if self.eval_resolution is None else arch.with_resolution(self.eval_resolution)
            eval_arch = eval_arch.with_task("classify")  # a backbone is judged by its classifier's accuracy
            acc = float(self.evaluator.evaluate(eval_arch))
            # NaN: Optuna would fail the trial and the search ask for another, forever; outside 0-100: no
            # top-1 % (a predictor far outside the pairs it was fitted on, or a broken file)
            if not 0.0 <= acc <= 100.0:
                source = getattr(self.evaluator, "path", None) or type(self.evaluator).__name__
                raise EvaluatorError(f"the accuracy source ({source}) returned {acc} for arch {arch.id}: no "
                                     "top-1 % (a number in [0, 100]), so the search stops here; check that "
                                     "predictor or checkpoint (refit or retrain it), or use another evaluator=")
            self.accuracies[arch.id] = acc
            self.evaluations += 1
        return self.accuracies[arch.id]

    def metrics(self, arch: Arch) -> Metrics:
        c = self.cost(arch)
        return Metrics(self.accuracy(arch), c.params, c.macs, c.latency, c.mes_by_target)
