"""What a trial measures: accuracy (an evaluator), latency (a latency table), size and MES.

Latency and size are those of the deployment model (the arch at the space's input size, with the
deployment head -- or, for a backbone search, without any head); accuracy comes from the
evaluator at its own resolution (small images for the built-in digits supernet), always of the
arch as a classifier: the supernet's ImageNet-style proxy of how good the features are. Accuracies are cached by arch id, and seeded from the study's earlier
trials, so an arch is evaluated once per study whatever the number of workers or reruns.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

from search_spaces import Arch

from hwnas.mes import MES


class Evaluator(Protocol):
    def evaluate(self, arch: Arch) -> float: ...


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    latency_ms: float
    params: int
    macs: int
    mes: float

    def objective(self, name: str) -> float:
        return {"accuracy": self.accuracy, "latency": self.latency_ms, "params": float(self.params),
                "mes": self.mes}[name]

    def as_dict(self) -> dict:
        return dict(accuracy=self.accuracy, latency_ms=self.latency_ms, params=self.params,
                    macs=self.macs, mes=self.mes)


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
    """Metrics of archs for one target: table latency, analytic size, MES, cached accuracy."""

    def __init__(self, predict_ms: Callable[[Arch], float], mes: MES, evaluator: Evaluator,
                 num_classes: int = 1000, eval_resolution: int | None = None):
        self.predict_ms = predict_ms
        self.mes = mes
        self.evaluator = evaluator
        self.num_classes = num_classes
        self.eval_resolution = eval_resolution
        self.accuracies: dict[str, float] = {}  # arch id (deployment arch) -> accuracy
        self.evaluations = 0

    def cost(self, arch: Arch) -> tuple[float, int, int, float]:
        """(latency ms, params, MACs, MES): no evaluator involved."""
        lat = float(self.predict_ms(arch))
        params = arch.params(self.num_classes)
        return lat, params, arch.macs(self.num_classes), self.mes(lat, params)

    def accuracy(self, arch: Arch) -> float:
        if arch.id not in self.accuracies:
            eval_arch = arch if self.eval_resolution is None else arch.with_resolution(self.eval_resolution)
            eval_arch = eval_arch.with_task("classify")  # a backbone is judged by its classifier's accuracy
            self.accuracies[arch.id] = float(self.evaluator.evaluate(eval_arch))
            self.evaluations += 1
        return self.accuracies[arch.id]

    def metrics(self, arch: Arch) -> Metrics:
        lat, params, macs, m = self.cost(arch)
        return Metrics(self.accuracy(arch), lat, params, macs, m)
