"""Centerline overlap and distance against analytic answers."""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.io import Geometry, Image, identity_direction
from voxseg.vessels import centerline_distance, centerline_metrics, centerline_overlap
from voxseg.vessels.centerline import Centerline, CenterlineBranch


def _grid():
    return Geometry((40, 30, 30), (0.8, 0.6, 0.6), (2.0, 3.0, 4.0), identity_direction())


def _line_poly(g, start, stop, n=50):
    pts = np.linspace(
        g.index_to_physical(np.array(start, float)), g.index_to_physical(np.array(stop, float)), n
    )
    return Centerline([CenterlineBranch(0, -1, pts, np.full(n, 2.0))]).to_polydata(), pts


def test_overlap_is_the_length_share_inside(tubes):
    g = _grid()
    poly, pts = _line_poly(g, (5, 15, 15), (35, 15, 15))
    arr = np.zeros(g.shape, np.uint8)
    arr[:20, 10:20, 10:20] = 1  # covers index z < 19.5: from 5 to 19.5 of 5..35
    pred = Image.from_geometry(arr, g)
    assert centerline_overlap(pred, poly) == pytest.approx(14.5 / 30, abs=0.01)
    full = Image.from_geometry(np.ones(g.shape, np.uint8), g)
    assert centerline_overlap(full, poly) == pytest.approx(1.0)


def test_shared_trunk_counts_once(tubes):
    g = _grid()
    trunk = np.linspace(
        g.index_to_physical(np.array([2.0, 15, 15])),
        g.index_to_physical(np.array([20.0, 15, 15])),
        20,
    )
    j = trunk[-1]
    a = np.linspace(j, g.index_to_physical(np.array([36.0, 15, 27])), 20)
    b = np.linspace(j, g.index_to_physical(np.array([36.0, 15, 3])), 20)
    poly = Centerline(
        [
            CenterlineBranch(0, -1, trunk, np.full(20, 2.0), [1, 2]),
            CenterlineBranch(1, 0, a, np.full(20, 1.5)),
            CenterlineBranch(2, 0, b, np.full(20, 1.5)),
        ]
    ).to_polydata()
    arr = np.zeros(g.shape, np.uint8)
    arr[:20, 12:19, 12:19] = 1  # the trunk up to index z 19.5 (the junction is at 20)
    pred = Image.from_geometry(arr, g)
    lengths = [np.linalg.norm(x[-1] - x[0]) for x in (trunk, a, b)]
    expected = (17.5 * 0.8) / sum(lengths)  # counted twice it would be ≈ 0.5
    assert centerline_overlap(pred, poly) == pytest.approx(expected, abs=0.01)


def test_distance_of_a_shifted_tube(tubes):
    g = Geometry((40, 40, 40), (0.5, 0.5, 0.5), (0.0, 0.0, 0.0), identity_direction())
    poly, pts = _line_poly(g, (4, 20, 20), (36, 20, 20))
    shift = 1.0 * g.direction_matrix[:, 1]  # 1 mm along array axis y
    pred = tubes.rasterise(g, [(pts + shift, np.full(len(pts), 2.5))])
    d = centerline_distance(pred, poly)
    assert d == pytest.approx(1.0, abs=0.25)
    metrics = centerline_metrics(pred, poly)
    assert metrics["centerline_overlap"] == pytest.approx(1.0, abs=0.05)
    assert metrics["centerline_length_mm"] == pytest.approx(16.0, abs=0.01)
    empty = Image.from_geometry(np.zeros(g.shape, np.uint8), g)
    assert centerline_overlap(empty, poly) == 0.0
    assert centerline_distance(empty, poly) == float("inf")
