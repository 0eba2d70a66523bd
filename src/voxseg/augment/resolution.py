"""Resolution family: simulate a coarser acquisition (down nearest, up linear).

Equal to ``interpolate(interpolate(x, round(n * zoom), "nearest-exact"), n, "linear")`` per
row (batchgeneratorsv2 ``SimulateLowResolutionTransform``), but every row has its own zoom
and all rows go at once: along each axis an output voxel is a two-tap blend of input voxels
whose indices and weights follow PyTorch's own index rules, gathered in one pass.
"""

from __future__ import annotations

import torch
from torch import Tensor

from voxseg.augment import _random as rnd
from voxseg.augment._registry import AUGMENTATIONS
from voxseg.augment._rows import RowTransform
from voxseg.augment.config import LowResolutionConfig


def down_up_taps(size: int, zoom: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: indices ``i0, i1`` and weight ``w`` with ``out = (1 - w) x[i0] + w x[i1]``."""
    device = zoom.device
    low = torch.round(size * zoom.double()).clamp_min(1).float()[:, None]
    dst = torch.arange(size, dtype=torch.float32, device=device)[None, :]
    # linear upsampling, align_corners=False: src = (dst + 0.5) * low / size - 0.5, >= 0
    src = ((low / size) * (dst + 0.5) - 0.5).clamp_min(0)
    j0 = torch.floor(src)
    j1 = torch.where(j0 < low - 1, j0 + 1, j0)
    weight = src - j0

    def nearest_exact(j: Tensor) -> Tensor:
        idx = torch.floor((j + 0.5) * (size / low))
        return idx.clamp_max(size - 1).long()

    return nearest_exact(j0), nearest_exact(j1), weight


@AUGMENTATIONS.register("low_resolution")
class LowResolution(RowTransform):
    """Down- and upsample chosen channels by a zoom from ``zoom`` (axis 0 kept in dummy 2D)."""

    config: LowResolutionConfig

    def __init__(
        self, config: LowResolutionConfig, *, spatial_dims: int, dummy_2d: bool = False
    ) -> None:
        super().__init__(config, spatial_dims=spatial_dims)
        self.axes = list(range(1 if dummy_2d and spatial_dims == 3 else 0, spatial_dims))

    def draw(self, b: int, c: int, generator: torch.Generator, device: torch.device) -> Tensor:
        width = 1 if self.config.synchronize_axes else self.dims
        return rnd.uniform((b, c, width), *self.config.zoom, generator, device)

    def apply(
        self, image: Tensor, mask: Tensor, rows: Tensor, zoom: Tensor, generator: torch.Generator
    ) -> Tensor:
        b, c = image.shape[:2]
        spatial = image.shape[2:]
        flat = image.view(b * c, *spatial)
        zoom = zoom.expand(b, c, self.dims).reshape(b * c, self.dims)[rows]
        x = flat[rows]
        for axis in self.axes:
            i0, i1, w = down_up_taps(spatial[axis], zoom[:, axis])
            view = [len(rows)] + [1] * self.dims
            view[1 + axis] = spatial[axis]
            i0, i1 = i0.view(view).expand(x.shape), i1.view(view).expand(x.shape)
            lo, hi = x.gather(1 + axis, i0), x.gather(1 + axis, i1)
            x = torch.lerp(lo, hi, w.view(view).to(x.dtype))
        flat[rows] = x
        return image
