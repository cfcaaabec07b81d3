"""Table 1's standardised mean differences (vigil.analysis.describe, results.table1_smd) against values
computed by hand; the arithmetic is in the comments."""

from __future__ import annotations

import math

import pytest

from vigil.analysis.describe import smd_categorical, smd_continuous


def test_continuous_smd_by_hand():
    # means 5 and 2, SDs 3 and 1: pooled SD = sqrt((3^2 + 1^2) / 2) = sqrt(10 / 2) = sqrt(5) = 2.2360680
    # SMD = |5 - 2| / sqrt(5) = 3 / 2.2360680 = 1.3416408
    assert smd_continuous(5.0, 3.0, 2.0, 1.0) == pytest.approx(3 / math.sqrt(5), rel=1e-12)
    assert smd_continuous(5.0, 3.0, 2.0, 1.0) == pytest.approx(1.3416408, abs=1e-7)
    # absolute: the order of the groups does not matter
    assert smd_continuous(2.0, 1.0, 5.0, 3.0) == pytest.approx(1.3416408, abs=1e-7)
    # age 41.5 (SD 10) vs 38.0 (SD 8): pooled = sqrt((100 + 64) / 2) = sqrt(82) = 9.0553851;
    # 3.5 / 9.0553851 = 0.3865103
    assert smd_continuous(41.5, 10.0, 38.0, 8.0) == pytest.approx(0.3865103, abs=1e-7)


def test_continuous_smd_edge_cases():
    assert smd_continuous(3.0, 0.0, 3.0, 0.0) == 0.0  # no spread and equal means: no difference
    assert smd_continuous(3.0, 0.0, 4.0, 0.0) is None  # no spread, different means: infinite
    assert smd_continuous(3.0, None, 4.0, 1.0) is None  # one patient: no SD
    assert smd_continuous(3.0, float("nan"), 4.0, 1.0) is None


def test_categorical_smd_two_levels_by_hand():
    # 30/100 vs 50/100 in the first level, so p1 = 0.7 and p0 = 0.5 in the second:
    # |0.7 - 0.5| / sqrt((0.7 * 0.3 + 0.5 * 0.5) / 2) = 0.2 / sqrt((0.21 + 0.25) / 2) = 0.2 / sqrt(0.23)
    # = 0.2 / 0.4795832 = 0.4170288
    assert smd_categorical([30, 70], [50, 50]) == pytest.approx(0.2 / math.sqrt(0.23), rel=1e-12)
    assert smd_categorical([30, 70], [50, 50]) == pytest.approx(0.4170288, abs=1e-7)
    # counts, not proportions: 3/10 vs 10/20 is the same comparison
    assert smd_categorical([3, 7], [10, 10]) == pytest.approx(0.4170288, abs=1e-7)


def test_categorical_smd_three_levels_by_hand():
    # group 1: 20, 30, 50 of 100 -> p1 = (0.3, 0.5) for levels 2 and 3; group 0: 40, 40, 20 -> p0 = (0.4, 0.2)
    # delta = p1 - p0 = (-0.1, 0.3)
    # S1 = diag(p1) - p1 p1' = [[0.3 * 0.7, -0.3 * 0.5], [-0.15, 0.5 * 0.5]] = [[0.21, -0.15], [-0.15, 0.25]]
    # S0 = [[0.4 * 0.6, -0.4 * 0.2], [-0.08, 0.2 * 0.8]]               = [[0.24, -0.08], [-0.08, 0.16]]
    # S = (S1 + S0) / 2 = [[0.225, -0.115], [-0.115, 0.205]]
    # det S = 0.225 * 0.205 - 0.115^2 = 0.046125 - 0.013225 = 0.0329
    # S^-1 = [[0.205, 0.115], [0.115, 0.225]] / 0.0329
    # delta' S^-1 delta = (0.205 * 0.01 + 2 * 0.115 * (-0.1) * 0.3 + 0.225 * 0.09) / 0.0329
    #                   = (0.00205 - 0.0069 + 0.02025) / 0.0329 = 0.0154 / 0.0329 = 0.4680851
    # SMD = sqrt(0.4680851) = 0.6841675
    assert smd_categorical([20, 30, 50], [40, 40, 20]) == pytest.approx(math.sqrt(0.0154 / 0.0329), rel=1e-10)
    assert smd_categorical([20, 30, 50], [40, 40, 20]) == pytest.approx(0.6841675, abs=1e-7)
    # which level is left out does not matter (the statistic is a Mahalanobis distance)
    assert smd_categorical([50, 20, 30], [20, 40, 40]) == pytest.approx(0.6841675, abs=1e-7)


def test_categorical_smd_edge_cases():
    # a level absent from both groups is dropped: the two-level value above
    assert smd_categorical([30, 70, 0], [50, 50, 0]) == pytest.approx(0.4170288, abs=1e-7)
    assert smd_categorical([0, 30, 70], [0, 50, 50]) == pytest.approx(0.4170288, abs=1e-7)
    assert smd_categorical([10, 20], [20, 40]) == 0.0  # same proportions
    assert smd_categorical([10, 0], [20, 0]) == 0.0  # one level only
    assert smd_categorical([0, 0], [20, 5]) is None  # a group without patients
    # a level in one group only: p1 = 1 for level 2, p0 = 0.5: 0.5 / sqrt((0 + 0.25) / 2) = 0.5 / 0.3535534 = 1.4142136
    assert smd_categorical([0, 10], [5, 5]) == pytest.approx(math.sqrt(2), rel=1e-12)

