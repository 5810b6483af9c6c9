"""Pareto fronts and hypervolume over points with mixed directions ("maximize" / "minimize").

Pure numpy, small on purpose: the fronts of a search are a few hundred points in 2-3 objectives.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _as_min(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    pts = np.asarray(points, dtype=float).reshape(len(points), len(directions))
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return pts * sign


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """a is at least as good as b everywhere and strictly better somewhere."""
    x, y = _as_min([a, b], directions)
    return bool(np.all(x <= y) and np.any(x < y))


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the points no other point dominates (identical points are all kept)."""
    if len(points) == 0:
        return []
    p = _as_min(points, directions)
    keep = []
    for i in range(len(p)):
        le = np.all(p <= p[i], axis=1)
        lt = np.any(p < p[i], axis=1)
        if not np.any(le & lt):
            keep.append(i)
    return keep


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float],
                directions: Sequence[str]) -> float:
    """The volume dominated by `points` and bounded by `reference` (a point worse than all)."""
    ref = _as_min([reference], directions)[0]
    if len(points) == 0:
        return 0.0
    p = _as_min(points, directions)
    p = p[np.all(p < ref, axis=1)]
    if len(p) == 0:
        return 0.0
    return float(_hv(p[non_dominated(p, ["minimize"] * p.shape[1])], ref))


def _hv(p: np.ndarray, ref: np.ndarray) -> float:
    """Exact hypervolume by slicing along the last objective (minimisation)."""
    if p.shape[1] == 1:
        return float(ref[0] - p[:, 0].min())
    if p.shape[1] == 2:
        order = np.argsort(p[:, 0])
        vol, best_y = 0.0, ref[1]
        for x, y in p[order]:
            if y < best_y:
                vol += (ref[0] - x) * (best_y - y)
                best_y = y
        return vol
    order = np.argsort(p[:, -1])
    p = p[order]
    vol = 0.0
    for i in range(len(p)):
        upper = p[i + 1, -1] if i + 1 < len(p) else ref[-1]
        depth = upper - p[i, -1]
        if depth > 0:
            sub = p[: i + 1, :-1]
            vol += depth * _hv(sub[non_dominated(sub, ["minimize"] * sub.shape[1])], ref[:-1])
    return vol
