"""Geometry on arrays: resampling, orientation, cropping and padding, sliding-window tiling."""

import importlib

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

#: Names of the modules that need torch, loaded on first use (torch takes about 2 CPU s to
#: import: a process that only crops or reorients, such as a report's case writer, skips it).
_TORCH_NAMES = {
    "compute_new_shape": "resample",
    "get_separate_z_axis": "resample",
    "resample_data": "resample",
    "resample_image": "resample",
    "resample_labels": "resample",
    "gaussian_importance_map": "tiling",
    "sliding_window_starts": "tiling",
}


def __getattr__(name: str):
    module = _TORCH_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'voxseg.spatial' has no attribute {name!r}")
    return getattr(importlib.import_module(f"voxseg.spatial.{module}"), name)


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
