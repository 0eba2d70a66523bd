"""Centerline overlap and distance against analytic answers."""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.io import Geometry, Image, identity_direction
from voxseg.vessels import (
    centerline_distance,
    centerline_metrics,
    centerline_overlap,
    distal_recall,
)
from voxseg.vessels.centerline import Centerline, CenterlineBranch
from voxseg.vessels.metrics import branch_depths


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


def _straight(g, start, stop, n=30):
    return np.linspace(
        g.index_to_physical(np.array(start, float)), g.index_to_physical(np.array(stop, float)), n
    )


def test_distal_recall_counts_the_branches_beyond_the_second_bifurcation():
    # root along z, two children along y, each with two grandchildren along x (depth 2)
    g = Geometry((40, 40, 40), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), identity_direction())
    pts = {
        0: _straight(g, (2, 20, 20), (15, 20, 20)),
        1: _straight(g, (15, 20, 20), (15, 10, 20)),
        2: _straight(g, (15, 20, 20), (15, 30, 20)),
        3: _straight(g, (15, 10, 20), (15, 10, 8)),  # 12 mm
        4: _straight(g, (15, 10, 20), (15, 10, 36)),  # 16 mm
        5: _straight(g, (15, 30, 20), (15, 30, 10)),  # 10 mm
        6: _straight(g, (15, 30, 20), (15, 30, 30)),  # 10 mm
    }
    parents = {0: -1, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2}
    tree = Centerline(
        [
            CenterlineBranch(i, parents[i], p, np.full(len(p), 1.0),
                             [c for c, q in parents.items() if q == i])
            for i, p in pts.items()
        ]
    )  # fmt: skip
    assert branch_depths(tree) == {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 2, 6: 2}
    arr = np.zeros(g.shape, np.uint8)
    arr[10:20, 5:35, 5:38] = 1  # everything ...
    arr[13:18, 9:12, 21:38] = 0  # ... but branch 4 (x 20..36 at y 10), beyond its first 0.5 voxel
    result = distal_recall(Image.from_geometry(arr, g), tree)
    assert result["distal_length_mm"] == pytest.approx(48.0, abs=1e-6)
    # branch 4 is lost from x = 20.5 on: 15.5 of its 16 mm
    assert result["distal_recall"] == pytest.approx((48.0 - 15.5) / 48.0, abs=0.01)
    full = Image.from_geometry(np.ones(g.shape, np.uint8), g)
    assert distal_recall(full, tree)["distal_recall"] == pytest.approx(1.0)
    # a tree without a second bifurcation has no distal length
    shallow = Centerline([CenterlineBranch(0, -1, pts[0], np.full(30, 1.0))])
    assert np.isnan(distal_recall(full, shallow)["distal_recall"])
