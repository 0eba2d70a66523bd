"""Heatmap localisation as a model type the trainer trains: a loss on a Gaussian target.

The spine repo regresses a heatmap (MSE) on whole images resized to 64×64×128 and takes a
bounding box from it. Here the target is made on the fly from the (augmented) label patch:
the binary foreground smoothed by a Gaussian of ``sigma`` voxels and scaled to a maximum of
1 per sample. The prediction is the softmax probability of class 1 of a two-output network —
for two classes that is ``sigmoid(l1 - l0)`` — so the standard predictor's argmax is exactly
"heatmap > 0.5", and the box of that mask is the localisation.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from voxseg.losses import register_loss

#: The loss by a path that resolves in any process (no import of this package needed).
HEATMAP_LOSS = "voxseg.pipelines.heatmap:HeatmapMSELoss"
_CUBE = [(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)]


def gaussian_kernel(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """Normalised 1D Gaussian of radius ``round(truncate * sigma)`` (scipy's ``gaussian_filter``
    kernel)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def heatmap_target(mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """``mask [b, 1, *spatial]`` → Gaussian-smoothed mask scaled to max 1 per sample.

    Separable convolution with mirrored borders (scipy's ``gaussian_filter(mode="mirror")``).
    """
    x = mask.float()
    dims = x.ndim - 2
    k = gaussian_kernel(sigma).to(x.device)
    r = (k.numel() - 1) // 2
    for d in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + d] = k.numel()
        pad = [0, 0] * dims
        pad[2 * (dims - 1 - d)] = r
        pad[2 * (dims - 1 - d) + 1] = r
        mode = "reflect" if x.shape[2 + d] > r else "replicate"
        x = (
            F.conv3d(F.pad(x, pad, mode=mode), k.view(shape))
            if dims == 3
            else F.conv2d(F.pad(x, pad, mode=mode), k.view(shape))
        )
    peak = x.flatten(1).amax(1).clamp(min=1e-8).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(peak > 1e-6, x / peak, torch.zeros_like(x))


@register_loss("heatmap_mse")
class HeatmapMSELoss(nn.Module):
    """MSE between ``softmax(logits)[:, 1]`` and :func:`heatmap_target` of the labels."""

    def __init__(
        self,
        *,
        num_classes: int,
        region_based: bool = False,
        ignore_label: int | None = None,
        sigma: float = 2.0,
    ) -> None:
        super().__init__()
        if num_classes != 2 or region_based:
            raise ValueError("heatmap_mse needs a two-class (background, foreground) model")
        self.sigma = float(sigma)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        heat = heatmap_target(target > 0, self.sigma)
        prob = torch.softmax(logits.float(), dim=1)[:, 1:2]
        return F.mse_loss(prob, heat)


def physical_box(box: list[tuple[int, int]], geometry) -> tuple[np.ndarray, np.ndarray]:
    """LPS corners (min, max) of the voxel box's outer edges on ``geometry``."""
    lo = np.array([a for a, _ in box], float) - 0.5
    hi = np.array([b for _, b in box], float) - 0.5
    corners = np.array([[(lo, hi)[i][0], (lo, hi)[j][1], (lo, hi)[k][2]] for i, j, k in _CUBE])
    points = geometry.index_to_physical(corners)
    return points.min(0), points.max(0)


__all__ = [
    "HEATMAP_LOSS",
    "HeatmapMSELoss",
    "gaussian_kernel",
    "heatmap_target",
    "physical_box",
]
