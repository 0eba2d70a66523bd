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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from voxseg.io.gz import GzipInflater, isal_available
from voxseg.io.image import Geometry, Image, ItkHeader, from_itk_array, sitk_geometry

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


class _PlainNifti:
    """A plain ``.nii.gz`` opened for reading: SimpleITK's header, the stream at the first
    voxel, the voxels' dtype and ITK size ``(x, y, z)``; ``None`` from :meth:`open` for
    anything else."""

    def __init__(
        self, path: Path, reader: sitk.ImageFileReader, stream: GzipInflater, dtype, size, end
    ) -> None:
        self.path, self.reader, self.stream = path, reader, stream
        self.dtype, self.size, self.end = dtype, size, end  # end: the voxels' last byte + 1

    def ends_where_expected(self) -> bool:
        """The gzip trailer's length field (the last 4 bytes of a one-member file) matches
        the header's voxels: a file cut short, or written in several members, does not."""
        with open(self.path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            return int.from_bytes(f.read(4), "little") == self.end % 2**32

    @classmethod
    def open(cls, path: Path) -> _PlainNifti | None:
        if not isal_available():
            return None
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
        stream = GzipInflater(path)
        layout = _plain_layout(stream.read(_HEADER_BYTES))
        if layout is None:
            stream.close()
            return None
        dtype, offset, voxels = layout
        skip = offset - _HEADER_BYTES
        bad = dtype != np.dtype(sitk_dtype) or voxels != int(np.prod(size, dtype=np.int64))
        if bad or stream.skip(skip) != skip:
            stream.close()
            return None
        return cls(path, reader, stream, dtype, size, offset + voxels * dtype.itemsize)

    def image(self, array: np.ndarray) -> Image:
        native = array.astype(array.dtype.newbyteorder("="), copy=False)
        return from_itk_array(native, ItkHeader.of(self.reader))


def read_nifti_gz(path: str | os.PathLike[str]) -> Image | None:
    """The image of a plain ``.nii.gz`` file read through ISA-L (see the module docstring),
    equal to SimpleITK's reading; ``None`` when ISA-L is missing or the file is not plain
    (the caller then reads it with SimpleITK, which also words any error)."""
    try:
        plain = _PlainNifti.open(Path(path))
        if plain is None:
            return None
        with plain.stream:
            array = np.empty(tuple(reversed(plain.size)), plain.dtype)
            if plain.stream.readinto(array) != array.nbytes:
                return None
            if plain.stream.skip(1):  # to the end: the trailer's checksum is checked
                return None
    except (OSError, EOFError, RuntimeError):
        return None
    return plain.image(array)


def read_nifti_gz_rows(
    path: str | os.PathLike[str], rows: Sequence[int]
) -> tuple[Geometry, np.ndarray] | None:
    """Only the given slices (ascending indices along array axis 0, ``z`` of ``[z, y, x]``)
    of a plain 3D ``.nii.gz``: the file's geometry and an array ``[len(rows), y, x]``. The
    stream is inflated up to the last of them only, and the other slices are never stored (a
    viewer showing a third of a CT's slices keeps a third of it); the file's length is
    checked against the gzip trailer, its checksum is not (the tail is not inflated).
    ``None`` as :func:`read_nifti_gz`, and for a file that is not 3D or not one gzip
    member."""
    rows = [int(r) for r in rows]
    if any(b <= a for a, b in zip(rows, rows[1:], strict=False)):
        raise ValueError(f"rows must be ascending and distinct, got {rows[:8]}…")
    try:
        plain = _PlainNifti.open(Path(path))
        if plain is None:
            return None
        with plain.stream:
            if plain.reader.GetDimension() != 3 or not plain.ends_where_expected():
                return None
            if rows and not 0 <= rows[0] <= rows[-1] < plain.size[2]:
                return None
            shape = tuple(reversed(plain.size))
            array = np.empty((len(rows), *shape[1:]), plain.dtype)
            row_bytes = array[0].nbytes if len(rows) else 0
            position = 0
            for k, r in enumerate(rows):
                gap = (r - position) * row_bytes
                if plain.stream.skip(gap) != gap or plain.stream.readinto(array[k]) != row_bytes:
                    return None
                position = r + 1
    except (OSError, EOFError, RuntimeError):
        return None
    geometry, _ = sitk_geometry(ItkHeader.of(plain.reader))
    return geometry, array.astype(array.dtype.newbyteorder("="), copy=False)
