"""RTSTRUCT writing of many contours: the file holds what plain pydicom Datasets would hold
(element by element, and byte for byte), reads without warnings, and the contours are the
ones whole-slice scikit-image tracing gives."""

from __future__ import annotations

import warnings

import numpy as np
import pydicom
import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from scipy.spatial.transform import Rotation
from skimage.measure import find_contours

from voxseg.io.contours import mask_to_contours
from voxseg.io.dicom import decimal_string, read_dicom_folder
from voxseg.io.image import Geometry
from voxseg.io.rtstruct import read_rtstruct, roi_mask, write_rtstruct
from voxseg.synth.dicom import series_datasets, write_datasets

OBLIQUE = Rotation.from_euler("xyz", [25.0, -15.0, 40.0], degrees=True).as_matrix()
SHAPE = (5, 40, 52)
SPACING = (2.5, 0.8123456789, 1.1)  # coordinates of ten significant digits


def _label_map(rng) -> np.ndarray:
    """Speckle (many small components, holes, saddles, edge contact), a ring with an island
    in its hole and a component in every slice, and a label with no voxel."""
    lab = np.where(rng.random(SHAPE) > 0.7, 1, 0).astype(np.uint8)
    lab[:, :12] = 0
    z, y, x = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    r = np.hypot(y - 5.5, x - 20.0)
    lab[(r < 5.5) & (z > 0)] = 2
    lab[(r < 3.0) & (z > 0)] = 0  # hole
    lab[(r < 1.2) & (z > 0)] = 2  # island in the hole
    lab[:, 1:4, 40:50] = 2  # a second component of the same label on each slice
    return lab


def _reference_contours(mask: np.ndarray, geometry: Geometry) -> list[tuple[int, np.ndarray]]:
    """Contours the plain way: scikit-image on each whole padded slice, collinear vertices
    dropped one polygon at a time, each polygon placed on its own."""
    out = []
    for k in range(mask.shape[0]):
        if not mask[k].any():
            continue
        for c in find_contours(np.pad(mask[k], 1).astype(float), 0.5):
            yx = c[:-1] - 1.0
            a, b = yx - np.roll(yx, 1, axis=0), np.roll(yx, -1, axis=0) - yx
            yx = yx[np.abs(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]) > 1e-9]
            if len(yx) >= 3:
                index = np.column_stack([np.full(len(yx), float(k)), yx])
                out.append((k, geometry.index_to_physical(index)))
    return out


def _expected_contour_sequence(contours, datasets) -> Sequence:
    """The Contour Sequence built from plain pydicom Datasets, one per contour."""
    seq = Sequence()
    for k, points in contours:
        ref = pydicom.Dataset()
        ref.ReferencedSOPClassUID = datasets[k].SOPClassUID
        ref.ReferencedSOPInstanceUID = datasets[k].SOPInstanceUID
        c = pydicom.Dataset()
        c.ContourImageSequence = Sequence([ref])
        c.ContourGeometricType = "CLOSED_PLANAR"
        c.NumberOfContourPoints = len(points)
        c.ContourData = [decimal_string(v, 10) for v in points.reshape(-1)]
        seq.append(c)
    return seq


def _encoded(elements: pydicom.Dataset) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, elements)
    return fp.getvalue()


def _read_everything(path) -> pydicom.Dataset:
    """The file read with every warning an error, every nested element decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = pydicom.dcmread(path)
        ds.walk(lambda _ds, elem: elem.value)
    return ds


@pytest.mark.parametrize(("orientation", "charset"), [("FFS", None), (OBLIQUE, "ISO_IR 192")])
def test_many_contours_are_written_as_plain_pydicom_writes_them(
    tmp_path, rng, monkeypatch, orientation, charset
):
    values = rng.integers(-1000, 1000, size=SHAPE).astype(float)
    datasets = series_datasets(
        values, spacing=SPACING, first_position=(-30.0, 12.5, -40.0), orientation=orientation
    )
    if charset:
        for d in datasets:
            d.SpecificCharacterSet = charset
            d.PatientName = "Müller^Jörg"
    write_datasets(datasets, tmp_path / "series")
    _, series = read_dicom_folder(tmp_path / "series")
    lab = _label_map(rng)
    labels = {"background": 0, "speckle": 1, "ring": 2, "absent": 3}

    built = 0
    init = pydicom.Dataset.__init__

    def counting_init(self, *args, **kwargs):
        nonlocal built
        built += 1
        init(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.Dataset, "__init__", counting_init)
    path = write_rtstruct(lab, series, labels, tmp_path / "rt.dcm")
    monkeypatch.setattr(pydicom.Dataset, "__init__", init)

    written = _read_everything(path)
    raw = path.read_bytes()
    total = 0
    assert [int(i.ReferencedROINumber) for i in written.ROIContourSequence] == [1, 2, 3]
    for item, value in zip(written.ROIContourSequence, (1, 2, 3), strict=True):
        contours = _reference_contours(lab == value, series.geometry)
        if not contours:
            assert "ContourSequence" not in item
            continue
        total += len(contours)
        expected = _expected_contour_sequence(contours, datasets)
        assert len(item.ContourSequence) == len(expected)
        for got, want, (_, points) in zip(item.ContourSequence, expected, contours, strict=True):
            assert list(got.keys()) == list(want.keys())
            assert got == want
            assert got["ContourData"].VR == "DS"
            # The decimal strings themselves, and the points they stand for.
            assert [str(v) for v in got.ContourData] == list(want.ContourData)
            assert all(len(str(v)) <= 16 for v in got.ContourData)
            np.testing.assert_allclose(
                np.asarray(got.ContourData, float).reshape(-1, 3), points, rtol=1e-9, atol=1e-9
            )
        # Byte for byte what pydicom writes for the plain Datasets.
        plain = pydicom.Dataset()
        plain.ContourSequence = expected
        assert _encoded(plain)[12:] in raw
    assert total > 150
    # The contours never became Datasets on the way (that cost ~1.7 ms each).
    assert built < total / 3
    if charset:
        assert written.PatientName == "Müller^Jörg"
    structure = read_rtstruct(path)
    for name, value in (("speckle", 1), ("ring", 2)):
        mask, report = roi_mask(structure.roi(name), series)
        assert report.problems == []
        np.testing.assert_array_equal(mask, lab == value)


def test_tracing_matches_whole_slice_scikit_image(rng):
    g = Geometry((4, 33, 47), (2.0, 0.7, 1.3), (4.0, -3.0, 8.0), OBLIQUE[:, ::-1])
    mask = rng.random(g.shape) > 0.6
    mask[1] = False  # an empty slice
    mask[2, :10] = mask[2, :, -6:] = False  # a box away from the edges
    got, want = mask_to_contours(mask, g), _reference_contours(mask, g)
    assert len(got) == len(want) > 100
    for (k, p), (k_ref, p_ref) in zip(got, want, strict=True):
        assert k == k_ref
        np.testing.assert_array_equal(p, p_ref)


def test_a_contour_past_64_kb_is_written_as_pydicom_writes_it(tmp_path, rng):
    """ContourData longer than explicit VR DS's 2-byte length: VR UN with a 4-byte length,
    as pydicom writes it (DICOM PS3.5 6.2.2), and voxseg reads it back."""
    shape = (2, 24, 1300)
    datasets = series_datasets(
        np.zeros(shape), spacing=(3.0, 0.7, 0.7123456789), first_position=(-4.56, 7.1, 9.87)
    )
    write_datasets(datasets, tmp_path / "series")
    _, series = read_dicom_folder(tmp_path / "series")
    lab = np.zeros(shape, np.uint8)
    lab[1, 2:10, 1:-1] = 1
    lab[1, 10:20, 1:-1:2] = 1  # a comb: ~2600 vertices in one contour
    with pytest.warns(UserWarning, match="64 kB"):
        path = write_rtstruct(lab, series, {"comb": 1}, tmp_path / "rt.dcm")
    contours = _reference_contours(lab == 1, series.geometry)
    assert len(contours) == 1 and len(contours[0][1]) > 2000
    plain = pydicom.Dataset()
    plain.ContourSequence = _expected_contour_sequence(contours, datasets)
    with pytest.warns(UserWarning, match="64 kByte"):
        expected = _encoded(plain)[12:]
    assert expected in path.read_bytes()
    (got,) = read_rtstruct(path).roi("comb").contours
    np.testing.assert_allclose(got, contours[0][1], rtol=1e-9, atol=1e-9)
