"""Nyúl–Udupa intensity standardisation: a piecewise-linear percentile-landmark mapping.

Nyúl & Udupa, "On standardizing the MR image intensity scale" (MRM 1999), as used by SCT's
deepseg lesion pipeline: every image's percentiles ``(1, 10, 20, …, 90, 99)`` are mapped
piecewise-linearly onto *standard landmarks* learned on the training set; beyond the first
and last percentile the end segments are extended linearly.

Learning (:func:`fit_nyul`): each training image's percentile vector is mapped linearly so
that its first and last percentile land on ``scale`` (default ``[0, 1]``); the standard
landmarks are the mean of these mapped vectors. A plan uses the mapping by naming the
scheme ``nyul`` with the learned parameters (``{"percentiles": [...], "landmarks": [...]}``)
in its channel normalisation.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from voxseg.errors import VoxsegError
from voxseg.normalization.schemes import NORMALIZATIONS, Normalizer

#: SCT's landmarks: the 1st, 10th, 20th … 90th and 99th percentiles.
DEFAULT_PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)


def _foreground(image: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The voxels statistics are taken from: the mask when it selects any, else nonzero ones."""
    if mask is not None and mask.shape == image.shape and mask.any():
        return image[mask]
    nonzero = image[image != 0]
    return nonzero if nonzero.size else image.ravel()


def image_landmarks(
    image: np.ndarray, percentiles: Sequence[float], mask: np.ndarray | None = None
) -> np.ndarray:
    """The image's intensities at ``percentiles`` (inside ``mask`` / nonzero voxels)."""
    return np.percentile(_foreground(np.asarray(image, np.float64), mask), percentiles)


def piecewise_linear(values: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map ``source[i] → target[i]`` linearly between landmarks, extending the end segments."""
    source = np.asarray(source, np.float64)
    target = np.asarray(target, np.float64)
    keep = np.concatenate([[True], np.diff(source) > 0])
    source, target = source[keep], target[keep]
    if source.size < 2:
        return np.full(values.shape, target[0], dtype=np.float32)
    out = np.interp(values, source, target)
    lo_slope = (target[1] - target[0]) / (source[1] - source[0])
    hi_slope = (target[-1] - target[-2]) / (source[-1] - source[-2])
    below, above = values < source[0], values > source[-1]
    out[below] = target[0] + (values[below] - source[0]) * lo_slope
    out[above] = target[-1] + (values[above] - source[-1]) * hi_slope
    return out.astype(np.float32)


@NORMALIZATIONS.register("nyul")
def nyul_normalization(
    landmarks: Sequence[float], percentiles: Sequence[float] = DEFAULT_PERCENTILES
) -> Normalizer:
    """Map each image's ``percentiles`` onto the learned standard ``landmarks``."""
    if len(landmarks) != len(percentiles):
        raise VoxsegError(
            f"nyul normalisation: {len(landmarks)} landmarks for {len(percentiles)} percentiles"
        )
    target = np.asarray(landmarks, np.float64)

    def apply(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        source = image_landmarks(image, percentiles, mask)
        return piecewise_linear(np.asarray(image, np.float64), source, target)

    return apply


def fit_nyul(
    images: Iterable[np.ndarray | tuple[np.ndarray, np.ndarray | None]],
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    scale: tuple[float, float] = (0.0, 1.0),
) -> dict[str, list[float]]:
    """Learn the standard landmarks from training images (arrays or ``(array, mask)`` pairs);
    returns the ``nyul`` scheme's parameters."""
    mapped = []
    lo, hi = scale
    for item in images:
        image, mask = item if isinstance(item, tuple) else (item, None)
        p = image_landmarks(image, percentiles, mask)
        span = p[-1] - p[0]
        if span <= 0:
            continue
        mapped.append(lo + (p - p[0]) * (hi - lo) / span)
    if not mapped:
        raise VoxsegError("nyul: no training image has a usable intensity range to learn from")
    return {
        "percentiles": [float(v) for v in percentiles],
        "landmarks": [float(v) for v in np.mean(mapped, axis=0)],
    }
