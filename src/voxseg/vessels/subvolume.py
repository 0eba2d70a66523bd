"""Local boxes: index boxes around a physical point and the sub-images they cut out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voxseg.io import Geometry, Image


@dataclass(frozen=True)
class Box:
    """A half-open index box ``[lo, hi)`` of a grid of shape ``shape`` (axes ``z, y, x``)."""

    lo: tuple[int, int, int]
    hi: tuple[int, int, int]
    shape: tuple[int, int, int]

    @property
    def size(self) -> tuple[int, int, int]:
        return tuple(int(h - lo) for lo, h in zip(self.lo, self.hi, strict=True))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.lo, self.hi, strict=True))

    @property
    def on_image_border(self) -> np.ndarray:
        """``(3, 2)`` bool: does the low/high face along each axis lie on the grid's face?"""
        return np.array(
            [[lo == 0, hi == n] for lo, hi, n in zip(self.lo, self.hi, self.shape, strict=True)]
        )

    def to_list(self) -> list[list[int]]:
        return [list(self.lo), list(self.hi)]


def box_around(
    geometry: Geometry,
    centre: np.ndarray,
    side_mm: float,
    min_voxels: int = 5,
    max_voxels: int | None = None,
) -> Box | None:
    """The box of side ``side_mm`` (at least ``min_voxels``, at most ``max_voxels`` per axis)
    centred on the LPS point ``centre``, clipped to the grid; ``None`` when ``centre`` lies
    outside the grid."""
    shape = np.asarray(geometry.shape)
    c = geometry.physical_to_index(np.asarray(centre, dtype=float))
    if np.any(c < -0.5) or np.any(c > shape - 0.5):
        return None
    n = np.maximum(np.ceil(side_mm / np.asarray(geometry.spacing)).astype(int), min_voxels)
    if max_voxels is not None:
        n = np.minimum(n, max_voxels)
    lo = np.round(c - (n - 1) / 2.0).astype(int)
    hi = lo + n
    lo, hi = np.maximum(lo, 0), np.minimum(hi, shape)
    return Box(tuple(int(v) for v in lo), tuple(int(v) for v in hi), tuple(int(v) for v in shape))


def sub_geometry(geometry: Geometry, box: Box) -> Geometry:
    """Geometry of the box: same spacing and direction, origin at voxel ``box.lo``."""
    origin = geometry.index_to_physical(np.asarray(box.lo, dtype=float))
    return Geometry(box.size, geometry.spacing, tuple(origin), geometry.direction)


def crop(image: Image, box: Box) -> Image:
    """The part of ``image`` inside ``box`` (channels kept) with its own geometry, a copy (the
    image may be a read-only map of a file, :func:`voxseg.io.read_image_on_disk`)."""
    arr = np.array(image.array[(..., *box.slices)], order="C")
    return Image.from_geometry(arr, sub_geometry(image.geometry, box))
