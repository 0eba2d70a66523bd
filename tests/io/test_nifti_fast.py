"""``.nii.gz`` read through ISA-L (voxseg.io.nifti): the same array and geometry as SimpleITK's
whole-file reading, values as nibabel reads them; anything not plain goes to SimpleITK."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from voxseg.errors import VoxsegError
from voxseg.io import from_sitk, read_image
from voxseg.io import nifti as fast_nifti
from voxseg.io.gz import GzipInflater, isal_available

pytestmark = pytest.mark.skipif(not isal_available(), reason="python-isal is not installed")

ROT = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()
ZOOMS = np.array([0.9, 0.7, 2.5])
AFFINES = {  # nibabel affines (RAS world, x y z voxel axes)
    "RAS": np.diag([*ZOOMS, 1.0]),
    "LPS": np.diag([-ZOOMS[0], -ZOOMS[1], ZOOMS[2], 1.0]),
    "LAI": np.diag([-ZOOMS[0], ZOOMS[1], -ZOOMS[2], 1.0]),
    "oblique": np.block([[ROT * ZOOMS, np.array([[12.5], [-40.0], [7.25]])], [0, 0, 0, 1.0]]),
    "permuted": np.array(
        [[0, 0, -2.5, 30.0], [0.9, 0, 0, -10.0], [0, -0.7, 0, 5.0], [0, 0, 0, 1]], float
    ),
}


def _sitk_read(path) -> object:
    """The reference: SimpleITK reads the whole file (read_image's path without ISA-L)."""
    return from_sitk(sitk.ReadImage(str(path)))


def _assert_same(a, b) -> None:
    assert a.array.dtype == b.array.dtype
    assert a.array.shape == b.array.shape
    np.testing.assert_array_equal(a.array, b.array)
    assert a.geometry == b.geometry  # exactly: both come from ITK's header reading


def _write(path, data, affine, qform_code=1, sform_code=1):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    nib.save(img, path)
    return path


@pytest.mark.parametrize("orientation", list(AFFINES))
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.uint16, np.int32])
def test_same_array_and_geometry_as_simpleitk(tmp_path, rng, orientation, dtype):
    data = (rng.normal(0, 300, (7, 6, 5))).astype(dtype)  # nibabel: x y z
    path = _write(tmp_path / "img.nii.gz", data, AFFINES[orientation])
    fast = fast_nifti.read_nifti_gz(path)
    assert fast is not None  # the ISA-L path was taken
    _assert_same(fast, _sitk_read(path))
    _assert_same(read_image(path), fast)
    np.testing.assert_array_equal(fast.array, np.asanyarray(nib.load(path).dataobj).T)
    assert fast.array.flags.writeable and fast.array.flags.c_contiguous


@pytest.mark.parametrize(("qform", "sform"), [(1, 0), (0, 2), (0, 0), (2, 1)])
def test_qform_and_sform_rules_follow_itk(tmp_path, rng, qform, sform):
    data = rng.integers(0, 5, (6, 5, 4)).astype(np.uint8)
    path = _write(tmp_path / "lab.nii.gz", data, AFFINES["oblique"], qform, sform)
    fast = fast_nifti.read_nifti_gz(path)
    assert fast is not None
    _assert_same(fast, _sitk_read(path))


def test_2d_and_4d_files(tmp_path, rng):
    flat = _write(tmp_path / "flat.nii.gz", rng.integers(0, 9, (8, 6)).astype(np.int16), np.eye(4))
    four = _write(
        tmp_path / "four.nii.gz", rng.normal(size=(5, 4, 3, 2)).astype(np.float32), np.eye(4)
    )
    for path in (flat, four):
        fast = fast_nifti.read_nifti_gz(path)
        assert fast is not None
        _assert_same(fast, _sitk_read(path))
    assert read_image(four).array.shape == (2, 3, 4, 5)  # channels first
    assert read_image(flat).array.shape == (1, 6, 8)


def test_multi_member_gzip(tmp_path, rng):
    """Files written by parallel compressors are several gzip members in a row."""
    path = _write(
        tmp_path / "one.nii.gz", rng.integers(-5, 5, (9, 8, 7)).astype(np.int16), np.eye(4)
    )
    raw = gzip.decompress(path.read_bytes())
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(b"".join(gzip.compress(raw[i : i + 500]) for i in range(0, len(raw), 500)))
    fast = fast_nifti.read_nifti_gz(multi)
    assert fast is not None
    _assert_same(fast, _sitk_read(path))
    with GzipInflater(multi) as stream:
        assert stream.read(len(raw) + 10) == raw


@pytest.mark.parametrize("kind", ["scaled", "big-endian", "vector", "nifti2"])
def test_files_that_are_not_plain_go_to_simpleitk(tmp_path, rng, kind):
    data = rng.integers(0, 100, (6, 5, 4)).astype(np.int16)
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "scaled":
        img = nib.Nifti1Image(data, np.eye(4))
        img.header.set_slope_inter(0.5, 10.0)
        nib.save(img, path)
    elif kind == "big-endian":
        header = nib.Nifti1Header(endianness=">")
        nib.save(nib.Nifti1Image(data, np.eye(4), header=header), path)
    elif kind == "vector":
        vec = sitk.GetImageFromArray(rng.normal(size=(4, 5, 6, 3)), isVector=True)
        sitk.WriteImage(vec, str(path))
    else:
        nib.save(nib.Nifti2Image(data, np.eye(4)), path)
    if kind == "big-endian":
        assert nib.load(path).header.endianness == ">"
    assert fast_nifti.read_nifti_gz(path) is None
    if kind == "nifti2":  # SimpleITK has no NIfTI-2 reader: the error stays its own
        with pytest.raises(VoxsegError, match="nifti2.nii.gz"):
            read_image(path)
        return
    _assert_same(read_image(path), _sitk_read(path))


def test_damaged_streams(tmp_path, rng):
    path = _write(
        tmp_path / "ok.nii.gz", rng.normal(size=(30, 20, 10)).astype(np.float32), np.eye(4)
    )
    blob = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    assert fast_nifti.read_nifti_gz(cut) is None
    with pytest.raises(VoxsegError, match="cut.nii.gz"):
        read_image(cut)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(blob[:-8] + bytes(8))  # CRC and length trailer zeroed
    assert fast_nifti.read_nifti_gz(bad) is None
    with GzipInflater(bad) as stream, pytest.raises(OSError):
        stream.read(10**7)


def test_without_isal_simpleitk_reads(tmp_path, rng, monkeypatch):
    path = _write(
        tmp_path / "img.nii.gz", rng.integers(0, 9, (5, 4, 3)).astype(np.uint8), AFFINES["LPS"]
    )
    expected = read_image(path)
    monkeypatch.setattr(fast_nifti, "isal_available", lambda: False)
    assert fast_nifti.read_nifti_gz(path) is None
    _assert_same(read_image(path), expected)
