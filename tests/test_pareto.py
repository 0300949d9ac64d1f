"""Front extraction and hypervolume against hand-computed cases."""

import pytest

from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front


def test_front_drops_dominated_points_and_sorts_by_x():
    points = [(1, 5), (2, 4), (1.5, 3), (3, 1), (2, 4), (0.5, 5)]
    # (1.5, 3) is dominated by (2, 4); the second (2, 4) duplicates; (0.5, 5) is dominated by (1, 5)
    assert pareto_front(points) == [0, 1, 3]


def test_single_point_and_ties_on_one_axis():
    assert pareto_front([(1.0, 1.0)]) == [0]
    assert pareto_front([(1, 2), (1, 3)]) == [1]  # same x, higher y dominates


def test_hypervolume_hand_computed():
    # staircase of (1, 3), (2, 2), (3, 1) above reference (0, 0): 1*3 + 1*2 + 1*1 = 6
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1)], (0, 0)) == pytest.approx(6.0)
    # a dominated point adds nothing; the reference shifts every slab
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1), (1.5, 1.5)], (0, 0)) == pytest.approx(6.0)
    assert hypervolume_2d([(1, 3), (2, 2), (3, 1)], (0.5, 0.5)) == pytest.approx(
        0.5 * 2.5 + 1 * 1.5 + 1 * 0.5
    )
    # points below the reference on either axis count for nothing
    assert hypervolume_2d([(1, 3), (-1, 10)], (0, 0)) == pytest.approx(3.0)
    assert hypervolume_2d([], (0, 0)) == 0.0


def test_hypervolume_of_a_dominating_front_is_larger():
    low = [(1, 2), (2, 1)]
    high = [(1.2, 2), (2, 1.2)]
    assert hypervolume_2d(high, (0, 0)) > hypervolume_2d(low, (0, 0))
