"""MES: the formula against hand-computed values, per-target units, clear errors."""
import math

import pytest

from hwnas.mes import MES, MESError, mes


def test_mobilenetv2_itself_scores_the_base_score():
    assert mes(0.9, 3e6, u_latency_ms=0.9) == pytest.approx(100.0)


def test_hand_computed_values():
    # 4x the size and 2x the latency: 100 * 4^-0.5 * 2^-1 = 25
    assert mes(1.8, 12e6, u_latency_ms=0.9) == pytest.approx(25.0)
    # half the size, 3x faster: 100 * 0.5^-0.5 * (1/3)^-1 = 100 * sqrt(2) * 3
    assert mes(0.3, 1.5e6, u_latency_ms=0.9) == pytest.approx(300 * math.sqrt(2))
    # docs/search.md's worked example: EfficientFormerV2-S0 (3,600,256 params, 0.9 ms on iPhone 12)
    assert mes(0.9, 3_600_256, u_latency_ms=0.9) == pytest.approx(91.28, abs=0.01)
    # other weights and score
    assert mes(2.0, 6e6, u_latency_ms=1.0, score=10, alpha_latency=2.0, alpha_size=1.0) == pytest.approx(
        10 * 2 ** -1 * 2 ** -2)


def test_smaller_or_faster_scores_higher():
    m = MES(u_latency_ms=1.0)
    assert m(1.0, 3e6) > m(1.1, 3e6) > m(1.1, 4e6)


def test_target_units_fall_back_to_the_table_provenance():
    m = MES.for_target({"u_latency_ms": None, "alpha_size": 0.25}, {"mes_unit_latency_ms": 2.0}, "x")
    assert (m.u_latency_ms, m.alpha_size, m.alpha_latency, m.u_size, m.score) == (2.0, 0.25, 1.0, 3e6, 100)
    assert MES.for_target({"u_latency_ms": 5.0}, {"mes_unit_latency_ms": 2.0}).u_latency_ms == 5.0


def test_missing_unit_and_bad_metrics_are_clear_errors():
    with pytest.raises(MESError, match="u_latency_ms"):
        MES.for_target({}, {}, "coreml")
    with pytest.raises(MESError, match="latency_ms"):
        mes(0.0, 3e6, u_latency_ms=1.0)
    with pytest.raises(MESError, match="params"):
        mes(1.0, -1, u_latency_ms=1.0)
