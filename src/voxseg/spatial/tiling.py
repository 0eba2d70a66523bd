"""Sliding-window tiling: window starts and the Gaussian importance map (nnU-Net's rules)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def sliding_window_starts(
    image_shape: Sequence[int], patch_size: Sequence[int], step_fraction: float = 0.5
) -> list[list[int]]:
    """Window start indices per axis (nnU-Net v2's ``compute_steps_for_sliding_window``).

    Per axis: ``ceil((image - patch) / (patch * step_fraction)) + 1`` windows, spread evenly
    from 0 to ``image - patch`` and rounded, so windows overlap by at least
    ``1 - step_fraction`` and the last one ends at the border. Pad images smaller than the
    patch first (:func:`voxseg.spatial.pad_to_shape`).
    """
    if len(image_shape) != len(patch_size):
        raise ValueError(f"image shape {tuple(image_shape)} and patch {tuple(patch_size)} differ")
    if not 0 < step_fraction <= 1:
        raise ValueError(f"step_fraction must be in (0, 1]; got {step_fraction}")
    starts = []
    for n, p in zip(image_shape, patch_size, strict=True):
        if n < p:
            raise ValueError(
                f"image shape {tuple(image_shape)} is smaller than the patch "
                f"{tuple(patch_size)}; pad it first (voxseg.spatial.pad_to_shape)"
            )
        steps = math.ceil((n - p) / (p * step_fraction)) + 1
        width = (n - p) / (steps - 1) if steps > 1 else 0.0
        starts.append([int(round(width * i)) for i in range(steps)])
    return starts


def gaussian_importance_map(
    patch_size: Sequence[int],
    sigma_scale: float = 1 / 8,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """nnU-Net's window weight: a Gaussian (sigma = patch * scale) centred at ``patch // 2``.

    Separable product of 1D Gaussians truncated at 4 sigma as ``scipy.ndimage.gaussian_filter``
    of a delta is, scaled to maximum 1; zeros (beyond the truncation) are raised to the
    smallest nonzero value so no voxel gets weight 0.
    """
    out = torch.ones((), dtype=torch.float64)
    for p in patch_size:
        sigma = p * sigma_scale
        d = np.arange(p, dtype=float) - p // 2
        g = np.exp(-0.5 * (d / sigma) ** 2) if sigma > 0 else (d == 0).astype(float)
        g[np.abs(d) > int(4.0 * sigma + 0.5)] = 0.0
        out = out[..., None] * torch.from_numpy(g)
    out = (out / out.max()).to(dtype=dtype, device=device)
    out[out == 0] = out[out != 0].min()
    return out
