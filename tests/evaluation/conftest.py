"""Random smooth blobs for metric tests (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage


def make_blob(shape: tuple[int, ...], seed: int, threshold: float = 0.55) -> np.ndarray:
    """A few smooth random blobs: low-resolution noise, upsampled, smoothed, thresholded."""
    rng = np.random.default_rng(seed)
    coarse = rng.random(tuple(max(s // 6, 2) for s in shape))
    fine = ndimage.zoom(coarse, [s / c for s, c in zip(shape, coarse.shape, strict=True)], order=1)
    return ndimage.gaussian_filter(fine, 1.0) > threshold


@pytest.fixture
def blob():
    return make_blob
