"""DICOM series: write one file per slice, read the folder back with its geometry."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from scipy.spatial.transform import Rotation

from voxseg.errors import VoxsegError
from voxseg.io import Image, read_image, write_image
from voxseg.io.formats import read_dicom_series, write_dicom_series

ROTATION = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()
# DICOM stores positions and spacings as decimal strings of at most 16 characters.
DS_TOLERANCE = 1e-6


def _image(rng, direction) -> Image:
    return Image(
        rng.integers(-1000, 2000, size=(4, 6, 7)).astype(np.int16),
        spacing=(2.5, 0.7, 0.9),
        origin=(-81.3, 20.1, 33.7),
        direction=direction,
    )


# ITK-right-handed: det of voxseg's direction is -1 (the axis order is reversed).
@pytest.mark.parametrize(
    "direction",
    [np.eye(3)[:, ::-1], np.diag([-1.0, 1.0, 1.0]), ROTATION[:, ::-1]],
    ids=["itk-identity", "flipped", "oblique"],
)
def test_round_trip_reproduces_array_and_geometry(tmp_path, rng, direction):
    image = _image(rng, direction)
    back = read_image(write_dicom_series(image, tmp_path / "series"))
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, image.array)
    np.testing.assert_allclose(back.spacing, image.spacing, rtol=DS_TOLERANCE)
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, image.direction, atol=DS_TOLERANCE)


@pytest.mark.parametrize("direction", [np.eye(3), ROTATION], ids=["identity", "oblique"])
def test_left_handed_image_comes_back_with_z_reversed_in_the_same_place(tmp_path, rng, direction):
    image = _image(rng, direction)
    back = read_image(write_dicom_series(image, tmp_path / "series"))
    np.testing.assert_array_equal(back.array, image.array[::-1])
    corners = np.array([[0, 0, 0], [3, 5, 6], [1, 2, 3]], dtype=float)
    flipped = corners.copy()
    flipped[:, 0] = 3 - corners[:, 0]
    np.testing.assert_allclose(
        back.geometry.index_to_physical(flipped),
        image.geometry.index_to_physical(corners),
        atol=1e-4,
    )


def test_slice_tags_match_pydicom(tmp_path, rng):
    image = _image(rng, ROTATION[:, ::-1])
    folder = write_dicom_series(image, tmp_path / "series")
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 4
    uids = set()
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        uids.add(ds.SeriesInstanceUID)
        expected = image.geometry.index_to_physical(np.array([k, 0, 0]))
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expected, atol=1e-4)
        row_dir, col_dir = image.direction[:, 2], image.direction[:, 1]
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        np.testing.assert_allclose(iop, np.concatenate([row_dir, col_dir]), atol=DS_TOLERANCE)
        # PixelSpacing is (row spacing, column spacing) = (y, x).
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], [0.7, 0.9])
        np.testing.assert_array_equal(ds.pixel_array, image.array[k])
    assert len(uids) == 1


def test_folder_with_two_series_needs_a_choice(tmp_path, rng):
    small = Image(np.ones((2, 5, 5), np.int16), direction=np.eye(3)[:, ::-1])
    large = Image(np.full((5, 5, 5), 7, np.int16), direction=np.eye(3)[:, ::-1])
    write_dicom_series(small, tmp_path / "study" / "a", description="small")
    write_dicom_series(large, tmp_path / "study" / "b", description="large")
    with pytest.raises(VoxsegError, match="holds 2 image series") as err:
        read_image(tmp_path / "study")
    assert "'small' (2 slices" in str(err.value) and "'large' (5 slices" in str(err.value)
    back = read_dicom_series(tmp_path / "study", series="desc:large")
    assert back.shape == (5, 5, 5)
    assert (back.array == 7).all()


def test_folder_without_dicom_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(VoxsegError, match="no DICOM series found"):
        read_image(tmp_path / "empty")


def test_write_refuses_non_empty_folder_label_modalities_and_nan(tmp_path, rng):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x.dcm").write_bytes(b"")
    with pytest.raises(VoxsegError, match="not an empty folder"):
        write_dicom_series(_image(rng, np.eye(3)), tmp_path / "used")
    with pytest.raises(VoxsegError, match="write_dicom_seg"):
        write_dicom_series(_image(rng, np.eye(3)), tmp_path / "seg", modality="SEG")
    with pytest.raises(VoxsegError, match="NaN"):
        write_dicom_series(Image(np.full((2, 3, 4), np.nan)), tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_float_images_are_written_with_a_rescale_slope(tmp_path, rng):
    halves = Image(rng.integers(-2000, 6000, size=(3, 4, 5)).astype(np.float32) * 0.5)
    back = read_image(write_dicom_series(halves, tmp_path / "halves"))
    np.testing.assert_array_equal(back.array, halves.array)  # slope 0.5: exact
    first = pydicom.dcmread(sorted((tmp_path / "halves").iterdir())[0])
    assert float(first.RescaleSlope) == 0.5
    suv = Image(rng.gamma(2.0, 1.7, size=(3, 4, 5)).astype(np.float32))  # e.g. PET SUV
    back = read_image(write_dicom_series(suv, tmp_path / "suv", modality="PT"))
    span = float(suv.array.max() - suv.array.min())
    np.testing.assert_allclose(back.array, suv.array, atol=span / 65535)


def test_whole_number_floats_are_stored_as_integers(tmp_path, rng):
    image = Image(rng.integers(-1024, 3000, size=(3, 4, 5)).astype(np.float32))
    back = read_image(write_dicom_series(image, tmp_path / "series"))
    np.testing.assert_array_equal(back.array, image.array)


def test_single_slice_file_is_readable_and_dcm_writes_point_to_the_series_writer(tmp_path):
    image = Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), direction=np.eye(3)[:, ::-1])
    folder = write_dicom_series(image, tmp_path / "series")
    one = read_image(folder / "IM0001.dcm")
    np.testing.assert_array_equal(one.array, image.array[1:])
    with pytest.raises(VoxsegError, match="write_dicom_series"):
        write_image(image, tmp_path / "volume.dcm")
