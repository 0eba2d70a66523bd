"""Centerline extraction against the analytic centerlines of rasterised tubes.

Measured on these phantoms (voxel sizes 0.5–1 mm, radii 2–3 mm): mean distance from the
extracted points to the analytic centerline 0.14–0.24 mm, mean radius error 0.07–0.12 mm
(tips included). The tests assert mean distance < 0.35 mm (about half the voxel size) and
mean radius error < 0.2 mm.
"""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.io import Geometry, identity_direction, read_vtp
from voxseg.io.vtp import BIFURCATION_ID, CENTERLINE_ID, CENTERLINE_RADIUS
from voxseg.vessels.centerline import (
    Centerline,
    extract_centerline,
    polyline_segments,
    read_centerline_json,
    resample_segments,
)


def _phantom(tubes, shape, spacing, direction, rel_tubes):
    geometry = Geometry(shape, spacing, (10.0, -5.0, 3.0), direction)
    centre = geometry.index_to_physical((np.asarray(shape) - 1) / 2)
    abs_tubes = [(p + centre, r) for p, r in rel_tubes]
    return tubes.rasterise(geometry, abs_tubes), abs_tubes


def _errors(tubes, cl: Centerline, ref):
    pts = np.concatenate([b.points for b in cl.branches])
    rad = np.concatenate([b.radii for b in cl.branches])
    dists = np.stack([tubes.distance(pts, p) for p, _ in ref])
    nearest = dists.argmin(axis=0)
    true_r = np.array(
        [
            ref[k][1][np.argmin(np.linalg.norm(ref[k][0] - pt, axis=1))]
            for k, pt in zip(nearest, pts, strict=True)
        ]
    )
    return float(dists.min(axis=0).mean()), float(np.abs(rad - true_r).mean())


def _line(a, b, n=40):
    return np.linspace(a, b, n)


@pytest.mark.parametrize(
    ("shape", "spacing", "angle", "expected_branches", "make"),
    [
        ((40, 30, 30), (1.0, 1.0, 1.0), None, 1, "straight"),
        ((40, 40, 40), (0.8, 0.5, 0.6), 25.0, 1, "straight"),
        ((30, 45, 45), (0.9, 0.6, 0.6), 15.0, 1, "curved"),
        ((40, 40, 40), (0.8, 0.6, 0.7), 30.0, 3, "y"),
    ],
)
def test_extracted_centerline_matches_analytic(
    tubes, shape, spacing, angle, expected_branches, make
):
    if make == "straight":
        ref = [(_line([0, 0, -11], [0, 0, 11]), np.full(40, 3.0))]
    elif make == "curved":
        th = np.linspace(0, 0.9 * np.pi, 80)
        arc = np.stack([9 * np.cos(th) - 0.5, 9 * np.sin(th) - 4.5, 0 * th], axis=1)
        ref = [(arc, np.linspace(2.5, 2.0, 80))]
    else:
        ref = [
            (_line([0, 0, -14], [0, 0, 0], 30), np.full(30, 2.5)),
            (_line([0, 0, 0], [8, 0, 12], 30), np.full(30, 2.0)),
            (_line([0, 0, 0], [-8, 0, 12], 30), np.full(30, 2.0)),
        ]
    direction = identity_direction() if angle is None else tubes.oblique(angle)
    mask, ref = _phantom(tubes, shape, spacing, direction, ref)
    cl = extract_centerline(mask)
    assert len(cl.branches) == expected_branches
    mean_dist, mean_radius_err = _errors(tubes, cl, ref)
    assert mean_dist < 0.35, mean_dist
    assert mean_radius_err < 0.2, mean_radius_err
    # The whole length is covered: each analytic end lies within its radius of the result.
    pts = np.concatenate([b.points for b in cl.branches])
    for p, r in ref:
        for end in (p[0], p[-1]):
            assert np.min(np.linalg.norm(pts - end, axis=1)) <= r[0] + 0.5


def test_bifurcation_tree_and_vtp_convention(tubes, tmp_path):
    ref = [
        (_line([0, 0, -14], [0, 0, 0], 30), np.full(30, 2.5)),
        (_line([0, 0, 0], [8, 0, 12], 30), np.full(30, 2.0)),
        (_line([0, 0, 0], [-8, 0, 12], 30), np.full(30, 2.0)),
    ]
    mask, ref = _phantom(tubes, (40, 40, 40), (0.8, 0.6, 0.7), tubes.oblique(30), ref)
    cl = extract_centerline(mask, root=ref[0][0][0])
    root = cl.branches[0]
    assert root.parent == -1 and len(root.children) == 2
    # The root starts at the inlet we asked for; the branching point is near the analytic one.
    assert np.linalg.norm(root.points[0] - ref[0][0][0]) < 3.0
    assert np.linalg.norm(root.points[-1] - ref[0][0][-1]) < 2.5
    assert set(cl.graph.successors(0)) == set(root.children)

    path = cl.write(tmp_path / "cl.vtp")
    poly = read_vtp(path)
    assert len(poly.lines) == 2  # one polyline per root → outlet path
    membership = poly.point_data[CENTERLINE_ID]
    assert membership.shape == (poly.num_points, 2)
    shared = membership.sum(axis=1) == 2
    # The shared points are exactly the trunk (its points and nothing else).
    assert shared.sum() == len(root.points)
    assert np.all(poly.point_data[CENTERLINE_RADIUS] > 0)
    bif = poly.point_data[BIFURCATION_ID]
    assert set(np.unique(bif)) == {-1, 0}
    near = np.linalg.norm(poly.points - root.points[-1], axis=1) <= root.radii[-1]
    np.testing.assert_array_equal(bif == 0, near)
    back = read_centerline_json(tmp_path / "cl.json")
    assert len(back.branches) == 3
    np.testing.assert_allclose(back.branches[1].points, cl.branches[1].points, atol=1e-5)


def test_empty_mask_gives_empty_centerline():
    from voxseg.io import Image

    cl = extract_centerline(Image(np.zeros((10, 10, 10), np.uint8)))
    assert cl.branches == [] and cl.to_polydata().num_points == 0


def _samples(cl: Centerline):
    """Points every 0.2 mm along the centerline's unique segments, with their lengths."""
    return resample_segments(*polyline_segments(cl.to_polydata()), 0.2)


def test_centerline_in_slabs_matches_the_analytic_and_the_single_call(tmp_path):
    """A generated tree skeletonized in four slabs (a forced small ``chunk_voxels``) is one
    connected tree on the analytic centerline, as the single call's."""
    from voxseg.data import Dataset
    from voxseg.synth import generate

    root = generate("vessels", tmp_path / "raw", num_train=1, num_test=0, seed=7)
    ds = Dataset(root)
    case = next(iter(ds.cases()))
    _, mask = ds.load_case(case)
    ref, ref_w = resample_segments(*polyline_segments(read_vtp(case.extras["centerline"])), 0.2)
    single = extract_centerline(mask, chunk_voxels=None)
    plane = mask.array.size // max(mask.array.shape)
    slabs = extract_centerline(mask, chunk_voxels=20 * plane)  # 64 planes: 4 slabs
    for cl in (single, slabs):
        assert sum(b.parent < 0 for b in cl.branches) == 1  # one tree: the slabs are joined
        pts, w = _samples(cl)
        to_ref = np.min(np.linalg.norm(pts[:, None] - ref[None], axis=2), axis=1)
        from_ref = np.min(np.linalg.norm(ref[:, None] - pts[None], axis=2), axis=1)
        assert np.average(to_ref, weights=w) < 0.35  # on the analytic centerline
        assert ref_w[from_ref < 1.0].sum() / ref_w.sum() > 0.97  # and covering it
    assert len(slabs.branches) == len(single.branches)
    assert slabs.length == pytest.approx(single.length, rel=0.05)
    pts, _ = _samples(slabs)
    single_pts = np.concatenate([b.points for b in single.branches])
    single_r = np.concatenate([b.radii for b in single.branches])
    slab_pts = np.concatenate([b.points for b in slabs.branches])
    slab_r = np.concatenate([b.radii for b in slabs.branches])
    d = np.linalg.norm(slab_pts[:, None] - single_pts[None], axis=2)
    near = d.min(axis=1) < 0.3
    assert near.mean() > 0.9
    assert np.abs(slab_r[near] - single_r[d.argmin(axis=1)[near]]).mean() < 0.1


def test_slab_distance_is_the_distance_transform_of_the_whole_mask(rng):
    """Slab by slab with a margin beyond the largest distance, the transform at any point is
    the one of the whole mask (edt's, no border as background)."""
    import edt

    from voxseg.vessels.centerline import SlabDistance, sample_distance

    mask = np.zeros((50, 20, 24), bool)
    mask[2:48, 4:15, 5:19] = True
    mask[20:30, 8:12, :] = True  # touches the grid's faces
    spacing = np.array([0.8, 0.5, 0.6])
    whole = edt.edt(mask, anisotropy=tuple(spacing), parallel=1)
    points = rng.uniform(0, 1, (300, 3)) * (np.asarray(mask.shape) - 1)
    slabs = SlabDistance(mask, spacing, 0, 7, int(np.ceil(whole.max() / 0.8)) + 2)
    np.testing.assert_allclose(slabs(points), sample_distance(whole, points), atol=1e-5)


def test_dust_is_dropped_in_slabs_as_in_the_single_call(tubes):
    """Specks of dust_voxels or fewer voxels give no branch, with or without slabs; a slab
    keeps the piece of a long vessel that it cuts, however small."""
    ref = [(_line([0, 0, -18], [0, 0, 18], 40), np.full(40, 2.0))]
    mask, _ = _phantom(tubes, (60, 20, 20), (1.0, 1.0, 1.0), identity_direction(), ref)
    arr = mask.array.copy()
    arr[10:12, 2:4, 2:4] = 1  # 8 voxels, apart from the tube
    arr[40:43, 15:17, 2:4] = 1  # 12 voxels
    speckled = mask.with_array(arr)
    single = extract_centerline(speckled, chunk_voxels=None)
    slabs = extract_centerline(speckled, chunk_voxels=20 * 20 * 16)
    for cl in (single, slabs):
        assert len(cl.branches) == 1
        assert cl.length == pytest.approx(36.0, abs=4.0)
    assert slabs.length == pytest.approx(single.length, abs=1.0)


def test_components_at_keeps_the_components_holding_the_points(rng):
    """Against scipy's labelling (26-connectivity); written into the mask when asked."""
    from scipy import ndimage

    from voxseg.vessels.centerline import components_at

    mask = rng.random((40, 30, 20)) > 0.7
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    points = np.argwhere(mask)[rng.choice(int(mask.sum()), 5)]
    points = np.concatenate([points, np.argwhere(~mask)[:3]])  # background points keep nothing
    want = np.isin(labels, labels[tuple(points.T)]) & mask
    assert 0 < want.sum() < mask.sum()
    np.testing.assert_array_equal(components_at(mask, points), want)
    inplace = mask.copy()
    assert components_at(inplace, points, out=inplace) is inplace
    np.testing.assert_array_equal(inplace, want)
