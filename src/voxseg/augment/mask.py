"""ovseg's cascade mask augmentation of the previous stage's prediction channels.

Registered as an augmentation (an intensity-stage transform of ``voxseg.augment``) that
acts only on ``channels``: per sample and channel, with probability ``p_morph`` a random
dilation or erosion by 1…``max_radius`` voxels (a cube structuring element, as a max pool),
and with probability ``p_remove`` each connected component is removed with probability
``p_component``. The channel is re-binarised (> 0.5) first, so intensity transforms that ran
before it do not leak into the mask. Put it last in ``intensity_order``.
"""

from __future__ import annotations

import cc3d
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from voxseg.augment._registry import AUGMENTATIONS

#: The registered name of the augmentation.
MASK_AUGMENTATION = "previous_mask"


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, device=generator.device).cpu())


def morph(mask: Tensor, radius: int, dilate: bool) -> Tensor:
    """Binary dilation (or erosion) of ``mask [*spatial]`` by a cube of half-width ``radius``."""
    x = mask.float()[None, None]
    k = 2 * radius + 1
    pool = F.max_pool3d if mask.ndim == 3 else F.max_pool2d
    if dilate:
        out = pool(x, k, stride=1, padding=radius)
    else:
        out = 1.0 - pool(1.0 - x, k, stride=1, padding=radius)
    return out[0, 0]


def remove_components(mask: Tensor, generator: torch.Generator, p: float) -> Tensor:
    """Drop each connected component (26-connectivity) of ``mask`` with probability ``p``."""
    labels = cc3d.connected_components(mask.cpu().numpy().astype(np.uint8), connectivity=26)
    n = int(labels.max())
    if n == 0:
        return mask
    draws = torch.rand(n, generator=generator, device=generator.device).cpu().numpy()
    keep = np.concatenate([[False], draws >= p])
    return torch.from_numpy(keep[labels]).to(mask.device, mask.dtype)


@AUGMENTATIONS.register("previous_mask")
def previous_mask_augmentation(
    *,
    spatial_dims: int = 3,
    dummy_2d: bool = False,
    channels: list[int] | None = None,
    p_morph: float = 0.4,
    max_radius: int = 3,
    p_remove: float = 0.2,
    p_component: float = 0.5,
):
    """The transform ``(image [b, c, *sp], generator) -> image`` for ``channels``."""
    chans = list(channels or [])

    def apply(image: Tensor, generator: torch.Generator) -> Tensor:
        for b in range(image.shape[0]):
            for c in chans:
                mask = image[b, c] > 0.5
                if _uniform(generator) < p_morph:
                    radius = 1 + int(_uniform(generator) * max_radius) % max_radius
                    mask = morph(mask, radius, dilate=_uniform(generator) < 0.5) > 0.5
                if _uniform(generator) < p_remove:
                    mask = remove_components(mask, generator, p_component)
                image[b, c] = mask.to(image.dtype)
        return image

    return apply
