"""Centerline metrics of a predicted vessel mask against a reference centerline.

* centerline overlap: the share of the reference centerline's length that lies inside the
  prediction (SeqSeg's metric; a trunk shared by several VMTK polylines counts once; only
  the part of the reference inside the image grid counts);
* centerline distance: the mean distance (mm) from the reference centerline to the
  centerline extracted from the prediction (:func:`voxseg.vessels.extract_centerline`);
* distal branch recall: the share of the reference length beyond the second bifurcation
  from the inlet that lies inside the prediction (where thin branches are lost).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from voxseg.io import Image, PolyData
from voxseg.vessels.centerline import (
    Centerline,
    extract_centerline,
    polyline_segments,
    resample_segments,
)


def _samples_in_grid(pred: Image, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points every quarter voxel along the segments ``a → b`` with their lengths, inside
    the grid (a centerline may run on beyond the image; that part cannot be predicted)."""
    step = 0.25 * float(min(pred.spacing))
    points, weights = resample_segments(a, b, step)
    idx = pred.geometry.physical_to_index(points)
    inside = np.all((idx >= -0.5) & (idx <= np.asarray(pred.shape) - 0.5), axis=1)
    return points[inside], weights[inside]


def _reference_samples(pred: Image, centerline: PolyData) -> tuple[np.ndarray, np.ndarray]:
    return _samples_in_grid(pred, *polyline_segments(centerline))


def _share_inside(pred: Image, points: np.ndarray, weights: np.ndarray) -> float:
    """Length-weighted share of ``points`` in a foreground voxel (nearest voxel)."""
    if weights.sum() == 0:
        return float("nan")
    idx = pred.geometry.physical_to_index(points)
    inside = ndimage.map_coordinates(
        _binary(pred).astype(np.uint8), idx.T, order=0, mode="constant", cval=0
    ).astype(bool)
    return float(weights[inside].sum() / weights.sum())


def _binary(pred: Image) -> np.ndarray:
    arr = pred.array[0] if pred.array.ndim == 4 else pred.array
    return np.asarray(arr) > 0


def centerline_overlap(pred: Image, centerline: PolyData) -> float:
    """Share of the reference centerline length inside the prediction (nearest voxel)."""
    return _share_inside(pred, *_reference_samples(pred, centerline))


def branch_depths(centerline: Centerline) -> dict[int, int]:
    """Bifurcations between each branch and its tree's inlet: a root 0, its children 1, …"""
    by_id = {b.id: b for b in centerline.branches}
    depths: dict[int, int] = {}
    for b in centerline.branches:
        depth, node = 0, b
        while node.parent >= 0:
            node = by_id[node.parent]
            depth += 1
        depths[b.id] = depth
    return depths


def distal_segments(centerline: Centerline, after: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Segments ``(a, b)`` of the branches beyond the ``after``-th bifurcation from the
    inlet (depth ≥ ``after`` in :func:`branch_depths`)."""
    depths = branch_depths(centerline)
    parts = [b.points for b in centerline.branches if depths[b.id] >= after and len(b.points) > 1]
    if not parts:
        return np.zeros((0, 3)), np.zeros((0, 3))
    return np.concatenate([p[:-1] for p in parts]), np.concatenate([p[1:] for p in parts])


def distal_recall(pred: Image, centerline: Centerline, after: int = 2) -> dict[str, float]:
    """Distal branch recall: the share of the reference centerline length beyond the
    ``after``-th bifurcation from the inlet (the branches of :func:`distal_segments`) that
    lies inside the prediction (nearest voxel, the part inside the grid), and that length
    (mm). ``nan`` when the tree has no such branch."""
    points, weights = _samples_in_grid(pred, *distal_segments(centerline, after))
    return {"distal_recall": _share_inside(pred, points, weights),
            "distal_length_mm": float(weights.sum())}  # fmt: skip


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
