"""Geometry on arrays: resampling, orientation, cropping and padding, sliding-window tiling."""

from voxseg.spatial.crop import (
    bbox_of_mask,
    crop,
    crop_to_nonzero,
    nonzero_bbox,
    nonzero_mask,
    pad_to_shape,
    uncrop,
)
from voxseg.spatial.orientation import (
    Reorientation,
    code_to_direction,
    orientation_code,
    parse_code,
    reorient,
    reoriented_geometry,
    undo_reorientation,
)
from voxseg.spatial.resample import (
    compute_new_shape,
    get_separate_z_axis,
    resample_data,
    resample_image,
    resample_labels,
)
from voxseg.spatial.tiling import gaussian_importance_map, sliding_window_starts

__all__ = [
    "Reorientation",
    "bbox_of_mask",
    "code_to_direction",
    "compute_new_shape",
    "crop",
    "crop_to_nonzero",
    "gaussian_importance_map",
    "get_separate_z_axis",
    "nonzero_bbox",
    "nonzero_mask",
    "orientation_code",
    "pad_to_shape",
    "parse_code",
    "reorient",
    "reoriented_geometry",
    "resample_data",
    "resample_image",
    "resample_labels",
    "sliding_window_starts",
    "uncrop",
    "undo_reorientation",
]
