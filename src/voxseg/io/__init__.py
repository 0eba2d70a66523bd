"""Image and mesh I/O that keeps geometry (see :mod:`voxseg.io.image` for the axis order)."""

from voxseg.io.formats import (
    file_ending,
    read_image,
    read_image_on_disk,
    write_image,
    write_image_region,
)
from voxseg.io.image import (
    PSEUDO_3D_SPACING,
    Geometry,
    Image,
    from_sitk,
    identity_direction,
    to_sitk,
)
from voxseg.io.nifti import max_projection, release_pages

_VTP_NAMES = ("PolyData", "mask_to_surface", "read_vtp", "write_stl", "write_vtp")


def __getattr__(name: str):
    """VTK takes seconds to import: load :mod:`voxseg.io.vtp` only when a mesh is used."""
    if name in _VTP_NAMES:
        from voxseg.io import vtp

        return getattr(vtp, name)
    raise AttributeError(f"module 'voxseg.io' has no attribute {name!r}")


__all__ = [
    "PSEUDO_3D_SPACING",
    "Geometry",
    "Image",
    "PolyData",
    "file_ending",
    "from_sitk",
    "identity_direction",
    "mask_to_surface",
    "max_projection",
    "read_image",
    "read_image_on_disk",
    "read_vtp",
    "release_pages",
    "to_sitk",
    "write_image",
    "write_image_region",
    "write_stl",
    "write_vtp",
]
