"""Centerline metrics of a predicted vessel mask against a reference centerline.

* centerline overlap: the share of the reference centerline's length that lies inside the
  prediction (SeqSeg's metric; a trunk shared by several VMTK polylines counts once; only
  the part of the reference inside the image grid counts);
* centerline distance: the mean distance (mm) from the reference centerline to the
  centerline extracted from the prediction (:func:`voxseg.vessels.extract_centerline`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from voxseg.io import Image, PolyData
from voxseg.vessels.centerline import (
    extract_centerline,
    polyline_segments,
    resample_segments,
)


def _reference_samples(pred: Image, centerline: PolyData) -> tuple[np.ndarray, np.ndarray]:
    """Points every quarter voxel along the reference with their lengths, inside the grid
    (a centerline may run on beyond the image; that part cannot be predicted)."""
    step = 0.25 * float(min(pred.spacing))
    points, weights = resample_segments(*polyline_segments(centerline), step)
    idx = pred.geometry.physical_to_index(points)
    inside = np.all((idx >= -0.5) & (idx <= np.asarray(pred.shape) - 0.5), axis=1)
    return points[inside], weights[inside]


def _binary(pred: Image) -> np.ndarray:
    arr = pred.array[0] if pred.array.ndim == 4 else pred.array
    return np.asarray(arr) > 0


def centerline_overlap(pred: Image, centerline: PolyData) -> float:
    """Share of the reference centerline length inside the prediction (nearest voxel)."""
    points, weights = _reference_samples(pred, centerline)
    if weights.sum() == 0:
        return float("nan")
    idx = pred.geometry.physical_to_index(points)
    inside = ndimage.map_coordinates(
        _binary(pred).astype(np.uint8), idx.T, order=0, mode="constant", cval=0
    ).astype(bool)
    return float(weights[inside].sum() / weights.sum())


def centerline_distance(
    pred: Image, centerline: PolyData, predicted: PolyData | None = None
) -> float:
    """Mean distance (mm, length-weighted) from the reference centerline to the predicted
    centerline (extracted from ``pred`` unless given); ``inf`` for an empty prediction."""
    points, weights = _reference_samples(pred, centerline)
    if weights.sum() == 0:
        return float("nan")
    if predicted is None:
        predicted = extract_centerline(pred).to_polydata()
    ref_pts, _ = resample_segments(*polyline_segments(predicted), 0.25 * min(pred.spacing))
    if len(ref_pts) == 0:
        return float("inf")
    d, _ = cKDTree(ref_pts).query(points)
    return float(np.sum(d * weights) / weights.sum())


def centerline_metrics(pred: Image, centerline: PolyData) -> dict[str, float]:
    """``centerline_overlap``, ``centerline_distance_mm`` and the reference length (mm)."""
    _, weights = _reference_samples(pred, centerline)
    return {
        "centerline_overlap": centerline_overlap(pred, centerline),
        "centerline_distance_mm": centerline_distance(pred, centerline),
        "centerline_length_mm": float(weights.sum()),
    }
