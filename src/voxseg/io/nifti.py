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
import tempfile
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from voxseg.io.gz import CHUNK, MADV_DONTNEED, GzipInflater, gzip_writer, isal_available
from voxseg.io.image import (
    Geometry,
    Image,
    ItkHeader,
    from_itk_array,
    sitk_geometry,
    to_sitk,
)

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


# --------------------------------------------------------------------------- large grids
# A tracer, a viewer or a crop reads a small part of a clinical-size image, and writes a
# label map whose non-zero part is small. These keep the voxels of the image on disk and
# write the label map slab by slab, so neither is ever whole in memory.

#: Slices written per slab by :func:`write_nifti_region`.
_SLAB = 16


def map_nifti(path: str | os.PathLike[str], scratch: str | os.PathLike[str]) -> Image | None:
    """The image of a plain 3D NIfTI whose voxels stay on disk: a read-only ``np.memmap``
    (a ``.nii`` mapped where it is; a ``.nii.gz`` inflated once, one megabyte at a time, into
    an unnamed temporary file in the folder ``scratch``, which the system removes when the
    array is gone). Only the parts a caller reads become resident memory, and
    :func:`release_pages` gives them back. ``None`` for anything else (the caller reads it
    whole, as :func:`voxseg.io.read_image`)."""
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".nii"):
        return _map_plain_nii(path)
    if not name.endswith(".nii.gz"):
        return None
    try:
        plain = _PlainNifti.open(path)
        if plain is None:
            return None
        with plain.stream:
            if plain.reader.GetDimension() != 3:
                return None
            nbytes = int(np.prod(plain.size, dtype=np.int64)) * plain.dtype.itemsize
            scratch_file = tempfile.TemporaryFile(dir=scratch)
            buffer = np.empty(CHUNK, np.uint8)
            left = nbytes
            while left:
                got = plain.stream.readinto(buffer[: min(CHUNK, left)])
                if not got:
                    return None  # cut short
                scratch_file.write(memoryview(buffer)[:got])
                left -= got
            if plain.stream.skip(1):  # to the end: the trailer's checksum is checked
                return None
            scratch_file.flush()
            array = np.memmap(scratch_file, plain.dtype, "r", shape=tuple(reversed(plain.size)))
    except (OSError, EOFError, RuntimeError):
        return None
    return plain.image(array)


def _map_plain_nii(path: Path) -> Image | None:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        with open(path, "rb") as f:
            layout = _plain_layout(f.read(_HEADER_BYTES))
    except (OSError, RuntimeError):
        return None
    size = [int(s) for s in reader.GetSize()]
    if layout is None or reader.GetDimension() != 3 or reader.GetNumberOfComponents() != 1:
        return None
    dtype, offset, voxels = layout
    if dtype != np.dtype(_SITK_DTYPES.get(reader.GetPixelID(), "V1")):
        return None
    if voxels != int(np.prod(size)) or path.stat().st_size < offset + voxels * dtype.itemsize:
        return None
    array = np.memmap(path, dtype, "r", offset=offset, shape=tuple(reversed(size)))
    return from_itk_array(array.astype(dtype.newbyteorder("="), copy=False), ItkHeader.of(reader))


def release_pages(array: np.ndarray) -> None:
    """Give back the resident pages of a disk-backed array (from :func:`map_nifti`) that were
    read so far; the data stays on disk and is read again when touched. A no-op for an array
    in memory."""
    base = array
    while base is not None and not isinstance(base, np.memmap):
        base = base.base
    mapping = getattr(base, "_mmap", None)
    if mapping is not None and MADV_DONTNEED is not None:
        mapping.madvise(MADV_DONTNEED)


def max_projection(array: np.ndarray, axis: int = 0) -> np.ndarray:
    """``array.max(axis)`` of a ``[z, y, x]`` array, read 16 slices at a time along ``z``
    and, for a disk-backed array, giving the pages read back after each slab (a projection
    of a mapped clinical-size image holds one slab, not the image)."""
    if axis != 0 or not array.shape[0]:
        return array.max(axis=axis)
    out = None
    for z in range(0, array.shape[0], _SLAB):
        part = np.asarray(array[z : z + _SLAB]).max(axis=0)
        out = part if out is None else np.maximum(out, part)
        release_pages(array)
    return out


def write_nifti_region(
    path: str | os.PathLike[str], geometry: Geometry, block: np.ndarray, lo: Sequence[int]
) -> Path:
    """Write the NIfTI ``path`` (``.nii`` or ``.nii.gz``, ISA-L level
    :data:`~voxseg.io.gz.FAST_LEVEL`) of the grid ``geometry`` holding ``block``
    (``[z, y, x]``) at index ``lo`` and zeros everywhere else, slab by slab: the header is
    SimpleITK's for this geometry and dtype (written for a 2×2×2 grid, its sizes then set to
    the grid's; they are the only fields that depend on the size), so the file reads back as
    SimpleITK would have written the whole array. Not atomic (see
    :func:`voxseg.io.write_image_region`)."""
    path = Path(path)
    shape = tuple(int(n) for n in geometry.shape)
    lo = tuple(int(v) for v in lo)
    block = np.asarray(block)
    if block.ndim != 3 or any(
        a < 0 or a + n > s for a, n, s in zip(lo, block.shape, shape, strict=True)
    ):
        raise ValueError(f"block {block.shape} at {lo} does not fit the grid {shape}")
    corner = Geometry((2, 2, 2), geometry.spacing, geometry.origin, geometry.direction)
    small = to_sitk(Image.from_geometry(np.zeros((2, 2, 2), block.dtype), corner))
    header_file = path.with_name(path.name + ".header.nii")
    sitk.WriteImage(small, str(header_file), useCompression=False)
    raw_header = header_file.read_bytes()
    header_file.unlink()
    offset = int(struct.unpack_from("<f", raw_header, 108)[0])
    header = bytearray(raw_header[:offset])
    struct.pack_into("<3h", header, 42, shape[2], shape[1], shape[0])
    little = block.dtype.newbyteorder("<")
    slab = np.zeros((min(_SLAB, shape[0]), *shape[1:]), little)
    (z0, y0, x0), (bz, by, bx) = lo, block.shape
    with open(path, "wb") as raw:
        out = gzip_writer(raw) if path.name.lower().endswith(".gz") else nullcontext(raw)
        with out as f:
            f.write(header)
            for z in range(0, shape[0], _SLAB):
                part = slab[: min(_SLAB, shape[0] - z)]
                part.fill(0)
                a, b = max(z, z0), min(z + len(part), z0 + bz)
                if a < b:
                    part[a - z : b - z, y0 : y0 + by, x0 : x0 + bx] = block[a - z0 : b - z0]
                f.write(memoryview(part).cast("B"))
    return path
