"""The correction from Σ blocks to a whole network, and the numbers that say how good a table is.

Two forms, both linear in the per-block statistic so `LatencyTable.predict` stays a sum:
- `scale`:    measured ≈ a · Σ_blocks t + b
- `per_kind`: measured ≈ Σ_kind a_kind · Σ_{blocks of that kind} t + b   (ridge towards `scale`'s a)
Fitted on relative error (each network weighs the same, as the ±10 % acceptance does), on
whole networks measured on the same target; the form with the lower leave-one-out error is kept.
"""
from __future__ import annotations

import numpy as np

from .keys import block_keys

RIDGE = 0.05  # pulls per-kind scales towards the common one when a kind is rare in the fit set


def kind_of(key: str) -> str:
    return key.split("(", 1)[0]


def kind_sums(table, archs, kinds: list[str], group=kind_of) -> np.ndarray:
    """(n_archs, n_kinds) Σ of the table statistic per block kind (or per `group(key)`, one of `kinds`)."""
    stat = table.statistic
    X = np.zeros((len(archs), len(kinds)))
    idx = {k: i for i, k in enumerate(kinds)}
    for n, a in enumerate(archs):
        for key in block_keys(a):
            X[n, idx[group(key)]] += table.rows[key][stat]
    return X


def _fit(X: np.ndarray, y: np.ndarray, form: str, ridge: float = RIDGE) -> tuple[np.ndarray, float]:
    w = 1.0 / y
    s = X.sum(1)
    A = np.stack([s * w, w], 1)
    (a0, b0), *_ = np.linalg.lstsq(A, np.ones_like(y), rcond=None)
    if a0 <= 0:  # a network of more block time measured faster (noise in a few fit networks): no such
        # correction is a latency; the scale through the origin keeps predictions positive and ordered
        a0, b0 = _origin_scale(s, w), 0.0
    if form == "scale":
        return np.full(X.shape[1], a0), float(b0)
    # per-kind: [X/y, 1/y] @ [a, b] ≈ 1, with a ridge pulling each a_k to a0
    k = X.shape[1]
    A = np.concatenate([X * w[:, None], w[:, None]], 1)
    lam = ridge * np.sqrt(len(y))
    R = np.concatenate([lam * np.eye(k), np.zeros((k, 1))], 1)
    sol, *_ = np.linalg.lstsq(np.concatenate([A, R]), np.concatenate([np.ones_like(y), lam * np.full(k, a0)]), rcond=None)
    return sol[:k], float(sol[k])


def _origin_scale(s: np.ndarray, w: np.ndarray) -> float:
    """The scale a of measured ≈ a · Σ_blocks (no intercept), fitted on relative error."""
    sw = s * w
    return float(sw.sum() / (sw @ sw))


def _loo_mape(X: np.ndarray, y: np.ndarray, form: str, ridge: float = RIDGE) -> float:
    errs = []
    for i in range(len(y)):
        m = np.arange(len(y)) != i
        a, b = _fit(X[m], y[m], form, ridge)
        errs.append(abs(X[i] @ a + b - y[i]) / y[i])
    return float(np.mean(errs))


def choose_form(X: np.ndarray, y: np.ndarray) -> tuple[str, dict]:
    """The form with the lower leave-one-out error, and the errors (LOO needs >= 4 networks; with fewer
    it is not measured: null, never NaN, so the JSON stays strict, and the form is `scale`). `per_kind`
    is a candidate only where every kind's fitted scale is positive: a rare kind among a few noisy
    networks can come out negative, and a table refuses such a correction when it loads."""
    if len(y) < 4:
        return "scale", {"scale": None}
    loo = {form: _loo_mape(X, y, form) for form in ("scale", "per_kind")}
    candidates = [f for f in loo if f == "scale" or bool(np.all(_fit(X, y, f)[0] > 0))]
    return min(candidates, key=lambda f: loo[f]), loo


def fit_correction(table, records: list[dict], positive_for=()) -> dict:
    """Fit on whole-network `records` (from `profiler.measure_networks`) and return the provenance entry.
    `positive_for`: archs (the space's smallest) the correction must predict a positive latency for. A
    negative intercept fitted on a few noisy networks can take a net smaller than all of them below zero,
    and no such correction is a latency: then the scale through the origin is fitted instead."""
    archs = [r["arch"] for r in records]
    y = np.array([r[table.statistic] for r in records])
    kinds = sorted({kind_of(k) for a in archs for k in block_keys(a)})
    X = kind_sums(table, archs, kinds)
    raw = X.sum(1)
    result = {"fit_networks": len(records), "fit_arch_ids": [r["arch_id"] for r in records],
              "raw_sum_over_measured_mean": float(np.mean(raw / y)),
              "statistic": table.statistic}
    form, loo = choose_form(X, y)
    a, b = _fit(X, y, form)
    scales = dict(zip(kinds, a))
    floor = [arch.id for arch in positive_for if not table.missing(arch)
             and sum(table.rows[k][table.statistic] * scales.get(kind_of(k), float(np.mean(a)))
                     for k in block_keys(arch)) + b <= 0]
    if floor:
        form, a, b = "scale", np.full(len(kinds), _origin_scale(raw, 1.0 / y)), 0.0
        result["intercept_dropped_for"] = floor  # (what it would have predicted at or below 0 ms)
    pred = X @ a + b
    result.update({"form": form, "a": {k: float(v) for k, v in zip(kinds, a)}, "b": b,
                   "loo_mape": loo, "fit_mape": float(np.mean(np.abs(pred - y) / y)),
                   "equation": ("measured ≈ a·Σblocks + b" if form == "scale"
                                else "measured ≈ Σ_kind a_kind·Σ(blocks of kind) + b")})
    return result


def kendall_tau(x, y) -> float:
    """Kendall's tau-b (ties handled), O(n²): fine for a few hundred points, no scipy needed."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(len(x), 1)
    dx, dy = dx[iu], dy[iu]
    denom = np.sqrt(np.sum(dx != 0) * np.sum(dy != 0))
    return float(np.sum(dx * dy) / denom) if denom else float("nan")


def fidelity_metrics(predicted, measured) -> dict:
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = (p - m) / m
    return {"n": int(len(m)), "within_5pct": float(np.mean(np.abs(rel) <= 0.05)),
            "within_10pct": float(np.mean(np.abs(rel) <= 0.10)), "mape": float(np.mean(np.abs(rel))),
            "max_abs_pct_error": float(np.max(np.abs(rel))), "mean_signed_pct_error": float(np.mean(rel)),
            "kendall_tau": kendall_tau(p, m)}
