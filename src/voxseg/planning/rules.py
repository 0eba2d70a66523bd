"""nnU-Net v2's planning rules as small pure functions (spacing, pooling, patch, batch).

Each function returns its result plus, where useful, a sentence explaining the decision,
which the planner copies into ``plans.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: An axis is anisotropic when its median spacing is more than this times the others'.
ANISOTROPY_THRESHOLD = 3.0
#: Feature maps are never pooled below this edge length.
MIN_FEATURE_MAP_EDGE = 4


def target_spacing(
    spacings: np.ndarray, shapes: np.ndarray, threshold: float = ANISOTROPY_THRESHOLD
) -> tuple[list[float], str]:
    """Per-axis median spacing; for a thin, coarse (anisotropic) axis the 10th percentile.

    nnU-Net v2: let ``w`` be the axis with the largest median spacing. If its median spacing
    is > ``threshold`` × the largest other one *and* the median image has fewer than
    1/``threshold`` as many voxels along ``w`` as along the smallest other axis, ``w`` gets
    the 10th percentile of its spacings (but not finer than the other axes) so that thin,
    coarse cases are not over-resampled. ``shapes`` are the shapes after crop-to-nonzero.
    """
    spacings = np.asarray(spacings, dtype=float)
    shapes = np.asarray(shapes, dtype=float)
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [a for a in range(len(target)) if a != worst]
    max_other_spacing = float(max(target[a] for a in others))
    aniso_spacing = target[worst] > threshold * max_other_spacing
    aniso_voxels = median_shape[worst] * threshold < min(median_shape[a] for a in others)
    rule = "per-axis median of the case spacings"
    if aniso_spacing and aniso_voxels:
        p10 = float(np.percentile(spacings[:, worst], 10))
        if p10 < max_other_spacing:
            p10 = max(max_other_spacing, p10) + 1e-5
        target[worst] = p10
        rule += (
            f"; axis {worst} is anisotropic (median spacing > {threshold:g}x the others and "
            f"< 1/{threshold:g} of their voxels), so it takes the 10th percentile of its "
            f"spacings ({p10:.4g})"
        )
    return [float(t) for t in target], rule


@dataclass
class PoolingPlan:
    """Pooling and convolution layout for a patch (nnU-Net's ``get_pool_and_conv_props``)."""

    num_pool_per_axis: list[int]
    strides: list[list[int]]
    kernel_sizes: list[list[int]]
    patch_size: list[int]
    divisible_by: list[int]


def pooling_plan(
    spacing: list[float],
    patch_size: list[int],
    min_edge: int = MIN_FEATURE_MAP_EDGE,
    max_pool: int = 999,
) -> PoolingPlan:
    """Pool every axis whose current spacing is within 2× of the finest pooled-able axis
    while its feature map stays ≥ 2·``min_edge`` (a lone axis needs ≥ 3·``min_edge``);
    kernels become 3 on an axis once its spacing is within 2× of the finest, else 1; the
    bottleneck always has 3-kernels. The patch is rounded up to a multiple of the total
    downsampling."""
    dim = len(spacing)
    current_spacing = [float(s) for s in spacing]
    current_size = [float(p) for p in patch_size]
    strides = [[1] * dim]
    kernels: list[list[int]] = []
    num_pool = [0] * dim
    kernel = [1] * dim
    while True:
        valid = [a for a in range(dim) if current_size[a] >= 2 * min_edge]
        if not valid:
            break
        finest = min(current_spacing[a] for a in valid)
        valid = [a for a in valid if current_spacing[a] / finest < 2 and num_pool[a] < max_pool]
        if len(valid) == 1 and current_size[valid[0]] < 3 * min_edge:
            break
        if not valid:
            break
        overall_finest = min(current_spacing)
        for a in range(dim):
            if kernel[a] != 3 and current_spacing[a] / overall_finest < 2:
                kernel[a] = 3
        stride = [1] * dim
        for a in valid:
            stride[a] = 2
            num_pool[a] += 1
            current_spacing[a] *= 2
            current_size[a] = math.ceil(current_size[a] / 2)
        strides.append(stride)
        kernels.append(list(kernel))
    kernels.append([3] * dim)
    divisible = [2**n for n in num_pool]
    patch = [int(math.ceil(p / d) * d) for p, d in zip(patch_size, divisible, strict=True)]
    return PoolingPlan(num_pool, strides, kernels, patch, divisible)


def initial_patch_size(spacing: list[float], median_shape: list[float], voxels: float) -> list[int]:
    """Aspect 1/spacing with ``voxels`` voxels (nnU-Net: 256³ in 3D, 2048² in 2D), clipped to
    the median shape."""
    inv = 1.0 / np.asarray(spacing, dtype=float)
    patch = inv * (voxels / np.prod(inv)) ** (1.0 / len(spacing))
    return [int(min(round(p), m)) for p, m in zip(patch, median_shape, strict=True)]


def features_per_stage(n_stages: int, base: int, cap: int) -> list[int]:
    """``base · 2^i`` capped at ``cap`` (nnU-Net: 32 and 320 in 3D / 512 in 2D)."""
    return [min(base * 2**i, cap) for i in range(n_stages)]
