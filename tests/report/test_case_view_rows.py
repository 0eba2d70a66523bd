"""A case page reads only the slices its viewer shows from a ``.nii.gz`` image: the same data
as reading the whole file, in every orientation and subsampling."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

import voxseg.report.cases as rc
from voxseg.io import read_image
from voxseg.io.gz import isal_available
from voxseg.io.nifti import read_nifti_gz_rows

pytestmark = pytest.mark.skipif(not isal_available(), reason="python-isal is not installed")

AFFINES = {  # nibabel affines (RAS world, x y z voxel axes)
    "RAS": np.diag([0.9, 0.8, 2.5, 1.0]),
    "LPS": np.diag([-0.9, -0.8, 2.5, 1.0]),
    "LAI": np.diag([-0.9, 0.8, -2.5, 1.0]),
    "permuted": np.array(
        [[0, 0, -2.5, 30.0], [0.9, 0, 0, -10.0], [0, -0.8, 0, 5.0], [0, 0, 0, 1]], float
    ),
}


def _case(tmp_path, affine, rng):
    shape = (30, 26, 22)  # nibabel: x y z
    image = rng.integers(-1000, 1500, shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    label[5:20, 4:18, 3:15] = 1
    label[12:16, 10:12, 8:19] = 2
    pred = np.roll(label, 2, axis=0)
    paths = []
    for name, arr in (("img_0000", image), ("ref", label), ("pred", pred)):
        path = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr, affine), path)
        paths.append(path)
    return rc.CaseSources("c", [paths[0]], paths[1], paths[2])


@pytest.mark.parametrize("orientation", list(AFFINES))
@pytest.mark.parametrize("budget", [(256, 2_500_000), (8, 300), (12, 2000)])
def test_shown_slices_equal_the_whole_file(tmp_path, rng, monkeypatch, orientation, budget):
    src = _case(tmp_path, AFFINES[orientation], rng)
    calls = []
    real = rc.read_nifti_gz_rows

    def spy(path, rows):
        calls.append(len(rows))
        return real(path, rows)

    monkeypatch.setattr(rc, "read_nifti_gz_rows", spy)
    by_rows = rc.build_case_view(src, True, max_inplane=budget[0], max_voxels=budget[1])
    assert calls and calls[0] <= 30
    monkeypatch.setattr(rc, "read_nifti_gz_rows", lambda path, rows: None)
    whole = rc.build_case_view(src, True, max_inplane=budget[0], max_voxels=budget[1])
    assert by_rows.data == whole.data


def test_rows_of_a_file(tmp_path, rng):
    arr = rng.integers(0, 255, (7, 6, 9)).astype(np.uint8)  # x y z: 9 slices
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(arr, AFFINES["permuted"]), path)
    full = read_image(path)
    geometry, rows = read_nifti_gz_rows(path, [0, 3, 4, 8])
    assert geometry == full.geometry
    np.testing.assert_array_equal(rows, full.array[[0, 3, 4, 8]])
    assert read_nifti_gz_rows(path, [])[1].shape == (0, 6, 7)
    with pytest.raises(ValueError, match="ascending"):
        read_nifti_gz_rows(path, [3, 1])
    blob = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(blob[: len(blob) // 2])
    assert read_nifti_gz_rows(cut, [0]) is None  # the trailer's length does not match
    raw = gzip.decompress(blob)
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(gzip.compress(raw[:100]) + gzip.compress(raw[100:]))
    assert read_nifti_gz_rows(multi, [0]) is None  # several members: read whole instead
