"""The inverse of preprocessing: a prediction in preprocessed space → the original image grid.

Resample back to the cropped shape (labels: ``resample_labels``; probabilities: linear,
``resample_data(order=1)``) → uncrop (outside the box: background, i.e. label 0 or a
probability of 1 for class 0 and 0 for the others) → undo the reorientation. The result
has the input's shape and, with the returned :class:`Geometry`, overlays the input
exactly (``Image.from_geometry(array, geometry)``).
"""

from __future__ import annotations

import numpy as np

from voxseg.io.image import Geometry
from voxseg.preprocessing.store import CaseMeta


def restore_to_original(
    seg_or_probs: np.ndarray,
    meta: CaseMeta,
    *,
    is_probabilities: bool = False,
    device: str = "cpu",
) -> tuple[np.ndarray, Geometry]:
    """``(array in the original [z, y, x] / [c, z, y, x] grid, original geometry)``."""
    from voxseg.spatial.crop import uncrop
    from voxseg.spatial.orientation import Reorientation
    from voxseg.spatial.resample import resample_data, resample_labels

    array = np.asarray(seg_or_probs)
    cropped = tuple(meta.shape_after_crop)
    if is_probabilities:
        if array.ndim != 4:
            raise ValueError(f"probabilities must be [c, z, y, x]; got shape {array.shape}")
        probs = resample_data(
            array,
            cropped,
            order=1,
            separate_z_axis=meta.separate_z_axis,
            order_z=0,
            device=device,
        )
        full = uncrop(probs, meta.bbox, meta.shape_before_crop, fill=0.0)
        outside = np.ones(meta.shape_before_crop, dtype=bool)
        outside[tuple(slice(a, b) for a, b in meta.bbox)] = False
        full[0][outside] = 1.0
    else:
        if array.ndim == 4:
            if array.shape[0] != 1:
                raise ValueError(
                    f"a label map must be [z, y, x] or [1, z, y, x]; got {array.shape}"
                )
            array = array[0]
        seg = resample_labels(array, cropped, separate_z_axis=meta.separate_z_axis, device=device)
        full = uncrop(seg, meta.bbox, meta.shape_before_crop, fill=0)
    if meta.reorientation is not None:
        full = Reorientation.from_dict(meta.reorientation).invert(full)
    return full, Geometry.from_dict(meta.geometry)
