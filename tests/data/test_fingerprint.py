"""Fingerprint: per-case geometry and crop, label volumes, foreground intensity statistics."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from voxseg.data.dataset import Dataset, write_dataset_json
from voxseg.data.fingerprint import compute_fingerprint, load_or_compute_fingerprint
from voxseg.io import Image, read_image, write_image


def _dataset(root: Path, n: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        shape = (8 + i, 20, 18)
        img = np.zeros(shape, np.float32)
        img[1:-2, 3:15, 2 + i : 16] = rng.normal(50, 5, (shape[0] - 3, 12, 14 - i))
        seg = np.zeros(shape, np.uint8)
        seg[3:6, 5:9, 6:10] = 1
        seg[2, 10, 10] = 2
        img[seg > 0] += 100
        spacing = (3.0, 0.7 + 0.1 * i, 0.7 + 0.1 * i)
        write_image(Image(img, spacing), root / "imagesTr" / f"c{i}_0000.nii.gz")
        write_image(Image(img * 2, spacing), root / "imagesTr" / f"c{i}_0001.nii.gz")
        write_image(Image(seg, spacing), root / "labelsTr" / f"c{i}.nii.gz")
    write_dataset_json(root, {0: "CT", 1: "MR"}, {"background": 0, "a": 1, "b": 2}, n)
    return root


def test_case_geometry_crop_and_label_volumes(tmp_path):
    ds = Dataset(_dataset(tmp_path / "Dataset001_F"))
    fp = compute_fingerprint(ds, samples_total=1000)
    assert [c.case_id for c in fp.cases] == ["c0", "c1", "c2"]
    for case in fp.cases:
        img = read_image(ds.image_path(case.case_id, 0))
        seg = read_image(ds.label_path(case.case_id)).array
        nz = np.nonzero(img.array)
        assert case.shape == list(img.shape)
        assert np.allclose(case.spacing, img.spacing)
        assert case.shape_after_crop == [int(a.max() - a.min() + 1) for a in nz]
        values, counts = np.unique(seg, return_counts=True)
        assert case.label_voxels == {str(v): int(c) for v, c in zip(values, counts, strict=True)}
        assert case.label_volumes_mm3["2"] == pytest.approx(np.prod(img.spacing))
        itk = sitk.ReadImage(str(ds.image_path(case.case_id, 0)))
        reference = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
            itk.GetDirection()
        )
        assert case.orientation == reference


def test_channel_stats_match_all_foreground_voxels(tmp_path):
    ds = Dataset(_dataset(tmp_path / "Dataset001_F"))
    fp = compute_fingerprint(ds, samples_total=300_000)
    for c in range(2):
        values = []
        for case in ds.cases():
            img, lab = ds.load_case(case)
            values.append(img.array[c][lab.array > 0])
        ref = np.concatenate(values).astype(np.float64)
        stats = fp.channels[c]
        assert stats.num_samples == 300_000
        assert stats.mean == pytest.approx(ref.mean(), rel=0.01)
        assert stats.std == pytest.approx(ref.std(), rel=0.05)
        assert ref.min() <= stats.min and stats.max <= ref.max()
        assert stats.percentile_00_5 == pytest.approx(np.percentile(ref, 0.5), rel=0.03)
        assert stats.percentile_99_5 == pytest.approx(np.percentile(ref, 99.5), rel=0.03)


def test_cache_reused_until_raw_data_changes(tmp_path):
    root = _dataset(tmp_path / "Dataset001_F")
    ds = Dataset(root)
    out = tmp_path / "pre"
    first = load_or_compute_fingerprint(ds, out, samples_total=1000)
    cache = out / "fingerprint.json"
    stamp = cache.stat().st_mtime_ns
    again = load_or_compute_fingerprint(ds, out, samples_total=1000)
    assert cache.stat().st_mtime_ns == stamp and again == first
    label = root / "labelsTr" / "c1.nii.gz"
    seg = read_image(label)
    seg.array[0, 0, 0] = 2
    write_image(seg, label)
    os.utime(label, ns=(stamp + 10**9, stamp + 10**9))
    changed = load_or_compute_fingerprint(ds, out, samples_total=1000)
    assert changed.cases[1].label_voxels["2"] == first.cases[1].label_voxels["2"] + 1
    forced = load_or_compute_fingerprint(ds, out, samples_total=1000, force=True)
    assert forced.cases == changed.cases


@pytest.mark.slow
def test_parallel_equals_serial(tmp_path):
    ds = Dataset(_dataset(tmp_path / "Dataset001_F"))
    serial = compute_fingerprint(ds, samples_total=3000)
    parallel = compute_fingerprint(ds, samples_total=3000, num_processes=2)
    assert serial == parallel


def test_label_centroids_match_scipy_center_of_mass():
    from scipy import ndimage

    from voxseg.data.fingerprint import label_counts_and_centroids

    rng = np.random.default_rng(3)
    seg = (rng.random((9, 13, 17)) < 0.05).astype(np.int16) * 2
    seg[2:5, 3:9, 1:6] = 1
    bbox = [(1, 9), (0, 13), (2, 16)]
    counts, out = label_counts_and_centroids(seg, bbox)
    values, n = np.unique(seg, return_counts=True)
    assert counts == {str(v): int(c) for v, c in zip(values, n, strict=True)}
    assert set(out) == {"1", "2"}
    for value in (1, 2):
        com = ndimage.center_of_mass(seg == value)
        ref = [
            (c - lo - (hi - lo - 1) / 2) / ((hi - lo - 1) / 2)
            for c, (lo, hi) in zip(com, bbox, strict=True)
        ]
        np.testing.assert_allclose(out[str(value)], ref, atol=1e-12)


def test_object_volumes_match_simpleitk_components(tmp_path):
    from voxseg.data.fingerprint import object_volumes

    rng = np.random.default_rng(4)
    seg = np.zeros((12, 30, 30), np.uint8)
    seg[2:9, 3:20, 4:21] = 1  # one large object
    for _ in range(12):  # small specks of label 3, some touching diagonally
        z, y, x = rng.integers(0, 10), rng.integers(22, 28), rng.integers(0, 28)
        seg[z : z + 2, y : y + rng.integers(1, 3), x : x + 2] = 3
    spacing = (2.5, 0.8, 0.9)
    got = object_volumes(seg, float(np.prod(spacing)))
    assert set(got) == {"1", "3"}
    for value in (1, 3):
        image = sitk.GetImageFromArray((seg == value).astype(np.uint8))
        image.SetSpacing(spacing[::-1])
        components = sitk.ConnectedComponent(image, True)  # 26-connected
        shapes = sitk.LabelShapeStatisticsImageFilter()
        shapes.Execute(components)
        reference = sorted((shapes.GetPhysicalSize(k) for k in shapes.GetLabels()), reverse=True)
        assert got[str(value)] == pytest.approx(reference, rel=1e-6)
    assert len(got["3"]) > 3


def test_fingerprint_records_object_volumes(tmp_path):
    ds = Dataset(_dataset(tmp_path / "Dataset001_F"))
    fp = compute_fingerprint(ds, samples_total=1000)
    for case in fp.cases:
        voxel = float(np.prod(case.spacing))
        assert case.label_object_volumes_mm3 == {
            "1": [pytest.approx(48 * voxel)],
            "2": [pytest.approx(voxel)],
        }


def test_object_hosts_name_the_label_around_each_object():
    from voxseg.data.fingerprint import object_hosts

    seg = np.zeros((20, 40, 40), np.uint8)
    seg[2:18, 2:24, 2:24] = 1  # an organ
    seg[26:, 30:38, 30:38] = 0
    seg[4:14, 28:38, 28:38] = 2  # a second organ
    for z, y, x in [(5, 5, 5), (10, 12, 8), (13, 18, 17)]:  # lesions inside organ 1
        seg[z : z + 2, y : y + 3, x : x + 2] = 4
    seg[2:4, 8:10, 8:10] = 4  # on organ 1's top face: most of its shell is organ 1
    seg[8:10, 31:33, 31:33] = 4  # inside organ 2
    seg[16:18, 30:32, 30:32] = 4  # in the background
    hosts = object_hosts(seg)
    assert hosts == {"1": {"0": 1}, "2": {"0": 1}, "4": {"0": 1, "1": 4, "2": 1}}
