"""The in-memory image: a NumPy array plus the geometry that places it in the patient.

Axis order, used everywhere in voxseg:

* ``array`` is indexed ``[z, y, x]`` (``[c, z, y, x]`` with channels), the order
  SimpleITK's ``GetArrayFromImage`` returns. A 2D image is pseudo-3D with ``z`` of size 1.
* ``spacing`` is in millimetres, in array axis order ``(z, y, x)``.
* ``origin`` is the physical position (LPS, millimetres, ``(x, y, z)`` as in ITK and DICOM)
  of the centre of voxel ``[0, 0, 0]``.
* ``direction`` is a 3×3 matrix whose column ``a`` is the unit LPS vector along array axis
  ``a``. The physical point of index ``i = (z, y, x)`` is
  ``origin + direction @ (spacing * i)``.

Converting to ITK reverses the axis order of ``spacing`` and of the columns of
``direction``; :func:`to_sitk` and :func:`from_sitk` do that and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import SimpleITK as sitk

#: Spacing of the singleton axis of a pseudo-3D 2D image (the nnU-Net 2D convention:
#: larger than any in-plane spacing, so planning never pools or resamples along it).
PSEUDO_3D_SPACING = 999.0


def identity_direction() -> np.ndarray:
    """ITK's identity direction in voxseg's convention: array axis z → LPS z, y → y, x → x
    (the columns of the 3×3 identity in reverse order)."""
    return np.eye(3)[:, ::-1].copy()


@dataclass(frozen=True)
class Geometry:
    """Shape and physical placement of a spatial grid (see the module docstring for axes)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[tuple[float, ...], ...] = ((0, 0, 1.0), (0, 1.0, 0), (1.0, 0, 0))

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction", tuple(tuple(float(v) for v in row) for row in d))

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.array(self.direction, dtype=float)

    @property
    def affine(self) -> np.ndarray:
        """4×4 matrix taking a homogeneous array index ``(z, y, x, 1)`` to LPS millimetres."""
        a = np.eye(4)
        a[:3, :3] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        a[:3, 3] = self.origin
        return a

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """Array indices ``(..., 3)`` in ``(z, y, x)`` order → LPS points ``(..., 3)``."""
        index = np.asarray(index, dtype=float)
        return index @ (self.direction_matrix * np.asarray(self.spacing)).T + np.asarray(
            self.origin
        )

    def physical_to_index(self, points: np.ndarray) -> np.ndarray:
        """LPS points ``(..., 3)`` → continuous array indices ``(..., 3)`` in ``(z, y, x)``."""
        points = np.asarray(points, dtype=float) - np.asarray(self.origin)
        inv = np.linalg.inv(self.direction_matrix * np.asarray(self.spacing))
        return points @ inv.T

    def is_close(self, other: Geometry, atol: float = 1e-4) -> bool:
        """Same shape, and spacing, origin and direction within ``atol``."""
        return self.differences(other, atol) == []

    def differences(self, other: Geometry, atol: float = 1e-4) -> list[str]:
        """Human-readable list of what differs from ``other`` (empty when compatible)."""
        out = []
        if self.shape != other.shape:
            out.append(f"shape {other.shape} differs from {self.shape}")
        if not np.allclose(self.spacing, other.spacing, atol=atol, rtol=atol):
            out.append(f"spacing {_fmt(other.spacing)} differs from {_fmt(self.spacing)}")
        if not np.allclose(self.origin, other.origin, atol=max(atol, 1e-3), rtol=atol):
            out.append(f"origin {_fmt(other.origin)} differs from {_fmt(self.origin)}")
        if not np.allclose(self.direction, other.direction, atol=atol):
            out.append("direction differs")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": [list(r) for r in self.direction],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Geometry:
        return cls(
            shape=tuple(d["shape"]),
            spacing=tuple(d["spacing"]),
            origin=tuple(d["origin"]),
            direction=tuple(tuple(r) for r in d["direction"]),
        )


def _fmt(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


@dataclass
class Image:
    """An array with its geometry; ``array`` is ``[z, y, x]`` or ``[c, z, y, x]``."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: identity_direction())

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4):
            raise ValueError(
                f"Image arrays are [z, y, x] or [c, z, y, x]; got shape {self.array.shape}"
            )
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(s) for s in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Spatial shape ``(z, y, x)``."""
        return tuple(int(s) for s in self.array.shape[-3:])

    @property
    def num_channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[0])

    @property
    def is_2d(self) -> bool:
        return self.shape[0] == 1

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.shape, self.spacing, self.origin, self.direction)

    def with_array(self, array: np.ndarray) -> Image:
        """A new image with the same geometry and another array of the same spatial shape."""
        if tuple(array.shape[-3:]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match image shape {self.shape}")
        return Image(array, self.spacing, self.origin, self.direction.copy())

    @classmethod
    def from_geometry(cls, array: np.ndarray, geometry: Geometry) -> Image:
        if tuple(array.shape[-3:]) != geometry.shape:
            raise ValueError(f"array shape {array.shape} does not match {geometry.shape}")
        return cls(array, geometry.spacing, geometry.origin, geometry.direction_matrix)

    def channel(self, c: int) -> Image:
        if self.array.ndim == 3:
            if c != 0:
                raise IndexError(f"single-channel image has no channel {c}")
            return self
        return self.with_array(self.array[c])


def to_sitk(image: Image) -> sitk.Image:
    """Convert to a SimpleITK image (multi-channel → vector pixels)."""
    arr = image.array
    if arr.ndim == 4:
        out = sitk.GetImageFromArray(np.moveaxis(arr, 0, -1), isVector=True)
    else:
        out = sitk.GetImageFromArray(arr)
    out.SetSpacing(tuple(reversed(image.spacing)))
    out.SetOrigin(image.origin)
    out.SetDirection(tuple(image.direction[:, ::-1].flatten()))
    return out


class ItkHeader(NamedTuple):
    """ITK's header values of an image, in ITK's axis order ``(x, y, z[, t])``."""

    dim: int
    size: Sequence[int]
    spacing: Sequence[float]
    origin: Sequence[float]
    direction: Sequence[float]
    components: int = 1

    @classmethod
    def of(cls, source: sitk.Image | sitk.ImageFileReader) -> ItkHeader:
        """The header of a SimpleITK image, or of a reader after ``ReadImageInformation``."""
        if isinstance(source, sitk.Image):
            components = source.GetNumberOfComponentsPerPixel()
        else:
            components = source.GetNumberOfComponents()
        return cls(
            source.GetDimension(),
            source.GetSize(),
            source.GetSpacing(),
            source.GetOrigin(),
            source.GetDirection(),
            components,
        )


def sitk_geometry(header: ItkHeader) -> tuple[Geometry, int]:
    """``(geometry, channels)`` of a SimpleITK image or image header: the axis rules, once.

    ITK's ``(x, y, z)`` becomes ``[z, y, x]``; a 2D image is pseudo-3D with a singleton ``z``
    of spacing :data:`PSEUDO_3D_SPACING`; a 4th axis or vector pixels are channels.
    """
    dim = header.dim
    size, spacing, origin = list(header.size), list(header.spacing), list(header.origin)
    matrix = np.asarray(header.direction, dtype=float).reshape(dim, dim)
    channels = int(header.components)
    if dim == 2:
        size, spacing, origin = [*size, 1], [*spacing, PSEUDO_3D_SPACING], [*origin, 0.0]
        d3 = np.eye(3)
        d3[:2, :2] = matrix
        matrix = d3
    elif dim == 4:
        if channels > 1:
            raise ValueError("4D images with vector pixels are not supported")
        channels = int(size[3])
        size, spacing, origin, matrix = size[:3], spacing[:3], origin[:3], matrix[:3, :3]
    elif dim != 3:
        raise ValueError(f"unsupported image dimension {dim}")
    geometry = Geometry(
        tuple(reversed(size)), tuple(reversed(spacing)), tuple(origin), matrix[:, ::-1]
    )
    return geometry, channels


class _SitkPixels:
    """Keeps a SimpleITK image alive while a read-only NumPy array views its pixel buffer
    (``sitk.GetArrayViewFromImage`` alone does not: its view dangles once the image goes)."""

    def __init__(self, img: sitk.Image) -> None:
        self.image = img
        self.__array_interface__ = sitk.GetArrayViewFromImage(img).__array_interface__


def from_sitk(img: sitk.Image, copy: bool = True) -> Image:
    """Convert a 2D, 3D or 4D SimpleITK image (vector pixels and a 4th axis become channels;
    the axis rules are :func:`sitk_geometry`'s).

    ``copy=False`` returns a read-only array over SimpleITK's own buffer instead of a copy of
    it: no second allocation (for a 300×512×512 CT in a process that reads many, the copy's
    fresh pages cost about as much CPU as a third of the decompression)."""
    arr = sitk.GetArrayFromImage(img) if copy else np.asarray(_SitkPixels(img))
    return from_itk_array(arr, ItkHeader.of(img))


def from_itk_array(arr: np.ndarray, header: ItkHeader) -> Image:
    """An :class:`Image` from an array in ITK's memory order (``GetArrayFromImage``'s
    ``[(t,) (z,) y, x (, component)]``) and ITK's header values (:func:`sitk_geometry`)."""
    geometry, _ = sitk_geometry(header)
    if header.components > 1:
        arr = np.moveaxis(arr, -1, 0)
    if header.dim == 2:
        arr = arr[None] if arr.ndim == 2 else arr[:, None]
    return Image.from_geometry(np.ascontiguousarray(arr), geometry)
