"""gzip streams through ISA-L (python-isal's ``igzip_lib``), when it is installed.

ISA-L inflates a 300×512×512 CT ``.nii.gz`` in about 0.45 CPU s where SimpleITK's zlib takes
0.65–0.85 s (``benchmarks/RESULTS.md``, HTML reports). :class:`GzipInflater` reads a file's
decompressed bytes in order, straight into the caller's NumPy buffer, one megabyte at a time:
no second copy of the output and no allocation of the whole stream as ``bytes``.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

try:
    from isal import igzip_lib
except ImportError:  # optional: callers fall back to their zlib readers
    igzip_lib = None

#: Bytes inflated (and compressed bytes fed) per step.
CHUNK = 1 << 20
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

    def close(self) -> None:
        self._data.close()

    def __enter__(self) -> GzipInflater:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
