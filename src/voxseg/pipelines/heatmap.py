"""Heatmap localisation: a stage trained with the ``heatmap`` loss
(:mod:`voxseg.losses.heatmap`) predicts "heatmap > 0.5"; the box of that mask, in physical
coordinates, is the localisation."""

from __future__ import annotations

import numpy as np

_CUBE = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]


def physical_box(box: list[tuple[int, int]], geometry) -> tuple[np.ndarray, np.ndarray]:
    """LPS corners (min, max) of the voxel box's outer edges on ``geometry``."""
    lo = np.array([a for a, _ in box], float) - 0.5
    hi = np.array([b for _, b in box], float) - 0.5
    corners = np.array([[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]] for i, j, k in _CUBE])
    points = geometry.index_to_physical(corners)
    return points.min(0), points.max(0)
