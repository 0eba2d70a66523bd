"""Image and mesh I/O that keeps geometry (see :mod:`voxseg.io.image` for the axis order)."""

from voxseg.io.formats import file_ending, read_image, write_image
from voxseg.io.image import PSEUDO_3D_SPACING, Geometry, Image, from_sitk, to_sitk

__all__ = [
    "PSEUDO_3D_SPACING",
    "Geometry",
    "Image",
    "file_ending",
    "from_sitk",
    "read_image",
    "to_sitk",
    "write_image",
]
