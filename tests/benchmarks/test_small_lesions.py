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


def test_search_detections_counts_lesions_above_the_threshold_that_passes_n_false_positives(
    small_lesions,
):
    candidates = [(5.0, "a"), (4.5, "a"), (4.0, 0), (3.0, "b"), (2.5, 0), (2.2, "c")]
    assert [small_lesions.search_detections(candidates, n) for n in (0, 1, 2)] == [1, 2, 3]


def test_the_searching_observer_finds_a_dark_ball_in_noise_where_the_contrast_allows(
    small_lesions,
):
    """White noise of sd σ in a box-shaped liver, two balls of radius 3 mm (1 mm voxels):
    one darker by 6 × the sd of its shell − ball contrast, one not darker. The first is the
    best candidate of its case, its z about 6 (a little more: the best of 4 radii and of the
    places around it); the second scores no better than chance."""
    from scipy import ndimage

    shape, sigma = (40, 48, 48), 10.0
    host = np.zeros(shape, bool)
    host[4:-4, 4:-4, 4:-4] = True
    strong, plain = _ball(shape, (20, 16, 16), 3), _ball(shape, (20, 32, 32), 3)
    lesions = strong.astype(np.int32) + 2 * plain
    shell = ndimage.binary_dilation(strong, np.ones((3, 3, 3)), 2) & ~strong
    scale = sigma * np.sqrt(1 / strong.sum() + 1 / shell.sum())
    image = np.random.default_rng(0).normal(50.0, sigma, shape)
    image[strong] -= 6 * scale
    candidates = small_lesions.search_candidates(image, host, lesions, (1.0, 1.0, 1.0))
    z, key = max(candidates)
    assert key == 1 and 5 < z < 9.5
    assert small_lesions.search_detections(candidates, 0) == 1
    plain_z = max((z for z, k in candidates if k == 2), default=0.0)
    assert plain_z < 4
