"""The centerline-guided patch sampler: walk rules, patch rules, dataset, resume, errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from voxseg.data import Dataset, write_dataset_json
from voxseg.errors import VoxsegError
from voxseg.io import (
    Geometry,
    Image,
    PolyData,
    read_image,
    write_image,
    write_vtp,
)
from voxseg.io.vtp import BIFURCATION_ID, CENTERLINE_RADIUS
from voxseg.vessels import SamplerConfig, sample_case, sample_dataset, walk_centerline
from voxseg.vessels.centerline import Centerline, CenterlineBranch


def _straight_poly(length=30.0, radius=2.0, n=61, bif_at=None) -> PolyData:
    pts = np.stack([np.zeros(n), np.zeros(n), np.linspace(0, length, n)], axis=1)
    radii = np.linspace(radius, radius * 0.9, n)
    poly = Centerline([CenterlineBranch(0, -1, pts, radii)]).to_polydata()
    if bif_at is not None:
        poly.point_data[BIFURCATION_ID][bif_at] = 0
    return poly


def test_walk_steps_are_proportional_to_the_radius():
    poly = _straight_poly(radius=2.0)
    cfg = SamplerConfig()
    walk = walk_centerline(poly, cfg)
    s = np.array([p.position_mm for p in walk])
    r = np.array([p.radius for p in walk])
    np.testing.assert_allclose(np.diff(s), 1.5 * r[:-1], rtol=1e-6)
    assert walk[0].radius == pytest.approx(2.0)  # starts at the larger radius
    # Reversed input: still walked from the large end.
    rev = PolyData(poly.points, [poly.lines[0][::-1]], point_data=poly.point_data)
    assert walk_centerline(rev, cfg)[0].radius == pytest.approx(2.0)


def test_walk_is_denser_at_bifurcations_and_in_large_vessels():
    poly = _straight_poly(radius=2.0, bif_at=np.arange(20, 41))
    walk = walk_centerline(poly, SamplerConfig())
    steps = np.diff([p.position_mm for p in walk])
    flags = np.array([p.bifurcation for p in walk[:-1]])
    r = np.array([p.radius for p in walk[:-1]])
    np.testing.assert_allclose(steps[flags], 0.75 * r[flags], rtol=1e-6)
    np.testing.assert_allclose(steps[~flags], 1.5 * r[~flags], rtol=1e-6)
    large = walk_centerline(_straight_poly(radius=2.0), SamplerConfig(large_radius_factor=0.5))
    np.testing.assert_allclose(np.diff([p.position_mm for p in large])[0], 0.75 * 2.0)


def test_shared_trunk_is_walked_once():
    trunk = np.stack([np.zeros(21), np.zeros(21), np.linspace(0, 20, 21)], axis=1)
    left = trunk[-1] + np.stack([np.linspace(0, 10, 11), np.zeros(11), np.linspace(0, 10, 11)], 1)
    right = trunk[-1] + np.stack([-np.linspace(0, 6, 7), np.zeros(7), np.linspace(0, 6, 7)], 1)
    cl = Centerline(
        [
            CenterlineBranch(0, -1, trunk, np.full(21, 2.0), [1, 2]),
            CenterlineBranch(1, 0, left, np.full(11, 1.5)),
            CenterlineBranch(2, 0, right, np.full(7, 1.5)),
        ]
    )
    walk = walk_centerline(cl.to_polydata(), SamplerConfig())
    on_trunk = [p for p in walk if p.point[0] == 0 and p.point[2] <= 20]
    positions = [round(p.point[2], 6) for p in on_trunk]
    assert len(positions) == len(set(positions))  # no trunk position twice
    assert {p.line for p in walk} == {0, 1}  # the longest path first (rank 0), then the rest


def _case(tubes, with_blob=True):
    g = Geometry((40, 32, 32), (0.8, 0.6, 0.6), (1.0, 2.0, 3.0), tubes.oblique(15))
    a = g.index_to_physical(np.array([-5.0, 15.5, 15.5]))
    b = g.index_to_physical(np.array([45.0, 15.5, 15.5]))
    line = np.linspace(a, b, 60)
    mask = tubes.rasterise(g, [(line, np.full(60, 2.0))])
    arr = mask.array.copy()
    if with_blob:
        arr[2:6, 2:6, 2:6] = 1  # a piece of mask not touching the vessel
    rng = np.random.default_rng(0)
    image = Image.from_geometry((arr + 0.1 * rng.normal(size=arr.shape)).astype(np.float32), g)
    cl = Centerline([CenterlineBranch(0, -1, line, np.full(60, 2.0))], g)
    return image, mask.with_array(arr), cl.to_polydata()


def test_patches_follow_the_rules(tubes):
    image, mask, poly = _case(tubes)
    poly.point_data[BIFURCATION_ID][25:30] = 0  # pretend a bifurcation mid-way
    cfg = SamplerConfig(seed=1)
    patches = sample_case(image, mask, poly, "c", cfg)
    records = [p[3] for p in patches]
    from collections import Counter

    per_point = Counter((r.position_mm, r.bifurcation) for r in records)
    assert {n for (_, bif), n in per_point.items() if bif} == {5}
    assert max(n for (_, bif), n in per_point.items() if not bif) == 3
    g = mask.geometry
    for _, img, lab, rec in patches:
        assert min(img.shape) >= cfg.min_voxels
        assert img.geometry.is_close(lab.geometry)
        # Same physical place: the patch's voxel (0,0,0) maps to the global grid's voxel grid.
        idx = g.physical_to_index(np.asarray(img.origin))
        np.testing.assert_allclose(idx, np.round(idx), atol=1e-6)
        if rec.exact:
            assert rec.shift_mm == 0.0
            assert rec.side_mm == pytest.approx(5.0 * rec.radius)
        # Labels are binary, hold the vessel, and never the blob far from the centerline.
        assert set(np.unique(lab.array)) <= {0, 1}
        blob_corner = g.index_to_physical(np.array([3.0, 3.0, 3.0]))
        bi = np.round(lab.geometry.physical_to_index(blob_corner)).astype(int)
        if np.all((bi >= 0) & (bi < np.asarray(lab.shape))):
            assert lab.array[tuple(bi)] == 0
    exact = [r for r in records if r.exact]
    jitter = np.array([r.shift_mm / r.radius for r in records if not r.exact])
    sides = np.array([r.side_mm / r.radius for r in records if not r.exact])
    assert len(exact) == len(walk_centerline(poly, cfg)) - sum(
        1 for p in walk_centerline(poly, cfg) if min(_size(mask, p, cfg)) < cfg.min_voxels
    )
    # The jitter is 2D normal with std 0.8 r: E|shift| = 0.8·sqrt(pi/2) ≈ 1.0 r.
    assert 0.6 < jitter.mean() < 1.4
    assert 4.4 < sides.mean() < 5.6


def _size(mask, p, cfg):
    from voxseg.vessels.subvolume import box_around

    box = box_around(mask.geometry, p.point, cfg.size_mean * p.radius, cfg.min_voxels)
    return (0, 0, 0) if box is None else box.size


def _dataset(tmp_path, tubes, n=3, centerlines=True):
    root = tmp_path / "raw"
    for i in range(n):
        image, mask, poly = _case(tubes, with_blob=False)
        write_image(image, root / "imagesTr" / f"case{i}_0000.nii.gz")
        write_image(mask, root / "labelsTr" / f"case{i}.nii.gz")
        if centerlines:
            write_vtp(poly, root / "centerlines" / f"case{i}.vtp")
    write_dataset_json(root, {"0": "MR"}, {"background": 0, "vessel": 1}, n)
    return root


def test_sample_dataset_writes_a_raw_dataset_with_case_grouped_splits(tmp_path, tubes):
    root = _dataset(tmp_path, tubes)
    out = sample_dataset(root, tmp_path / "patches", SamplerConfig(num_folds=3))
    ds = Dataset(out)
    rows = list(csv.DictReader((out / "patch_stats.csv").open()))
    assert ds.info.numTraining == len(rows) == len(ds.case_ids())
    assert {"radius", "tx", "ty", "tz", "bifurcation"} <= set(rows[0])
    import json

    folds = json.loads((out / "splits.json").read_text())
    assert len(folds) == 3
    for fold in folds:
        val_cases = {p.rsplit("_", 1)[0] for p in fold["val"]}
        train_cases = {p.rsplit("_", 1)[0] for p in fold["train"]}
        assert len(val_cases) == 1 and not (val_cases & train_cases)
    lab = read_image(ds.label_path(rows[0]["patch"]))
    assert lab.shape == (int(rows[0]["size_z"]), int(rows[0]["size_y"]), int(rows[0]["size_x"]))

    # Resume: a second run writes nothing new and gives the same table.
    first = {p: p.stat().st_mtime_ns for p in (out / "labelsTr").iterdir()}
    victim = sorted(first)[0]
    victim.unlink()
    sample_dataset(root, out, SamplerConfig(num_folds=3))
    again = {p: p.stat().st_mtime_ns for p in (out / "labelsTr").iterdir()}
    assert set(again) == set(first)
    assert all(again[p] == first[p] for p in first if p != victim)
    assert list(csv.DictReader((out / "patch_stats.csv").open())) == rows


def test_sample_dataset_extracts_missing_centerlines(tmp_path, tubes):
    root = _dataset(tmp_path, tubes, n=2, centerlines=False)
    out = sample_dataset(root, tmp_path / "patches", num_processes=2)
    rows = list(csv.DictReader((out / "patch_stats.csv").open()))
    assert len(rows) > 10
    assert np.all(np.abs(np.array([float(r["radius"]) for r in rows]) - 2.0) < 0.6)


def test_worker_errors_name_the_case(tmp_path, tubes):
    root = _dataset(tmp_path, tubes, n=2)
    bad = PolyData(np.zeros((2, 3)), [np.array([0, 1])])
    write_vtp(bad, root / "centerlines" / "case1.vtp")
    with pytest.raises(VoxsegError, match=f"case case1: .*{CENTERLINE_RADIUS}"):
        sample_dataset(root, tmp_path / "patches", num_processes=2)
