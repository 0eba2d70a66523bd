"""Reorientation against SimpleITK's DICOMOrient and nibabel's aff2axcodes."""

from __future__ import annotations

import itertools
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from voxseg.io import Image, from_sitk, to_sitk, write_image
from voxseg.spatial import (
    Reorientation,
    orientation_code,
    parse_code,
    reorient,
    undo_reorientation,
)

ALL_CODES = [
    "".join(letters)
    for perm in itertools.permutations(("LR", "PA", "SI"))
    for letters in itertools.product(*perm)
]
DIRECTIONS = {
    "identity": np.eye(3)[:, ::-1],  # ITK's identity in voxseg's column order
    "voxseg_default": np.eye(3),
    "permuted_flipped": np.array([[0, 0, -1.0], [1.0, 0, 0], [0, -1.0, 0]]),
    "oblique": Rotation.from_euler("xyz", [12, -17, 25], degrees=True).as_matrix(),
    "oblique_flipped": Rotation.from_euler("zyx", [-30, 8, 14], degrees=True).as_matrix()
    @ np.diag([1.0, -1.0, 1.0]),
}


def make_image(rng, direction, channels=False):
    shape = (2, 5, 6, 7) if channels else (5, 6, 7)
    return Image(
        rng.standard_normal(shape).astype(np.float32), (2.0, 0.5, 0.8), (1.0, -2.0, 3.0), direction
    )


def test_codes():
    assert len(ALL_CODES) == 48
    assert orientation_code(np.eye(3)[:, ::-1]) == "LPS"
    identity = sitk.Image(3, 4, 5, sitk.sitkUInt8)  # ITK identity direction
    assert orientation_code(from_sitk(identity)) == "LPS"
    assert orientation_code(from_sitk(identity).geometry) == "LPS"
    assert parse_code("sct:RPI") == "LAS" and parse_code("nib:ras") == "RAS"
    for bad in ("RL", "RLS", "XYZ", "RASS"):
        with pytest.raises(ValueError):
            parse_code(bad)


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_orientation_code_matches_sitk(name):
    d = DIRECTIONS[name]
    img = to_sitk(Image(np.zeros((2, 2, 2), np.float32), direction=d))
    expected = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(img.GetDirection())
    assert orientation_code(d) == expected


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_reorient_matches_dicomorient(rng, name):
    img = make_image(rng, DIRECTIONS[name])
    for code in ALL_CODES:
        out, _ = reorient(img, code)
        ref = from_sitk(sitk.DICOMOrient(to_sitk(img), code))
        np.testing.assert_array_equal(out.array, ref.array)
        assert out.geometry.is_close(ref.geometry, atol=1e-9), code
        assert orientation_code(out.direction) == code


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_every_voxel_keeps_its_physical_position(rng, name):
    img = make_image(rng, DIRECTIONS[name])
    out, _ = reorient(img, "sct:RPI")
    idx = np.stack(np.meshgrid(*map(np.arange, out.shape), indexing="ij"), -1).reshape(-1, 3)
    points = out.geometry.index_to_physical(idx)
    back = np.rint(img.geometry.physical_to_index(points)).astype(int)
    np.testing.assert_allclose(img.geometry.physical_to_index(points), back, atol=1e-9)
    np.testing.assert_array_equal(out.array.reshape(-1), img.array[tuple(back.T)])


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_round_trip_with_channels(rng, name):
    img = make_image(rng, DIRECTIONS[name], channels=True)
    for code in ("RAS", "sct:RPI", "PIR"):
        out, r = reorient(img, code)
        assert out.array.shape[0] == 2
        r = Reorientation.from_dict(json.loads(json.dumps(r.to_dict())))
        back = undo_reorientation(out, r, img.geometry)
        np.testing.assert_array_equal(back.array, img.array)
        assert back.geometry.is_close(img.geometry, atol=1e-12)
        np.testing.assert_array_equal(undo_reorientation(out.array, r, img.geometry), img.array)


def test_identity_reorientation(rng):
    img = make_image(rng, DIRECTIONS["identity"])
    out, r = reorient(img, "LPS")
    assert r.is_identity and np.array_equal(out.array, img.array)


@pytest.mark.parametrize("code", ["RAS", "LPS", "PIR", "sct:RPI", "sct:LPI"])
def test_nibabel_reads_the_code(rng, tmp_path, code):
    """nibabel's aff2axcodes uses the same letters; SCT's codes are the opposite letters."""
    out, _ = reorient(make_image(rng, DIRECTIONS["permuted_flipped"]), code)
    path = tmp_path / "img.nii.gz"
    write_image(out, path)
    axcodes = "".join(nib.aff2axcodes(nib.load(path).affine))
    assert axcodes == parse_code(code)
    if code.startswith("sct:"):  # SCT's get_orientation: opposite of nibabel per letter
        opposite = {"L": "R", "R": "L", "A": "P", "P": "A", "I": "S", "S": "I"}
        assert "".join(opposite[c] for c in axcodes) == code[4:]
