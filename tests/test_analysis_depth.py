"""Relative depth, nearest layer and depth grids (round half up, documented)."""

from __future__ import annotations

import numpy as np
import pytest

from actstore.analysis import AnalysisError, depth_grid, nearest_layer, relative_depth


def ref_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def test_relative_depth():
    assert relative_depth(0, 16) == 0.0
    assert relative_depth(15, 16) == 1.0
    assert relative_depth(7, 29) == pytest.approx(0.25)
    assert [relative_depth(l_, 5) for l_ in range(5)] == [0, 0.25, 0.5, 0.75, 1.0]


def test_nearest_layer_round_trip_and_half_up():
    for L in (2, 3, 16, 28, 61):
        for l_ in range(L):
            assert nearest_layer(relative_depth(l_, L), L) == l_
    assert nearest_layer(0.5, 6) == 3  # 2.5 -> 3 (numpy's round-half-even gives 2)
    assert nearest_layer(0.3, 6) == 2  # 1.5 -> 2 (0.3 * 5 is 1.4999999999999998 in floats)
    assert nearest_layer(0.1, 6) == 1  # 0.5 -> 1 (numpy: 0)
    assert nearest_layer(0.29, 6) == 1
    assert nearest_layer(0.7, 1) == 0  # one-layer model
    rng = np.random.default_rng(0)
    for d in rng.uniform(0, 1, 200):
        assert nearest_layer(d, 28) == ref_half_up(d * 27)


def test_depth_grid_rounds_half_up():
    assert depth_grid(5, 6) == [0, 1, 3, 4, 5]  # 0, 1.25, 2.5, 3.75, 5
    assert np.round(np.linspace(0, 5, 5)).astype(int).tolist() == [0, 1, 2, 4, 5]  # numpy
    assert depth_grid(3, 4) == [0, 2, 3]  # 1.5 -> 2
    assert depth_grid(2, 16) == [0, 15]
    assert depth_grid(16, 16) == list(range(16))
    assert depth_grid(4, 2) == [0, 0, 1, 1]  # 0, 1/3, 2/3, 1: g > L repeats layers
    for g, L in [(5, 16), (8, 28), (9, 28), (11, 61), (7, 7), (3, 1)]:
        grid = depth_grid(g, L)
        assert len(grid) == g and grid[0] == 0 and grid[-1] == L - 1
        assert grid == [ref_half_up(x) for x in np.linspace(0, L - 1, g)]
        assert grid == [nearest_layer(i / (g - 1), L) for i in range(g)]
        assert grid == sorted(grid)


def test_bad_inputs():
    with pytest.raises(AnalysisError, match=r"depth must be in \[0, 1\], got 1.2"):
        nearest_layer(1.2, 16)
    with pytest.raises(AnalysisError, match=r"depth must be in \[0, 1\], got -0.1"):
        nearest_layer(-0.1, 16)
    with pytest.raises(AnalysisError, match=r"depth must be in \[0, 1\], got nan"):
        nearest_layer(float("nan"), 16)
    with pytest.raises(AnalysisError, match=r"depth must be a number in \[0, 1\], got '0.5'"):
        nearest_layer("0.5", 16)
    with pytest.raises(AnalysisError, match=r"grid size g must be >= 2, got 1"):
        depth_grid(1, 16)
    with pytest.raises(AnalysisError, match=r"grid size g must be an integer, got 2.5"):
        depth_grid(2.5, 16)
    with pytest.raises(AnalysisError, match=r"layer must be <= 15 and >= 0, got 16"):
        relative_depth(16, 16)
    with pytest.raises(AnalysisError, match=r"layer must be >= 0 and <= 15, got -1"):
        relative_depth(-1, 16)
    with pytest.raises(AnalysisError, match=r"n_layers must be >= 2, got 1"):
        relative_depth(0, 1)
    with pytest.raises(AnalysisError, match=r"n_layers must be >= 1, got 0"):
        depth_grid(3, 0)
    with pytest.raises(AnalysisError, match=r"layer must be an integer, got True"):
        relative_depth(True, 16)
    assert nearest_layer(np.float32(0.5), 3) == 1
