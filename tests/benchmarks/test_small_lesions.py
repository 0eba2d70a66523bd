"""benchmarks/small_lesions.py: the lesion visibility against its closed form on white noise."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_lesions():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import small_lesions
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return small_lesions


def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


@pytest.mark.parametrize("contrast", [0.0, 1.0])
def test_visibility_is_the_contrast_over_the_noise_of_the_two_means(small_lesions, contrast):
    """White noise of sd σ: mean(shell) − mean(lesion) has sd σ·√(1/n + 1/m) (n lesion, m
    shell voxels), so a lesion darker by ``contrast``·σ·√(1/n + 1/m) scores ``contrast`` on
    average, and each score scatters by about 1."""
    from scipy import ndimage

    shape, sigma = (30, 40, 40), 10.0
    lesion = _ball(shape, (15, 20, 20), 2)
    shell = ndimage.binary_dilation(lesion, np.ones((3, 3, 3)), 2) & ~lesion
    scale = sigma * np.sqrt(1 / lesion.sum() + 1 / shell.sum())
    host = ~lesion
    scores = []
    for seed in range(24):
        rng = np.random.default_rng(seed)
        image = rng.normal(50.0, sigma, shape).astype(np.float32)
        image[lesion] -= contrast * scale
        scores.append(small_lesions.visibility(image, host, lesion, rng))
    assert abs(np.mean(scores) - contrast) < 0.6  # sd of the mean of 24: ≈ 0.2
    assert 0.6 < np.std(scores) < 1.5
