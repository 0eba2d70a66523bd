"""Sliding-window starts and the Gaussian importance map against nnU-Net's definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from voxseg.spatial import gaussian_importance_map, sliding_window_starts


def test_nnunet_examples():
    # the example in nnU-Net's compute_steps_for_sliding_window comment
    assert sliding_window_starts((110,), (64,), 0.5) == [[0, 23, 46]]
    assert sliding_window_starts((64, 200, 129), (64, 128, 128), 0.5) == [
        [0],
        [0, 36, 72],
        [0, 1],
    ]
    assert sliding_window_starts((300,), (100,), 1.0) == [[0, 100, 200]]


@pytest.mark.parametrize("step", [0.25, 0.5, 0.7, 1.0])
@pytest.mark.parametrize(("n", "p"), [(64, 64), (65, 64), (300, 96), (511, 128), (20, 7)])
def test_windows_cover_and_overlap(n, p, step):
    (starts,) = sliding_window_starts((n,), (p,), step)
    assert starts[0] == 0 and starts[-1] == n - p
    assert all(0 < b - a <= p * step + 0.5 for a, b in zip(starts, starts[1:], strict=False))
    covered = np.zeros(n, dtype=bool)
    for s in starts:
        covered[s : s + p] = True
    assert covered.all()


def test_too_small_image_is_an_error():
    with pytest.raises(ValueError, match="pad it first"):
        sliding_window_starts((10, 50), (16, 16))


def nnunet_gaussian(patch, sigma_scale=1 / 8):
    tmp = np.zeros(patch)
    tmp[tuple(i // 2 for i in patch)] = 1
    g = gaussian_filter(tmp, [i * sigma_scale for i in patch], 0, mode="constant", cval=0)
    g = g / g.max()
    g[g == 0] = g[g != 0].min()
    return g


@pytest.mark.parametrize("patch", [(32, 48, 40), (5, 64, 63), (128, 128), (7,)])
def test_gaussian_matches_nnunet(patch):
    g = gaussian_importance_map(patch, dtype=torch.float64)
    ref = nnunet_gaussian(patch)
    np.testing.assert_allclose(g.numpy(), ref, rtol=1e-10, atol=1e-14)
    assert g.max() == 1 and g.min() > 0
    assert g[tuple(i // 2 for i in patch)] == 1


def test_gaussian_dtype_and_device():
    g = gaussian_importance_map((8, 8, 8), sigma_scale=0.25, dtype=torch.float16)
    assert g.dtype == torch.float16 and g.device.type == "cpu" and float(g.min()) > 0
