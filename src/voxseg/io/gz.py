"""gzip streams through ISA-L (python-isal's ``igzip_lib``), when it is installed.

Writing: :func:`gzip_file` deflates a file at ISA-L level 2 (:data:`FAST_LEVEL`). SimpleITK
compresses ``.nii.gz`` with zlib at a level its settings do not change (about 1.7 CPU s for a
150×512×512 int16 CT); ISA-L level 2 takes about 0.5 s for the same bytes and a file 2–3 %
larger (level 1 is no faster and 6 % larger, level 3 slower on label maps). The result is an
ordinary single-member gzip file (RFC 1952) that zlib, SimpleITK, nibabel and 3D Slicer read.

ISA-L inflates a 300×512×512 CT ``.nii.gz`` in about 0.45 CPU s where SimpleITK's zlib takes
0.65–0.85 s (``benchmarks/RESULTS.md``, HTML reports). :class:`GzipInflater` reads a file's
decompressed bytes in order, straight into the caller's NumPy buffer, one megabyte at a time:
no second copy of the output and no allocation of the whole stream as ``bytes``.
"""

from __future__ import annotations

import gzip
import mmap
import os
import shutil
import zlib
from pathlib import Path
from typing import IO

import numpy as np

try:
    from isal import igzip, igzip_lib
except ImportError:  # optional: callers fall back to their zlib readers
    igzip = igzip_lib = None

#: Bytes inflated (and compressed bytes fed) per step.
CHUNK = 1 << 20
#: Compressed bytes read between two releases of the mapping's pages (``madvise``).
_RELEASE_EVERY = 16 * CHUNK
MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)
_GZIP_MAGIC = b"\x1f\x8b"


def isal_available() -> bool:
    """Whether python-isal (ISA-L) is installed."""
    return igzip_lib is not None


class GzipInflater:
    """The decompressed bytes of a gzip file (one member or several, as ``gzip`` writes them
    concatenated), read in order with :meth:`read` and :meth:`readinto`.

    Raises ``OSError`` (``EOFError`` for a stream cut short) on a damaged stream, and
    ``RuntimeError`` when ISA-L is not installed. Use as a context manager.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if igzip_lib is None:
            raise RuntimeError("python-isal is not installed (pip install isal)")
        self.path = Path(path)
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise EOFError(f"{self.path}: empty file")
            self._data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._fed = 0  # compressed bytes handed to the decompressors so far
        self._released = 0  # bytes of the mapping dropped from resident memory so far
        self._member = self._new_member()
        self._done = False

    def _new_member(self) -> igzip_lib.IgzipDecompressor:
        return igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)

    def _step(self, limit: int) -> bytes:
        """Up to ``limit`` more decompressed bytes (``b""`` at the end of the file)."""
        while not self._done:
            d = self._member
            if d.eof:  # the next member starts where this one's input ended
                self._fed -= len(d.unused_data)
                if self._data[self._fed : self._fed + 2] != _GZIP_MAGIC:
                    self._done = True  # the end, or trailing bytes (ignored, as gzip does)
                    break
                self._member = self._new_member()
                continue
            data = b""
            if d.needs_input:
                self._release_read()
                data = self._data[self._fed : self._fed + CHUNK]
                self._fed += len(data)
                if not len(data):
                    raise EOFError(f"{self.path}: the gzip stream is cut short")
            try:
                out = d.decompress(data, limit)
            except igzip_lib.IsalError as exc:
                raise OSError(f"{self.path}: damaged gzip stream ({exc})") from exc
            if out:
                return out
        return b""

    def _release_read(self) -> None:
        """Drop the compressed bytes already fed from this process's mapping (they stay in the
        page cache): a large file read through does not hold the whole compressed stream in
        resident memory beside its output."""
        if MADV_DONTNEED is None:
            return
        done = (self._fed // mmap.PAGESIZE) * mmap.PAGESIZE
        if done - self._released >= _RELEASE_EVERY:
            self._data.madvise(MADV_DONTNEED, 0, done)
            self._released = done

    def read(self, n: int) -> bytes:
        """The next ``n`` decompressed bytes (fewer at the end of the stream)."""
        parts, got = [], 0
        while got < n:
            piece = self._step(min(CHUNK, n - got))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
        return b"".join(parts)

    def readinto(self, out: np.ndarray) -> int:
        """Fill a C-contiguous array with the next ``out.nbytes`` decompressed bytes; returns
        how many were there (fewer at the end of the stream)."""
        buf = out.reshape(-1).view(np.uint8)
        pos = 0
        while pos < buf.size:
            piece = self._step(min(CHUNK, buf.size - pos))
            if not piece:
                break
            buf[pos : pos + len(piece)] = np.frombuffer(piece, np.uint8)
            pos += len(piece)
        return pos

    def skip(self, n: int) -> int:
        """Inflate and drop the next ``n`` bytes; returns how many were there."""
        got = 0
        while got < n:
            piece = self._step(min(CHUNK, n - got))
            if not piece:
                break
            got += len(piece)
        return got

    def close(self) -> None:
        self._data.close()

    def __enter__(self) -> GzipInflater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: ISA-L deflate level of :func:`gzip_file` (0–3; see the module docstring).
FAST_LEVEL = 2

#: What reading a cut or corrupt gzip stream may raise (gzip's, zlib's and ISA-L's errors).
GZIP_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error) + (
    (igzip_lib.IsalError,) if igzip_lib is not None else ()
)


def gzip_file(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], level: int = FAST_LEVEL
) -> Path:
    """Compress the file ``src`` into the gzip file ``dst`` with ISA-L (zlib at level 1 when
    python-isal is missing). Not atomic: callers write into a temporary folder, as
    :func:`voxseg.io.formats.write_image` does."""
    dst = Path(dst)
    with open(src, "rb") as f, open(dst, "wb") as raw, gzip_writer(raw, level) as g:
        shutil.copyfileobj(f, g, 4 * CHUNK)
    return dst


def gzip_writer(raw: IO[bytes], level: int = FAST_LEVEL) -> IO[bytes]:
    """A gzip writer into the open binary file ``raw``: ISA-L at ``level`` (zlib at level 1
    when python-isal is missing), with no time stamp and no name in the header, so the same
    bytes in give the same file out. Use as a context manager; closing it leaves ``raw``
    open."""
    if igzip is not None:
        return igzip.IGzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=level)
    return gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=1)


def open_gzip(path: str | os.PathLike[str]) -> IO[bytes]:
    """A seekable binary reader of the gzip file ``path``, inflated by ISA-L when installed
    (as :func:`gzip.open`); a cut or corrupt stream raises one of :data:`GZIP_ERRORS`."""
    return igzip.open(path, "rb") if igzip is not None else gzip.open(path, "rb")
