"""``.nii.gz`` pixels inflated by ISA-L (:mod:`voxseg.io.gz`), geometry from SimpleITK.

For a plain NIfTI-1 file — one scalar value per voxel, native byte order, no intensity
scaling — the voxels are the bytes after ``vox_offset``, ``x`` fastest: exactly the
``[(t,) z, y, x]`` array SimpleITK's ``GetArrayFromImage`` returns. The geometry (origin,
spacing, direction, from the qform or sform by ITK's rules) is read by SimpleITK's header
reader, the same code that places an image read whole by SimpleITK, so both paths give the
same array on the same grid. Anything else (scaled values, vector or RGB pixels, NIfTI-2,
Analyze, big-endian, a damaged stream) is left to SimpleITK: :func:`read_nifti_gz` returns
``None``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from voxseg.io.gz import GzipInflater, isal_available
from voxseg.io.image import Image, from_itk_array

#: NIfTI-1 ``datatype`` codes of scalar types → NumPy (little-endian).
_NIFTI_DTYPES = {
    2: "u1",
    4: "<i2",
    8: "<i4",
    16: "<f4",
    64: "<f8",
    256: "i1",
    512: "<u2",
    768: "<u4",
    1024: "<i8",
    1280: "<u8",
}
_SITK_DTYPES = {
    sitk.sitkUInt8: "u1",
    sitk.sitkInt8: "i1",
    sitk.sitkUInt16: "<u2",
    sitk.sitkInt16: "<i2",
    sitk.sitkUInt32: "<u4",
    sitk.sitkInt32: "<i4",
    sitk.sitkUInt64: "<u8",
    sitk.sitkInt64: "<i8",
    sitk.sitkFloat32: "<f4",
    sitk.sitkFloat64: "<f8",
}
_HEADER_BYTES = 348


def _plain_layout(header: bytes) -> tuple[np.dtype, int, int] | None:
    """``(dtype, vox_offset, voxels)`` of a single-file little-endian NIfTI-1 header holding
    unscaled scalar values; ``None`` for anything else."""
    if len(header) < _HEADER_BYTES or header[344:348] != b"n+1\0":
        return None
    if struct.unpack_from("<i", header, 0)[0] != _HEADER_BYTES:
        return None  # big-endian
    dims = struct.unpack_from("<8h", header, 40)
    datatype = struct.unpack_from("<h", header, 70)[0]
    offset, slope, inter = struct.unpack_from("<3f", header, 108)
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1 : ndim + 1]):
        return None
    if datatype not in _NIFTI_DTYPES or slope not in (0.0, 1.0) or inter != 0.0:
        return None
    if offset < _HEADER_BYTES or offset != int(offset):
        return None
    voxels = int(np.prod(dims[1 : ndim + 1], dtype=np.int64))
    return np.dtype(_NIFTI_DTYPES[datatype]), int(offset), voxels


def read_nifti_gz(path: str | os.PathLike[str]) -> Image | None:
    """The image of a plain ``.nii.gz`` file read through ISA-L (see the module docstring),
    equal to SimpleITK's reading; ``None`` when ISA-L is missing or the file is not plain
    (the caller then reads it with SimpleITK, which also words any error)."""
    if not isal_available():
        return None
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    sitk_dtype = _SITK_DTYPES.get(reader.GetPixelID())
    if reader.GetNumberOfComponents() != 1 or sitk_dtype is None:
        return None
    size = [int(s) for s in reader.GetSize()]
    try:
        with GzipInflater(path) as stream:
            layout = _plain_layout(stream.read(_HEADER_BYTES))
            if layout is None:
                return None
            dtype, offset, voxels = layout
            if dtype != np.dtype(sitk_dtype) or voxels != int(np.prod(size, dtype=np.int64)):
                return None
            if len(stream.read(offset - _HEADER_BYTES)) != offset - _HEADER_BYTES:
                return None
            array = np.empty(tuple(reversed(size)), dtype)
            if stream.readinto(array) != array.nbytes:
                return None
    except (OSError, EOFError, RuntimeError):
        return None
    return from_itk_array(
        array.astype(array.dtype.newbyteorder("="), copy=False),
        reader.GetDimension(),
        size,
        reader.GetSpacing(),
        reader.GetOrigin(),
        reader.GetDirection(),
    )
