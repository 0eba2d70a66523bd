"""Orientation codes and exact reorientation (axis permutations and flips only).

A code has three letters, one per ITK axis ``(x, y, z)`` — the array axes ``[z, y, x]``
reversed — each naming the side of the patient the axis *points to* as its index grows:
``L``/``R``, ``P``/``A``, ``S``/``I``. This is the convention of SimpleITK's ``DICOMOrient``
(the identity direction is ``"LPS"``) and of nibabel's ``aff2axcodes`` (``"RAS"`` for an
identity NIfTI affine).

The Spinal Cord Toolbox names the side each axis comes *from*: SCT's ``RPI`` ("right to
left, posterior to anterior, inferior to superior") is ``LAS`` here. Prefix a code with
``sct:`` to write it SCT's way (``reorient(img, "sct:RPI")``); ``itk:``, ``sitk:`` and
``nib:`` prefixes name this module's own convention.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

from voxseg.io.image import Geometry, Image

#: LPS unit vector each letter points to.
_LETTER_VECTORS = {
    "L": (1, 0, 0),
    "R": (-1, 0, 0),
    "P": (0, 1, 0),
    "A": (0, -1, 0),
    "S": (0, 0, 1),
    "I": (0, 0, -1),
}
_OPPOSITE = {"L": "R", "R": "L", "P": "A", "A": "P", "S": "I", "I": "S"}
_PREFIXES = ("itk:", "sitk:", "nib:", "sct:")


def parse_code(code: str) -> str:
    """Normalise a code to this module's convention (``sct:`` codes are inverted per letter)."""
    raw = code.strip()
    low = raw.lower()
    prefix = next((p for p in _PREFIXES if low.startswith(p)), "")
    letters = raw[len(prefix) :].upper()
    if len(letters) != 3 or any(c not in _LETTER_VECTORS for c in letters):
        raise ValueError(f"orientation code {code!r} must be three letters of L/R, P/A, S/I")
    if len({frozenset((c, _OPPOSITE[c])) for c in letters}) != 3:
        raise ValueError(f"orientation code {code!r} names an anatomical axis twice")
    if prefix == "sct:":
        letters = "".join(_OPPOSITE[c] for c in letters)
    return letters


def code_to_direction(code: str) -> np.ndarray:
    """The 3×3 voxseg direction (columns = array axes ``z, y, x``) of an axis-aligned code."""
    letters = parse_code(code)
    itk_cols = np.array([_LETTER_VECTORS[c] for c in letters], dtype=float).T
    return itk_cols[:, ::-1].copy()


def _closest_assignment(direction: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Permutation ``p`` with array axis ``a`` ~ LPS axis ``p[a]``, maximising the total |cos|."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    best = max(
        itertools.permutations(range(3)),
        key=lambda p: sum(abs(d[p[a], a]) for a in range(3)),
    )
    signs = np.array([np.sign(d[best[a], a]) or 1.0 for a in range(3)])
    return best, signs


def orientation_code(direction: np.ndarray | Image | Geometry) -> str:
    """3-letter code of the ITK axes ``(x, y, z)`` (closest axis-aligned for oblique data).

    ``direction`` is voxseg's (columns = array axes ``z, y, x``), so ITK's identity is
    ``np.eye(3)[:, ::-1]`` here and has code ``"LPS"``; an Image or Geometry works too.
    """
    if isinstance(direction, Image):
        direction = direction.direction
    elif isinstance(direction, Geometry):
        direction = direction.direction_matrix
    perm, signs = _closest_assignment(direction)
    letters = []
    for a in (2, 1, 0):  # ITK x, y, z are array axes 2, 1, 0
        vec = [0, 0, 0]
        vec[perm[a]] = int(signs[a])
        letters.append(next(k for k, v in _LETTER_VECTORS.items() if v == tuple(vec)))
    return "".join(letters)


@dataclass(frozen=True)
class Reorientation:
    """Axis permutation then flips of a ``[.., z, y, x]`` array; invertible, exact.

    New spatial axis ``a`` is old axis ``transpose[a]``, reversed when ``flip[a]``.
    """

    transpose: tuple[int, ...] = (0, 1, 2)
    flip: tuple[bool, ...] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return tuple(self.transpose) == (0, 1, 2) and not any(self.flip)

    def _axes(self, ndim: int) -> tuple[int, list[int]]:
        if ndim not in (3, 4):
            raise ValueError(f"arrays must be [z, y, x] or [c, z, y, x]; got {ndim} dimensions")
        lead = ndim - 3
        return lead, [*range(lead), *(lead + t for t in self.transpose)]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Reorient an array (a leading channel axis is kept in place)."""
        lead, axes = self._axes(array.ndim)
        out = np.transpose(array, axes)
        flips = tuple(lead + a for a in range(3) if self.flip[a])
        return np.ascontiguousarray(np.flip(out, flips) if flips else out)

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Undo :meth:`apply`."""
        lead, axes = self._axes(array.ndim)
        flips = tuple(lead + a for a in range(3) if self.flip[a])
        out = np.flip(array, flips) if flips else array
        return np.ascontiguousarray(np.transpose(out, np.argsort(axes)))

    def to_dict(self) -> dict[str, Any]:
        return {"transpose": list(self.transpose), "flip": list(self.flip)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Reorientation:
        return cls(tuple(int(t) for t in d["transpose"]), tuple(bool(f) for f in d["flip"]))


def reorientation_for(geometry: Geometry, code: str) -> Reorientation:
    """The permutation and flips that bring ``geometry`` to orientation ``code``."""
    target = code_to_direction(code)
    current = geometry.direction_matrix
    transpose, flip = [], []
    perm_cur, signs_cur = _closest_assignment(current)
    for a in range(3):
        lps_axis = int(np.flatnonzero(target[:, a])[0])
        b = perm_cur.index(lps_axis)
        transpose.append(b)
        flip.append(bool(signs_cur[b] != target[lps_axis, a]))
    return Reorientation(tuple(transpose), tuple(flip))


def reoriented_geometry(geometry: Geometry, r: Reorientation) -> Geometry:
    """Geometry after :meth:`Reorientation.apply`: every voxel keeps its physical position."""
    d = geometry.direction_matrix
    shape = np.asarray(geometry.shape)
    spacing = np.asarray(geometry.spacing)
    old_index_of_new_zero = np.zeros(3)
    new_dir = np.empty((3, 3))
    for a, (b, f) in enumerate(zip(r.transpose, r.flip, strict=True)):
        new_dir[:, a] = -d[:, b] if f else d[:, b]
        if f:
            old_index_of_new_zero[b] = shape[b] - 1
    origin = geometry.index_to_physical(old_index_of_new_zero)
    return Geometry(
        tuple(int(shape[b]) for b in r.transpose),
        tuple(float(spacing[b]) for b in r.transpose),
        tuple(origin),
        new_dir,
    )


def reorient(image: Image, code: str) -> tuple[Image, Reorientation]:
    """Reorient to ``code`` by permuting and flipping axes (no interpolation).

    The result's :func:`orientation_code` is ``code`` (for oblique images, the closest
    axis-aligned one; the direction keeps its obliquity). Same array and geometry as
    ``SimpleITK.DICOMOrient(image, code)``.
    """
    r = reorientation_for(image.geometry, code)
    geom = reoriented_geometry(image.geometry, r)
    return Image(r.apply(image.array), geom.spacing, geom.origin, geom.direction_matrix), r


def undo_reorientation(
    image_or_array: Image | np.ndarray, r: Reorientation, original_geometry: Geometry
) -> Image | np.ndarray:
    """Bring an array (or image) in reoriented space back to ``original_geometry``."""
    array = image_or_array.array if isinstance(image_or_array, Image) else image_or_array
    out = r.invert(array)
    if tuple(out.shape[-3:]) != tuple(original_geometry.shape):
        raise ValueError(
            f"array of shape {array.shape} does not match the reoriented shape of "
            f"{original_geometry.shape}"
        )
    if isinstance(image_or_array, Image):
        return Image.from_geometry(out, original_geometry)
    return out
