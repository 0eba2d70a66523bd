"""Headers read without pixels: the claimed size against the file, and the memory guard."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from voxseg.errors import VoxsegError
from voxseg.io import Image, read_image, write_image
from voxseg.io import header as header_module
from voxseg.io.header import MEMORY_CHECK_ENV, check_claimed_size, read_header


def _image(shape=(6, 7, 8), dtype=np.int16) -> Image:
    arr = np.arange(np.prod(shape)).reshape(shape).astype(dtype)
    return Image(arr, spacing=(2.5, 0.75, 0.5), origin=(1.0, 2.0, 3.0))


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha", ".nrrd"])
def test_header_agrees_with_the_pixels(tmp_path, ending):
    path = write_image(_image(), tmp_path / f"a{ending}")
    h = read_header(path)
    ref = sitk.ReadImage(str(path))
    assert h.shape == (6, 7, 8) == sitk.GetArrayFromImage(ref).shape
    assert h.spacing == pytest.approx(tuple(reversed(ref.GetSpacing())))
    assert h.channels == 1 and h.itemsize == 2
    assert h.nbytes == sitk.GetArrayFromImage(ref).nbytes
    check_claimed_size(h)


def _nifti_claiming(tmp_path, dims, compress):
    path = write_image(_image(), tmp_path / "a.nii", compress=False)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<4h", raw, 40, 3, *dims)  # dim[0..3] at byte 40 of the NIfTI-1 header
    if compress:
        out = tmp_path / "claims.nii.gz"
        out.write_bytes(gzip.compress(bytes(raw)))
    else:
        out = tmp_path / "claims.nii"
        out.write_bytes(bytes(raw))
    return out


@pytest.mark.parametrize("compress", [False, True])
def test_nifti_claiming_2000_cubed_is_corrupt(tmp_path, compress):
    path = _nifti_claiming(tmp_path, (2000, 2000, 2000), compress)
    with pytest.raises(VoxsegError, match=r"claims.nii.*corrupt header.*2000×2000×2000"):
        read_image(path)


def _edit_text_header(path, key, value):
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    for i, line in enumerate(lines):
        if line.startswith(key):
            lines[i] = key + value
            break
    else:
        raise AssertionError(f"no {key!r} in {path}")
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("ending", "key", "value"),
    [(".mha", b"DimSize = ", b"2000 2000 2000"), (".nrrd", b"sizes: ", b"2000 2000 2000")],
)
@pytest.mark.parametrize("compress", [False, True])
def test_mha_and_nrrd_claiming_2000_cubed_are_corrupt(tmp_path, ending, key, value, compress):
    path = write_image(_image(), tmp_path / f"a{ending}", compress=compress)
    _edit_text_header(path, key, value)
    with pytest.raises(VoxsegError, match="corrupt header"):
        read_image(path)


def test_detached_mhd_counts_its_data_file(tmp_path):
    path = write_image(_image(), tmp_path / "a.mhd", compress=False)
    assert read_image(path).array.shape == (6, 7, 8)


def test_reading_refuses_an_image_larger_than_the_free_memory(tmp_path, monkeypatch):
    path = write_image(_image(), tmp_path / "a.nii.gz")
    monkeypatch.setattr(header_module, "available_memory", lambda: 100)
    with pytest.raises(
        VoxsegError, match=rf"a.nii.gz.*needs about 1.3 KiB.*100 B.*{MEMORY_CHECK_ENV}=0"
    ):
        read_image(path)
    monkeypatch.setenv(MEMORY_CHECK_ENV, "0")
    assert read_image(path).array.shape == (6, 7, 8)
