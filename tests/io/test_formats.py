"""Volume formats: write-then-read keeps array, dtype and geometry; damaged files fail clearly."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from voxseg.errors import VoxsegError
from voxseg.io import Geometry, Image, read_image, write_image
from voxseg.io.formats import read_channels

ROTATION = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()
DIRECTIONS = {
    "identity": np.eye(3),
    "itk-identity": np.eye(3)[:, ::-1],
    "flipped": np.diag([-1.0, 1.0, 1.0]),
    "oblique": ROTATION,
    "oblique-left-handed": ROTATION[:, ::-1],
}
VOLUME_ENDINGS = [".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"]
# NIfTI stores its affine as float32 (relative precision ~6e-8, so ~1e-5 mm at 100 mm);
# NRRD writes 17 significant digits and MetaImage full precision.
TOLERANCE = {".nii.gz": 1e-5, ".nii": 1e-5}
EXACT = 1e-12


def _image(rng, dtype=np.int16, direction=None, shape=(5, 6, 7)) -> Image:
    if np.issubdtype(dtype, np.floating):
        arr = rng.normal(size=shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(max(info.min, -2000), min(info.max, 2000), size=shape, dtype=dtype)
    return Image(
        arr,
        spacing=(2.5, 0.7, 0.9),
        origin=(-81.3, 20.1, 33.7),
        direction=np.eye(3) if direction is None else direction,
    )


def _assert_same_geometry(a: Image, b: Image, atol: float) -> None:
    np.testing.assert_allclose(b.spacing, a.spacing, rtol=atol, atol=0)
    np.testing.assert_allclose(b.origin, a.origin, rtol=0, atol=atol * 100)
    np.testing.assert_allclose(b.direction, a.direction, rtol=0, atol=atol)


@pytest.mark.parametrize("ending", VOLUME_ENDINGS)
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_volume_round_trip_keeps_geometry(tmp_path, rng, ending, direction):
    image = _image(rng, direction=DIRECTIONS[direction])
    back = read_image(write_image(image, tmp_path / f"img{ending}"))
    assert back.array.dtype == image.array.dtype
    np.testing.assert_array_equal(back.array, image.array)
    _assert_same_geometry(image, back, TOLERANCE.get(ending, EXACT))


@pytest.mark.parametrize("ending", VOLUME_ENDINGS)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.uint16, np.int32, np.float32, np.float64])
def test_volume_round_trip_keeps_dtype(tmp_path, rng, ending, dtype):
    image = _image(rng, dtype=dtype)
    back = read_image(write_image(image, tmp_path / f"img{ending}"))
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, image.array)


@pytest.mark.parametrize("ending", [".nii.gz", ".nrrd", ".mha"])
def test_multichannel_round_trip(tmp_path, rng, ending):
    image = Image(
        rng.normal(size=(3, 4, 5, 6)).astype(np.float32),
        spacing=(1.5, 0.5, 0.6),
        origin=(1.0, 2.0, 3.0),
        direction=ROTATION,
    )
    back = read_image(write_image(image, tmp_path / f"img{ending}"))
    np.testing.assert_array_equal(back.array, image.array)
    _assert_same_geometry(image, back, TOLERANCE.get(ending, EXACT))


def test_bool_masks_are_written_as_uint8(tmp_path, rng):
    mask = Image(rng.random((4, 5, 6)) > 0.5)
    back = read_image(write_image(mask, tmp_path / "mask.nii.gz"))
    assert back.array.dtype == np.uint8
    np.testing.assert_array_equal(back.array, mask.array)


def _nibabel_affine_in_voxseg_axes(nib_affine: np.ndarray) -> np.ndarray:
    """nibabel's (i, j, k) → RAS affine, as voxseg's (z, y, x) → LPS affine."""
    ras_to_lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    zyx_to_ijk = np.eye(4)[[2, 1, 0, 3]]
    return ras_to_lps @ nib_affine @ zyx_to_ijk


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_nifti_geometry_matches_nibabel(tmp_path, rng, direction):
    image = _image(rng, dtype=np.float32, direction=DIRECTIONS[direction])
    path = write_image(image, tmp_path / "img.nii.gz")
    nimg = nib.load(str(path))
    np.testing.assert_allclose(
        _nibabel_affine_in_voxseg_axes(nimg.affine), image.geometry.affine, atol=1e-4
    )
    np.testing.assert_array_equal(np.asarray(nimg.dataobj).transpose(2, 1, 0), image.array)


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_reads_nibabel_written_nifti(tmp_path, rng, direction):
    geometry = Geometry((5, 6, 7), (2.5, 0.7, 0.9), (-81.3, 20.1, 33.7), DIRECTIONS[direction])
    zyx_to_ijk = np.eye(4)[[2, 1, 0, 3]]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine = lps_to_ras @ geometry.affine @ zyx_to_ijk.T
    arr = rng.normal(size=geometry.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0), affine), str(tmp_path / "nib.nii.gz"))
    back = read_image(tmp_path / "nib.nii.gz")
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.geometry.affine, geometry.affine, atol=1e-4)


def test_mhd_writes_its_data_file_and_leaves_no_temporaries(tmp_path, rng):
    image = _image(rng)
    write_image(image, tmp_path / "scan.mhd")
    assert sorted(os.listdir(tmp_path)) == ["scan.mhd", "scan.zraw"]
    assert "ElementDataFile = scan.zraw" in (tmp_path / "scan.mhd").read_text()
    write_image(image, tmp_path / "raw.mhd", compress=False)
    assert (tmp_path / "raw.raw").exists()
    np.testing.assert_array_equal(read_image(tmp_path / "raw.mhd").array, image.array)


def test_failed_write_keeps_the_old_file(tmp_path, rng, monkeypatch):
    old = _image(rng)
    path = write_image(old, tmp_path / "img.nii.gz")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", fail)
    with pytest.raises(RuntimeError):
        write_image(_image(rng), path)
    assert os.listdir(tmp_path) == ["img.nii.gz"]
    np.testing.assert_array_equal(read_image(path).array, old.array)


def _truncate(path, fraction=0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("ending", [*VOLUME_ENDINGS, ".tif"])
@pytest.mark.parametrize("fraction", [0.3, 0.9])
def test_truncated_file_raises_voxseg_error(tmp_path, rng, ending, fraction):
    path = write_image(_image(rng, dtype=np.float32), tmp_path / f"img{ending}")
    data_file = {".mhd": "img.zraw", ".nhdr": "img.raw.gz"}.get(ending, path.name)
    _truncate(tmp_path / data_file, fraction)
    with pytest.raises(VoxsegError, match=str(path.name)):
        read_image(path)


def test_garbage_and_missing_files_raise_voxseg_error(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not an image at all")
    with pytest.raises(VoxsegError, match="junk.nii.gz"):
        read_image(tmp_path / "junk.nii.gz")
    with pytest.raises(VoxsegError, match="file not found"):
        read_image(tmp_path / "absent.nii.gz")


def test_unknown_ending_is_refused(tmp_path, rng):
    with pytest.raises(VoxsegError, match="unknown image file ending"):
        write_image(_image(rng), tmp_path / "img.xyz")


def test_read_channels_stacks_and_checks_geometry(tmp_path, rng):
    a, b = _image(rng, np.float32), _image(rng, np.float32)
    paths = [write_image(a, tmp_path / "a_0000.nii.gz"), write_image(b, tmp_path / "a_0001.mha")]
    stacked = read_channels(paths)
    assert stacked.array.shape == (2, 5, 6, 7)
    np.testing.assert_array_equal(stacked.array[1], b.array)
    moved = Image(b.array, b.spacing, (0.0, 0.0, 0.0), b.direction)
    paths.append(write_image(moved, tmp_path / "a_0002.nii.gz"))
    with pytest.raises(VoxsegError, match="a_0002.nii.gz: geometry differs"):
        read_channels(paths)


def test_reading_without_a_copy_views_the_readers_buffer_safely(tmp_path, rng):
    """``copy=False``: the same voxels and geometry, read-only, and still valid after the
    SimpleITK image is gone and its memory could have been reused (compared with SimpleITK's
    own copy). NRRD: a plain ``.nii.gz`` is read through ISA-L, read-only as well."""
    import gc

    arr = rng.integers(-1000, 2000, (6, 7, 8), dtype=np.int16)
    nii = write_image(Image(arr, spacing=(2.0, 0.5, 0.7), origin=(1, 2, 3)), tmp_path / "a.nii.gz")
    assert not read_image(nii, copy=False).array.flags.writeable
    path = write_image(Image(arr, spacing=(2.0, 0.5, 0.7), origin=(1, 2, 3)), tmp_path / "a.nrrd")
    view = read_image(path, copy=False)
    assert not view.array.flags.writeable
    gc.collect()
    _ = [np.full(arr.size, 7, np.int16) for _ in range(20)]  # reuse freed memory, if any
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    np.testing.assert_array_equal(view.array, expected)
    copied = read_image(path)
    assert copied.array.flags.writeable and view.spacing == copied.spacing
    np.testing.assert_array_equal(view.direction, copied.direction)
    rgb = rng.integers(0, 255, (1, 5, 4, 3), dtype=np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb[0], isVector=True), str(tmp_path / "rgb.mha"))
    np.testing.assert_array_equal(
        read_image(tmp_path / "rgb.mha", copy=False).array, read_image(tmp_path / "rgb.mha").array
    )
