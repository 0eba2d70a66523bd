"""Image headers read without the pixels: the size a file claims, checked against what the
file can hold and against the memory available before anything is allocated.

A header claiming more voxels than its file can hold is corrupt: uncompressed data needs at
least its byte count on disk, and deflate (gzip/zlib, the only compression of NIfTI, MHA and
NRRD files) cannot shrink data more than 1032:1 (RFC 1951: a 258-byte match costs at least
two bits), so a file of ``n`` bytes holds at most ``1032 n`` bytes of voxels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from voxseg.errors import VoxsegError

DAMAGED = "cannot read image: the file is damaged, truncated or not an image"
#: Deflate's largest compression ratio (RFC 1951).
DEFLATE_MAX_RATIO = 1032
#: ``VOXSEG_MEMORY_CHECK=0`` turns the memory checks off (the corrupt-header check stays).
MEMORY_CHECK_ENV = "VOXSEG_MEMORY_CHECK"
_UNCOMPRESSED = (".nii",)


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says: spatial shape ``[z, y, x]`` (2D: ``[1, y, x]``), channels,
    bytes per value and spacing in the same order."""

    path: Path
    shape: tuple[int, ...]
    channels: int
    itemsize: int
    spacing: tuple[float, ...]

    @property
    def voxels(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        """Bytes of the pixel data as stored (all channels)."""
        return self.voxels * self.channels * self.itemsize


def read_header(path: str | os.PathLike[str]) -> ImageHeader:
    """The header of a NIfTI, MHA, NRRD or TIFF file (SimpleITK, no pixel data read)."""
    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        last = [ln.strip() for ln in str(exc).splitlines() if ln.strip()][-1:] or ["?"]
        raise VoxsegError(f"{path}: {DAMAGED} (header: {last[0]})") from exc
    size = [int(s) for s in reader.GetSize()]
    spacing = [float(s) for s in reader.GetSpacing()]
    channels = int(reader.GetNumberOfComponents())
    if len(size) == 4:
        channels *= size[3]
        size, spacing = size[:3], spacing[:3]
    if len(size) == 2:
        size, spacing = [*size, 1], [*spacing, 1.0]
    itemsize = _itemsize(reader)
    return ImageHeader(path, tuple(reversed(size)), channels, itemsize, tuple(reversed(spacing)))


def _itemsize(reader: sitk.ImageFileReader) -> int:
    name = sitk.GetPixelIDValueAsString(reader.GetPixelID()).lower()
    for key, n in (("64", 8), ("32", 4), ("16", 2), ("8", 1)):
        if key in name:
            return n
    return 8 if "double" in name else 4


def _detached_data(path: Path) -> list[Path] | None:
    """The data file named by a ``.mhd``/``.mha``/``.nhdr``/``.nrrd`` header (``[]`` when the
    data follows the header in the same file; ``None`` when it cannot be told)."""
    with open(path, "rb") as f:
        head = f.read(65536).decode("latin-1")
    for line in head.splitlines():
        key, sep, value = line.partition("=" if "=" in line.split(":")[0] else ":")
        key, value = key.strip().lower().replace(" ", ""), value.strip()
        if sep and key in ("elementdatafile", "datafile"):
            if value.upper() == "LOCAL":
                return []
            target = path.parent / value
            return [target] if target.is_file() else None
        if not line.strip() and path.suffix.lower() in (".nrrd", ".nhdr"):
            break  # the end of a NRRD header
    return [] if path.suffix.lower() in (".nrrd",) else None


def check_claimed_size(header: ImageHeader) -> None:
    """Refuse a header that claims more voxel bytes than its file(s) can hold (see above)."""
    ending = header.path.name.lower()
    extra: list[Path] | None = []
    if ending.endswith((".mhd", ".mha", ".nhdr", ".nrrd")):
        extra = _detached_data(header.path)
    if extra is None:
        return
    on_disk = header.path.stat().st_size + sum(p.stat().st_size for p in extra)
    name = header.path.name.lower()
    limit = on_disk if name.endswith(_UNCOMPRESSED) else on_disk * DEFLATE_MAX_RATIO
    if header.nbytes > limit:
        dims = "×".join(str(s) for s in header.shape)
        raise VoxsegError(
            f"{header.path}: corrupt header: it claims {dims} voxels × {header.channels} "
            f"channel(s) ({_human(header.nbytes)}), more than a {_human(on_disk)} file can hold"
        )


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` on Linux)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else 0
        return int(pages * os.sysconf("SC_PAGE_SIZE")) if pages else 2**62


def memory_check_enabled() -> bool:
    return os.environ.get(MEMORY_CHECK_ENV, "1").strip().lower() not in ("0", "false", "no")


def require_memory(need: int, what: str, hint: str) -> None:
    """Refuse ``what`` when its estimated peak ``need`` exceeds the available memory."""
    if not memory_check_enabled():
        return
    free = available_memory()
    if need > free:
        raise VoxsegError(
            f"{what} needs about {_human(need)} of memory at its peak, {_human(free)} is "
            f"available; "
            f"{hint} (or set {MEMORY_CHECK_ENV}=0 to try anyway)"
        )


def _human(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
