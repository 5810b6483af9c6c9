"""The Mobile Efficiency Score (EfficientFormerV2, §4): one number for "small and fast".

    MES = Score · ∏ᵢ (Mᵢ / Uᵢ)^(−αᵢ)        over i ∈ {size, latency}

Mᵢ is the model's metric (size: parameters; latency: milliseconds on the target), Uᵢ its unit
(MobileNetV2 ×1.0's: 3 M parameters, and its latency on the same target), αᵢ its weight. The
exponent is negative, so a smaller or faster model scores higher; a model exactly as large and as
fast as MobileNetV2 ×1.0 scores `Score`. Worked example in docs/search.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from hwnas.errors import HwnasError

#: The paper's defaults (every target may override them in its `mes:` section).
SCORE = 100.0
U_SIZE = 3.0e6  # MobileNetV2 x1.0 parameters
ALPHA_LATENCY = 1.0
ALPHA_SIZE = 0.5


class MESError(HwnasError, ValueError):
    """An MES that cannot be computed (a non-positive metric or unit, no latency unit)."""


def mes(latency_ms: float, params: float, *, u_latency_ms: float, score: float = SCORE,
        u_size: float = U_SIZE, alpha_latency: float = ALPHA_LATENCY,
        alpha_size: float = ALPHA_SIZE) -> float:
    """Score · (params/u_size)^(−alpha_size) · (latency_ms/u_latency_ms)^(−alpha_latency)."""
    for name, v in (("latency_ms", latency_ms), ("params", params), ("u_latency_ms", u_latency_ms),
                    ("u_size", u_size)):
        if v is None or not math.isfinite(v) or v <= 0:
            raise MESError(f"MES needs a positive {name}; got {v!r}")
    return score * (params / u_size) ** (-alpha_size) * (latency_ms / u_latency_ms) ** (-alpha_latency)


@dataclass(frozen=True)
class MES:
    """The MES of one target: its units and weights, resolved (`u_latency_ms` is a number)."""

    u_latency_ms: float
    score: float = SCORE
    u_size: float = U_SIZE
    alpha_latency: float = ALPHA_LATENCY
    alpha_size: float = ALPHA_SIZE

    def __call__(self, latency_ms: float, params: float) -> float:
        return mes(latency_ms, params, u_latency_ms=self.u_latency_ms, score=self.score,
                   u_size=self.u_size, alpha_latency=self.alpha_latency, alpha_size=self.alpha_size)

    @classmethod
    def for_target(cls, mes_cfg: Mapping[str, Any] | None, provenance: Mapping[str, Any] | None = None,
                   target: str = "?") -> "MES":
        """Resolve a target's `mes:` section; `u_latency_ms: null` takes the latency table's
        `mes_unit_latency_ms` (MobileNetV2 ×1.0 measured or estimated on that target)."""
        cfg = dict(mes_cfg or {})
        u_lat = cfg.get("u_latency_ms")
        if u_lat is None:
            u_lat = (provenance or {}).get("mes_unit_latency_ms")
        if u_lat is None:
            raise MESError(
                f"target {target!r}: no latency unit for the MES. Its latency table has no "
                "`mes_unit_latency_ms` (MobileNetV2 x1.0 on that target); set one with "
                f"`+target={target} target.mes.u_latency_ms=<ms>`.")
        u_size = cfg.get("u_size")
        return cls(u_latency_ms=float(u_lat),
                   score=float(cfg.get("score") if cfg.get("score") is not None else SCORE),
                   u_size=float(u_size if u_size is not None else U_SIZE),
                   alpha_latency=float(cfg.get("alpha_latency") if cfg.get("alpha_latency") is not None
                                       else ALPHA_LATENCY),
                   alpha_size=float(cfg.get("alpha_size") if cfg.get("alpha_size") is not None
                                    else ALPHA_SIZE))

    def describe(self) -> str:
        return (f"MES = {self.score:g} · (params/{self.u_size:.3g})^-{self.alpha_size:g} · "
                f"(latency/{self.u_latency_ms:.4g} ms)^-{self.alpha_latency:g}")


__all__ = ["mes", "MES", "MESError", "SCORE", "U_SIZE", "ALPHA_LATENCY", "ALPHA_SIZE"]
