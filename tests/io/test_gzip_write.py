"""ISA-L gzip (``write_image(..., fast_gzip=True)``): the same NIfTI inside a standard gzip
file, read by zlib, SimpleITK and nibabel; damaged streams are reported by the dataset check."""

from __future__ import annotations

import gzip
import json
import zlib

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from voxseg.data.check import check_dataset
from voxseg.io import Image, read_image, write_image
from voxseg.io.gz import gzip_file, open_gzip

OBLIQUE = Rotation.from_euler("xyz", [15.0, -30.0, 40.0], degrees=True).as_matrix()


def _image(rng, dtype, shape=(6, 9, 11), direction=OBLIQUE) -> Image:
    if np.issubdtype(dtype, np.floating):
        arr = rng.normal(size=shape).astype(dtype)
    else:
        arr = rng.integers(0 if dtype == np.uint8 else -1000, 200, size=shape).astype(dtype)
    return Image(arr, spacing=(2.5, 0.7, 0.9), origin=(-10.0, 4.0, 33.0), direction=direction)


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_fast_gzip_holds_the_same_nifti_as_simpleitk(tmp_path, rng, dtype):
    image = _image(rng, dtype)
    write_image(image, tmp_path / "fast.nii.gz", fast_gzip=True)
    write_image(image, tmp_path / "itk.nii.gz")
    write_image(image, tmp_path / "plain.nii")
    inside = gzip.decompress((tmp_path / "fast.nii.gz").read_bytes())  # zlib, not ISA-L
    assert inside == (tmp_path / "plain.nii").read_bytes()
    assert inside == gzip.decompress((tmp_path / "itk.nii.gz").read_bytes())
    # one standard gzip member: zlib's gzip mode reads it to the end with nothing left over
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert d.decompress((tmp_path / "fast.nii.gz").read_bytes()) == inside
    assert d.eof and not d.unused_data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fast.nii.gz", "itk.nii.gz", "plain.nii"]


@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE, np.diag([-1.0, 1.0, -1.0])])
def test_fast_gzip_reads_back_in_simpleitk_and_nibabel(tmp_path, rng, direction):
    image = _image(rng, np.int16, direction=direction)
    fast, ref = tmp_path / "fast.nii.gz", tmp_path / "itk.nii.gz"
    write_image(image, fast, fast_gzip=True)
    write_image(image, ref)
    itk = sitk.ReadImage(str(fast))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk), image.array)
    np.testing.assert_allclose(itk.GetOrigin(), sitk.ReadImage(str(ref)).GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(
        itk.GetDirection(), sitk.ReadImage(str(ref)).GetDirection(), atol=1e-6
    )
    a, b = nib.load(fast), nib.load(ref)
    np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
    np.testing.assert_array_equal(a.affine, b.affine)
    back = read_image(fast)
    np.testing.assert_array_equal(back.array, image.array)
    assert not back.geometry.differences(image.geometry, atol=1e-5)


def test_fast_gzip_of_a_multichannel_image(tmp_path, rng):
    image = _image(rng, np.float32, shape=(2, 4, 5, 6))
    write_image(image, tmp_path / "x.nii.gz", fast_gzip=True)
    np.testing.assert_array_equal(read_image(tmp_path / "x.nii.gz").array, image.array)


def test_other_endings_ignore_fast_gzip(tmp_path, rng):
    image = _image(rng, np.int16)
    write_image(image, tmp_path / "x.nrrd", fast_gzip=True)
    np.testing.assert_array_equal(read_image(tmp_path / "x.nrrd").array, image.array)


def test_gzip_file_and_open_gzip_round_trip(tmp_path, rng):
    data = rng.integers(0, 7, size=3_000_000).astype(np.uint8).tobytes()
    (tmp_path / "raw").write_bytes(data)
    gzip_file(tmp_path / "raw", tmp_path / "raw.gz")
    assert gzip.decompress((tmp_path / "raw.gz").read_bytes()) == data
    assert len((tmp_path / "raw.gz").read_bytes()) < len(data) // 2
    with open_gzip(tmp_path / "raw.gz") as f:
        assert f.read() == data


def test_fast_gzip_writes_the_same_bytes_at_another_time_and_name(tmp_path, rng, monkeypatch):
    """No time stamp or file name in the gzip header (RFC 1952: MTIME 0, no FNAME), so a
    rerun of an import or preprocessing gives byte-identical files."""
    import time

    image = _image(rng, np.int16, shape=(8, 16, 16))
    write_image(image, tmp_path / "a.nii.gz", fast_gzip=True)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 3600)
    write_image(image, tmp_path / "b.nii.gz", fast_gzip=True)
    a, b = (tmp_path / "a.nii.gz").read_bytes(), (tmp_path / "b.nii.gz").read_bytes()
    assert a == b
    assert a[3] & 0x08 == 0 and a[4:8] == b"\0\0\0\0"  # FLG without FNAME; MTIME 0


def _one_case_dataset(root, rng, damage) -> None:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    image = _image(rng, np.int16, shape=(20, 40, 40))
    write_image(image, root / "imagesTr" / "c_0000.nii.gz", fast_gzip=True)
    label = image.with_array((image.array > 0).astype(np.uint8))
    write_image(label, root / "labelsTr" / "c.nii.gz", fast_gzip=True)
    (root / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "a": 1},
                "numTraining": 1,
                "file_ending": ".nii.gz",
            }
        )
    )
    path = root / "imagesTr" / "c_0000.nii.gz"
    data = bytearray(path.read_bytes())
    if damage == "cut":
        data = data[: len(data) * 2 // 3]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [None, "cut", "flipped"])
def test_dataset_check_reads_fast_gzip_and_reports_damage(tmp_path, rng, damage):
    _one_case_dataset(tmp_path, rng, damage)
    report = check_dataset(tmp_path, num_processes=1)
    if damage is None:
        assert report.ok, report.errors
    else:
        assert [p.path for p in report.errors] == ["imagesTr/c_0000.nii.gz"]
        assert "unreadable" in report.errors[0].message
