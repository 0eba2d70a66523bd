"""Large grids: images read with their voxels left on disk, label maps written slab by slab.

References: SimpleITK writes the whole array and reads every file back; nibabel reads the
written files as an independent NIfTI reader; the resident memory of this process is read
from ``/proc/self/status``.
"""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from voxseg.errors import VoxsegError
from voxseg.io import (
    Geometry,
    Image,
    max_projection,
    read_image,
    read_image_on_disk,
    release_pages,
    write_image,
    write_image_region,
)

OBLIQUE = ((0.0, 0.6, -0.8), (0.0, 0.8, 0.6), (1.0, 0.0, 0.0))


def _geometry(shape=(21, 18, 15)) -> Geometry:
    return Geometry(shape, (1.2, 0.7, 0.5), (10.0, -20.0, 30.0), OBLIQUE)


def _sitk_array(path):
    img = sitk.ReadImage(str(path))
    return img, sitk.GetArrayFromImage(img)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize(
    "lo, size", [((3, 4, 5), (7, 6, 5)), ((0, 0, 0), (21, 18, 15)), ((14, 12, 10), (7, 6, 5))]
)
def test_region_write_equals_simpleitk_writing_the_whole_grid(tmp_path, ending, dtype, lo, size):
    geometry = _geometry()
    rng = np.random.default_rng(0)
    block = (rng.random(size) * 200).astype(dtype)
    full = np.zeros(geometry.shape, dtype)
    full[tuple(slice(a, a + n) for a, n in zip(lo, size, strict=True))] = block
    whole = write_image(Image.from_geometry(full, geometry), tmp_path / f"whole{ending}")
    region = write_image_region(tmp_path / f"region{ending}", geometry, block, lo)

    ref_img, ref_arr = _sitk_array(whole)
    got_img, got_arr = _sitk_array(region)
    assert got_arr.dtype == ref_arr.dtype
    np.testing.assert_array_equal(got_arr, ref_arr)
    assert got_img.GetSpacing() == ref_img.GetSpacing()
    assert got_img.GetOrigin() == ref_img.GetOrigin()
    assert got_img.GetDirection() == ref_img.GetDirection()
    if ending != ".nrrd":  # nibabel: an independent NIfTI reader, same voxels and affine
        a, b = nib.load(whole), nib.load(region)
        np.testing.assert_array_equal(np.asarray(b.dataobj), np.asarray(a.dataobj))
        np.testing.assert_allclose(b.affine, a.affine)
        assert b.header.get_data_dtype() == a.header.get_data_dtype()


def test_region_write_of_nothing_is_a_grid_of_zeros(tmp_path):
    geometry = _geometry()
    path = write_image_region(tmp_path / "empty.nii.gz", geometry, np.zeros((0, 0, 0)), (0, 0, 0))
    _, arr = _sitk_array(path)
    assert arr.shape == geometry.shape and not arr.any()
    with gzip.open(path) as f:  # an ordinary gzip stream
        assert len(f.read()) > arr.nbytes


def test_region_write_refuses_a_block_outside_the_grid(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        write_image_region(tmp_path / "x.nii.gz", _geometry(), np.ones((5, 5, 5)), (18, 0, 0))
    assert not list(tmp_path.iterdir())  # nothing left under the name or beside it


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_on_disk_read_equals_read_image(tmp_path, ending, dtype):
    rng = np.random.default_rng(1)
    arr = (rng.normal(0, 300, (21, 18, 15))).astype(dtype)
    path = write_image(Image.from_geometry(arr, _geometry()), tmp_path / f"ct{ending}")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    mapped = read_image_on_disk(path, scratch)
    whole = read_image(path)
    assert mapped.geometry == whole.geometry
    assert mapped.array.dtype == whole.array.dtype
    np.testing.assert_array_equal(mapped.array, whole.array)
    assert not mapped.array.flags.writeable
    assert not list(scratch.iterdir())  # the scratch file has no name: nothing to clean up


def test_on_disk_read_of_other_files_reads_them_whole(tmp_path):
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    path = write_image(Image(arr), tmp_path / "ct.nrrd")
    image = read_image_on_disk(path, tmp_path)
    np.testing.assert_array_equal(image.array, arr)


def test_on_disk_read_of_a_cut_file_names_it(tmp_path):
    arr = np.random.default_rng(2).normal(size=(30, 40, 50)).astype(np.float32)
    path = write_image(Image(arr), tmp_path / "ct.nii.gz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VoxsegError, match="ct.nii.gz"):
        read_image_on_disk(path, tmp_path)


def _resident_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_an_image_on_disk_uses_memory_for_the_parts_read_only(tmp_path):
    """A 128 MB image: reading it on disk, a box of it and its projection keep the resident
    memory far below the image; ``read_image`` of the same file holds all of it."""
    rng = np.random.default_rng(3)
    arr = rng.integers(-1000, 2000, (128, 512, 512), dtype=np.int16)
    path = write_image(Image(arr), tmp_path / "big.nii.gz")
    expected_mip = arr.max(axis=0)
    box = arr[60:80, 100:140, 200:260].copy()
    del arr
    before = _resident_mb()
    image = read_image_on_disk(path, tmp_path)
    np.testing.assert_array_equal(image.array[60:80, 100:140, 200:260], box)
    mip = max_projection(image.array)
    grown = _resident_mb() - before
    np.testing.assert_array_equal(mip, expected_mip)
    assert grown < 30, f"resident memory grew by {grown:.0f} MB for a 128 MB image on disk"
    np.asarray(image.array[:64]).max()  # half the image resident ...
    release_pages(image.array)  # ... and given back
    assert _resident_mb() - before < 30
