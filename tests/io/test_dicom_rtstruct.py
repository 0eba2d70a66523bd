"""DICOM series geometry, contours ↔ masks and RTSTRUCT files, checked against analytic
answers, matplotlib's point-in-polygon test and dcmrtstruct2nii."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from matplotlib.path import Path as MplPath
from scipy.spatial.transform import Rotation

from voxseg.errors import VoxsegError
from voxseg.io.contours import contours_to_mask, fill_polygons, mask_to_contours
from voxseg.io.dicom import read_dicom_folder
from voxseg.io.rtstruct import read_rtstruct, roi_mask, write_rtstruct
from voxseg.synth.dicom import (
    orientation_axes,
    rtstruct_dataset,
    series_datasets,
    write_datasets,
)

OBLIQUE = Rotation.from_euler("xyz", [25.0, -15.0, 40.0], degrees=True).as_matrix()
ORIENTATIONS = {"HFS": "HFS", "FFS": "FFS", "HFP": "HFP", "oblique": OBLIQUE}
SHAPE = (6, 20, 26)  # non-square slices
SPACING = (2.5, 0.8, 1.1)  # row spacing differs from column spacing
FIRST = (-30.0, 12.5, -40.0)


def _series(tmp_path, orientation, rng, slope=1.0, intercept=0.0):
    values = rng.integers(-1000, 1500, size=SHAPE).astype(float) * slope + intercept
    datasets = series_datasets(
        values,
        spacing=SPACING,
        first_position=FIRST,
        orientation=orientation,
        slope=slope,
        intercept=intercept,
    )
    write_datasets(datasets, tmp_path / "series")
    return values, datasets


def _centres(orientation) -> np.ndarray:
    """LPS centre of every voxel ``[z, y, x, 3]`` computed from the writer's layout."""
    row, col, normal = orientation_axes(orientation)
    k, j, i = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return (
        np.asarray(FIRST)
        + (k * SPACING[0])[..., None] * normal
        + (j * SPACING[1])[..., None] * col
        + (i * SPACING[2])[..., None] * row
    )


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_series_reads_values_and_geometry_in_every_orientation(tmp_path, rng, name):
    orientation = ORIENTATIONS[name]
    values, _ = _series(tmp_path, orientation, rng, slope=0.5, intercept=-1024)
    image, series = read_dicom_folder(tmp_path / "series")
    assert image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array, values)
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), -1)
    np.testing.assert_allclose(
        image.geometry.index_to_physical(idx), _centres(orientation), atol=1e-4
    )
    assert len(series.sop_instance_uids) == SHAPE[0]


def test_integer_ct_stays_int16(tmp_path, rng):
    values, _ = _series(tmp_path, "HFS", rng, intercept=-1024)
    image, _ = read_dicom_folder(tmp_path / "series")
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, values)


def _polygon_reference(polygons, shape) -> np.ndarray:
    """Even-odd inside test of every voxel centre with matplotlib (one polygon at a time)."""
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    pts = np.column_stack([yy.ravel(), xx.ravel()])
    out = np.zeros(len(pts), dtype=bool)
    for p in polygons:
        out ^= MplPath(p).contains_points(pts)
    return out.reshape(shape)


def test_fill_polygons_matches_matplotlib_with_holes_and_islands(rng):
    shape = (40, 52)
    outer = np.array([[2.3, 3.1], [35.7, 5.2], [37.4, 48.6], [4.1, 44.9]])
    hole = np.array([[10.2, 12.3], [28.6, 11.7], [27.9, 35.4], [11.3, 36.2]])
    island = np.array([[15.5, 18.5], [22.4, 19.1], [21.8, 27.7], [16.1, 26.6]])
    star = np.array(
        [
            [20 + r * np.sin(t), 26 + r * np.cos(t)]
            for t, r in zip(np.linspace(0, 2 * np.pi, 11)[:-1], [18.3, 7.1] * 5, strict=True)
        ]
    ) + rng.uniform(-0.1, 0.1, (10, 2))
    # jitter keeps voxel centres off the edges (on an edge the two tests may round apart)
    outer, hole, island = (p + rng.uniform(-0.01, 0.01, p.shape) for p in (outer, hole, island))
    for polys in ([outer], [outer, hole], [outer, hole, island], [star], [outer, star]):
        np.testing.assert_array_equal(fill_polygons(polys, shape), _polygon_reference(polys, shape))


@pytest.mark.parametrize(
    "name, references", [(n, True) for n in ORIENTATIONS] + [("oblique", False)]
)
def test_rtstruct_contours_become_the_analytic_mask(tmp_path, rng, name, references):
    """A rectangle with a rectangular hole on slices 1-4, points jittered off the plane."""
    orientation = ORIENTATIONS[name]
    _, datasets = _series(tmp_path, orientation, rng)
    row, col, normal = orientation_axes(orientation)
    u0, u1, v0, v1 = 3.45, 21.7, 2.1, 12.9  # outer, mm along row / column from FIRST
    h0, h1, g0, g1 = 9.6, 15.2, 5.3, 9.1  # hole

    def rect(k, a0, a1, b0, b1):
        corners = [(a0, b0), (a1, b0), (a1, b1), (a0, b1)]
        off = rng.uniform(-0.1, 0.1, 4) * SPACING[0]
        return np.array(
            [
                np.asarray(FIRST) + u * row + v * col + (k * SPACING[0] + o) * normal
                for (u, v), o in zip(corners, off, strict=True)
            ]
        )

    contours = [rect(k, u0, u1, v0, v1) for k in range(1, 5)]
    contours += [rect(k, h0, h1, g0, g1) for k in range(1, 5)]
    rois = {"target": contours, "empty": [], "other": contours[:1]}
    ds = rtstruct_dataset(datasets, rois, image_references=references)
    ds.save_as(tmp_path / "rs.dcm", enforce_file_format=True)
    _, series = read_dicom_folder(tmp_path / "series")
    structure = read_rtstruct(tmp_path / "rs.dcm")
    assert [r.name for r in structure.rois] == ["other", "empty", "target"]  # by ROINumber
    mask, report = roi_mask(structure.roi("target"), series)
    assert report.problems == [] and report.placed == 8

    rel = _centres(orientation) - np.asarray(FIRST)
    u, v, w = rel @ row, rel @ col, rel @ normal
    inside = lambda a0, a1, b0, b1: (u > a0) & (u < a1) & (v > b0) & (v < b1)  # noqa: E731
    slices = (w > 0.5 * SPACING[0]) & (w < 4.5 * SPACING[0])
    expected = slices & inside(u0, u1, v0, v1) & ~inside(h0, h1, g0, g1)
    np.testing.assert_array_equal(mask, expected)
    assert roi_mask(structure.roi("empty"), series)[0].sum() == 0
    assert (
        roi_mask(structure.roi("other"), series)[0].sum()
        == expected[1].sum() + inside(h0, h1, g0, g1)[1].sum()
    )


def test_degenerate_off_plane_and_outside_contours_are_reported(tmp_path, rng):
    _, datasets = _series(tmp_path, "HFS", rng)
    _, series = read_dicom_folder(tmp_path / "series")
    g = series.geometry
    p = lambda k, j, i: g.index_to_physical(np.array([k, j, i], float))  # noqa: E731
    edge = np.array([p(2, -0.4, -0.4), p(2, -0.4, 25.4), p(2, 19.4, 25.4), p(2, 19.4, -0.4)])
    contours = {
        "edge": [edge],
        "bad": [
            np.array([p(1, 3, 3)]),
            np.array([p(1, 3, 3), p(1, 5, 5)]),
            np.array([p(1.5, 2, 2), p(1.5, 2, 9), p(1.5, 9, 9)]),
            np.array([p(9, 2, 2), p(9, 2, 9), p(9, 9, 9)]),
            np.array([p(1, 30, 40), p(1, 30, 50), p(1, 40, 50)]),
        ],
    }
    ds = rtstruct_dataset(datasets, contours)
    ds.save_as(tmp_path / "rs.dcm", enforce_file_format=True)
    structure = read_rtstruct(tmp_path / "rs.dcm")
    mask, report = roi_mask(structure.roi("edge"), series)
    assert mask[2].all() and mask.sum() == mask[2].size  # a contour touching the image edge
    mask, report = roi_mask(structure.roi("bad"), series)
    assert mask.sum() == 0
    text = "\n".join(report.problems)
    assert "POINT" in text  # the 1-point contour is typed POINT
    assert "2 point(s)" in text
    assert "off the plane" in text
    assert text.count("outside the image") == 2


def test_mask_to_contours_round_trip_is_exact(rng):
    from voxseg.io.image import Geometry

    g = Geometry((5, 30, 22), (2.0, 0.7, 1.3), (4.0, -3.0, 8.0), OBLIQUE[:, ::-1])
    mask = rng.random(g.shape) > 0.6  # speckle: saddles, holes, islands, edges
    back, report = contours_to_mask([c for _, c in mask_to_contours(mask, g)], g)
    assert report.problems == []
    np.testing.assert_array_equal(back, mask)


def _labels(rng) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    lab = np.zeros(SHAPE, np.uint8)
    lab[((y - 9) / 7.0) ** 2 + ((x - 12) / 9.0) ** 2 + ((z - 2.5) / 2.2) ** 2 < 1] = 1
    lab[((y - 10) / 3.0) ** 2 + ((x - 12) / 3.5) ** 2 < 1] = 0  # a hole through it
    lab[1:5, 14:19, 20:25] = 2
    lab[3, 16, 22] = 0  # a one-voxel hole
    return lab


@pytest.mark.parametrize("name", ["FFS", "oblique"])
def test_written_rtstruct_reads_back_exactly_and_with_dcmrtstruct2nii(tmp_path, rng, name):
    _, datasets = _series(tmp_path, ORIENTATIONS[name], rng)
    image, series = read_dicom_folder(tmp_path / "series")
    labels = _labels(rng)
    path = write_rtstruct(
        labels, series, {"background": 0, "organ": 1, "box": 2}, tmp_path / "o.dcm"
    )
    written = pydicom.dcmread(path)
    assert written.PatientID == datasets[0].PatientID
    assert written.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert written.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    sops = {d.SOPInstanceUID for d in datasets}
    for item in written.ROIContourSequence:
        for c in item.ContourSequence:
            assert c.ContourImageSequence[0].ReferencedSOPInstanceUID in sops
    structure = read_rtstruct(path)
    for roi, value in (("organ", 1), ("box", 2)):
        mask, report = roi_mask(structure.roi(roi), series)
        assert report.problems == []
        np.testing.assert_array_equal(mask, labels == value)
    independent = _dcmrtstruct2nii(tmp_path, path, tmp_path / "series")
    for roi, value in (("organ", 1), ("box", 2)):
        other = independent[roi]
        truth = labels == value
        dice = 2 * (other & truth).sum() / (other.sum() + truth.sum())
        assert dice >= 0.98, (roi, dice)


def _dcmrtstruct2nii(tmp_path, rtstruct, series_dir) -> dict[str, np.ndarray]:
    """Masks by dcmrtstruct2nii (pydicom 3 lost ``read_file``: aliased here), read in
    voxseg's array order through SimpleITK."""
    import SimpleITK as sitk

    if not hasattr(pydicom, "read_file"):
        pydicom.read_file = pydicom.dcmread
    from dcmrtstruct2nii import dcmrtstruct2nii

    out = tmp_path / "dcmrtstruct2nii"
    dcmrtstruct2nii(str(rtstruct), str(series_dir), str(out), convert_original_dicom=False)
    masks = {}
    for f in out.glob("mask_*.nii.gz"):
        name = f.name[len("mask_") : -len(".nii.gz")]
        masks[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(f))) > 0
    return masks


def test_rtstruct_reader_refuses_an_image(tmp_path, rng):
    _, datasets = _series(tmp_path, "HFS", rng)
    with pytest.raises(VoxsegError, match="not an RT Structure Set"):
        read_rtstruct(sorted((tmp_path / "series").iterdir())[0])
