"""The shape every per-channel transform shares: choose ``(sample, channel)`` rows, draw
the transform's parameters, transform the chosen rows all at once."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from voxseg.augment import _random as rnd


def chosen_rows(mask: Tensor) -> Tensor:
    """Flat ``b * c`` indices of the true entries of a ``[b, c]`` mask."""
    return mask.flatten().nonzero().flatten()


class RowTransform:
    """Base of the intensity, noise and resolution transforms.

    A call draws the ``[b, c]`` row mask (a sample with ``config.p``, then each of its
    channels with ``config.p_per_channel``), then the transform's parameters
    (:meth:`draw`), always in that order so that a seed gives the same augmentation, and
    hands the chosen rows to :meth:`apply`; with no row chosen the image is returned as is.
    """

    def __init__(self, config: Any, *, spatial_dims: int, dummy_2d: bool = False):
        self.config = config
        self.dims = spatial_dims

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        cfg = self.config
        b, c = image.shape[:2]
        mask = rnd.row_mask(b, c, cfg.p, cfg.p_per_channel, generator, image.device)
        params = self.draw(b, c, generator, image.device)
        rows = chosen_rows(mask)
        if rows.numel() == 0:
            return image
        return self.apply(image, mask, rows, params, generator)

    def draw(self, b: int, c: int, generator: torch.Generator, device: torch.device) -> Any:
        """The random parameters of a ``[b, c, ...]`` batch (drawn for every row)."""
        raise NotImplementedError

    def apply(
        self, image: Tensor, mask: Tensor, rows: Tensor, params: Any, generator: torch.Generator
    ) -> Tensor:
        """Transform the chosen ``rows`` (flat ``b * c`` indices; ``mask`` as ``[b, c]``)."""
        raise NotImplementedError
