"""Read and write images by file ending, keeping geometry.

NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) go through SimpleITK.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from voxseg.errors import VoxsegError
from voxseg.io.image import Image, from_sitk, to_sitk

VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def file_ending(path: str | os.PathLike[str]) -> str:
    """The ending that picks the format: ``.nii.gz`` counts as one ending."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def read_image(path: str | os.PathLike[str]) -> Image:
    """Read an image file with its geometry."""
    path = Path(path)
    if not path.exists():
        raise VoxsegError(f"{path}: file not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VoxsegError(f"{path}: cannot read image ({_first_line(exc)})") from exc
    return from_sitk(img)


def write_image(image: Image, path: str | os.PathLike[str], compress: bool = True) -> Path:
    """Write ``image`` to ``path`` (format from the ending), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = file_ending(path)
    tmp = path.with_name(f".{path.stem}.tmp{ending}")
    arr = image.array
    if arr.dtype == np.bool_:
        image = image.with_array(arr.astype(np.uint8))
    try:
        sitk.WriteImage(to_sitk(image), str(tmp), useCompression=compress)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__
