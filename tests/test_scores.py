"""DD-Ranking's scores: hand-computed values, the bounds, the doctests and refused inputs."""

from __future__ import annotations

import doctest
import math

import pytest

from exdistill import scores
from exdistill.scores import ars, dd_ranking_scores, hlr, ior, lrs, normalise

E, E_INV = math.e, math.exp(-1)


def test_ior_and_hlr_are_differences_of_accuracies():
    assert ior(0.8, 0.7) == pytest.approx(0.1)
    assert ior(0.6, 0.7) == pytest.approx(-0.1)  # worse than random: negative
    assert hlr(0.8, 1.0) == pytest.approx(0.2)
    assert hlr(0.8, 0.8) == 0.0


def test_lrs_by_hand():
    # IOR 0.1, HLR 0.2: α = 0.5·0.1 − 0.5·0.2 = −0.05
    assert lrs(0.1, 0.2) == pytest.approx((math.exp(-0.05) - E_INV) / (E - E_INV), abs=1e-15)
    assert lrs(0.1, 0.2) == pytest.approx(0.248192, abs=1e-6)
    # w = 1: only IOR counts; w = 0: only HLR
    assert lrs(0.3, 0.9, w=1.0) == pytest.approx(normalise(0.3))
    assert lrs(0.3, 0.9, w=0.0) == pytest.approx(normalise(-0.9))


def test_lrs_bounds_and_its_value_at_alpha_zero():
    assert lrs(1.0, -1.0) == 1.0  # α = 1
    assert lrs(-1.0, 1.0) == 0.0  # α = −1
    # IOR = HLR = 0 (synthetic = random = full): (1 − e^−1)/(e − e^−1) = 1/(1 + e), not 0.5
    assert lrs(0.0, 0.0) == pytest.approx((1 - E_INV) / (E - E_INV), abs=1e-15)
    assert lrs(0.0, 0.0) == pytest.approx(1 / (1 + E), abs=1e-15)
    assert lrs(0.0, 0.0) == pytest.approx(0.268941, abs=1e-6)


def test_lrs_increases_with_the_synthetic_accuracy():
    values = [dd_ranking_scores(s / 10, 0.5, 0.9)["lrs"] for s in range(11)]
    assert values == sorted(values) and len(set(values)) == len(values)
    assert all(0.0 <= v <= 1.0 for v in values)


def test_ars_by_hand():
    # β = 0.5·(0.8 − 0.7) + 0.5·(0.6 − 0.4) = 0.15
    assert ars(0.8, 0.7, 0.6, 0.4) == pytest.approx((math.exp(0.15) - E_INV) / (E - E_INV))
    assert ars(0.8, 0.7, 0.6, 0.4, gamma=1.0) == pytest.approx(normalise(0.1))
    assert ars(0.8, 0.7, 0.6, 0.4, gamma=0.0) == pytest.approx(normalise(0.2))
    assert ars(1.0, 0.0, 1.0, 0.0) == 1.0 and ars(0.0, 1.0, 0.0, 1.0) == 0.0


def test_dd_ranking_scores():
    s = dd_ranking_scores(0.8, 0.7, 1.0)
    assert set(s) == {"ior", "hlr", "lrs"}
    assert s["ior"] == pytest.approx(0.1) and s["hlr"] == pytest.approx(0.2)
    assert s["lrs"] == pytest.approx(lrs(0.1, 0.2))
    # w = 0.5: α is the synthetic accuracy's lead over the midpoint of random and full
    s = dd_ranking_scores(0.75, 0.5, 0.9)
    assert s["lrs"] == pytest.approx(normalise(0.75 - (0.5 + 0.9) / 2))


@pytest.mark.parametrize(
    "call",
    [
        lambda: ior(85.0, 70.0),  # percentages, not fractions
        lambda: hlr(0.8, 1.5),
        lambda: dd_ranking_scores(float("nan"), 0.5, 0.9),
        lambda: lrs(1.5, 0.0),
        lambda: lrs(0.1, 0.2, w=2.0),
        lambda: ars(0.8, 0.7, 0.6, -0.1),
        lambda: ars(0.8, 0.7, 0.6, 0.4, gamma=-0.5),
    ],
)
def test_out_of_range_inputs_are_refused(call):
    with pytest.raises(ValueError, match=r"\[0, 1\]|\[-1, 1\]"):
        call()


def test_doctests():
    result = doctest.testmod(scores)
    assert result.attempted >= 5 and result.failed == 0
