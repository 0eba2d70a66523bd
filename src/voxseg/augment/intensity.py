"""Intensity family: multiplicative brightness, contrast and (inverted) gamma.

Each works on the rows ``b * c`` chosen by its probabilities, all rows at once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from voxseg.augment import _random as rnd
from voxseg.augment._registry import AUGMENTATIONS
from voxseg.augment.config import BrightnessConfig, ContrastConfig, GammaConfig
from voxseg.augment.noise import chosen_rows

_EPS = 1e-7


def _per_row(values: Tensor, b: int, c: int) -> Tensor:
    return values.expand(b, c).reshape(b * c)


@AUGMENTATIONS.register("brightness")
class Brightness:
    """Multiply a channel by a factor from ``range``."""

    def __init__(self, config: BrightnessConfig, *, spatial_dims: int, dummy_2d: bool = False):
        self.config = config

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        cfg = self.config
        b, c = image.shape[:2]
        device = image.device
        mask = rnd.row_mask(b, c, cfg.p, cfg.p_per_channel, generator, device)
        shape = (b, 1 if cfg.synchronize_channels else c)
        factor = rnd.factor(shape, *cfg.range, cfg.sampling, generator, device).expand(b, c)
        if not bool(mask.any()):
            return image
        factor = torch.where(mask, factor, torch.ones_like(factor)).to(image.dtype)
        return image.mul_(factor.view(b, c, *([1] * (image.ndim - 2))))


@AUGMENTATIONS.register("contrast")
class Contrast:
    """``x -> (x - mean) * f + mean`` per channel, clipped to the old range if asked."""

    def __init__(self, config: ContrastConfig, *, spatial_dims: int, dummy_2d: bool = False):
        self.config = config

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        cfg = self.config
        b, c = image.shape[:2]
        device = image.device
        mask = rnd.row_mask(b, c, cfg.p, cfg.p_per_channel, generator, device)
        shape = (b, 1 if cfg.synchronize_channels else c)
        factor = rnd.factor(shape, *cfg.range, cfg.sampling, generator, device)
        rows = chosen_rows(mask)
        if rows.numel() == 0:
            return image
        flat = image.view(b * c, -1)
        x = flat[rows]
        f = _per_row(factor, b, c)[rows, None].to(x.dtype)
        mean = x.mean(dim=1, keepdim=True)
        lo, hi = torch.aminmax(x, dim=1, keepdim=True)
        x.sub_(mean).mul_(f).add_(mean)
        if cfg.preserve_range:
            x = torch.clamp(x, lo, hi, out=x)
        flat[rows] = x
        return image


@AUGMENTATIONS.register("gamma")
@AUGMENTATIONS.register("inverted_gamma")
class Gamma:
    """Gamma on the range-normalised channel; inverted (``-x``) with ``p_invert``.

    With ``retain_stats`` the result is rescaled to the channel's old mean and std
    (batchgeneratorsv2 ``GammaTransform``).
    """

    def __init__(self, config: GammaConfig, *, spatial_dims: int, dummy_2d: bool = False):
        self.config = config

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        cfg = self.config
        b, c = image.shape[:2]
        device = image.device
        mask = rnd.row_mask(b, c, cfg.p, cfg.p_per_channel, generator, device)
        gamma = rnd.factor((b, c), *cfg.range, cfg.sampling, generator, device)
        invert = rnd.bernoulli((b, c), cfg.p_invert, generator, device)
        rows = chosen_rows(mask)
        if rows.numel() == 0:
            return image
        flat = image.view(b * c, -1)
        sign = torch.where(invert.flatten()[rows], -1.0, 1.0)[:, None].to(image.dtype)
        g = gamma.flatten()[rows, None].to(image.dtype)
        x = flat[rows].mul_(sign)
        if cfg.retain_stats:
            std, mean = torch.std_mean(x, dim=1, keepdim=True)
        lo, hi = torch.aminmax(x, dim=1, keepdim=True)
        span = hi - lo
        x.sub_(lo).div_(span.clamp_min(_EPS)).pow_(g).mul_(span).add_(lo)
        if cfg.retain_stats:
            new_std, new_mean = torch.std_mean(x, dim=1, keepdim=True)
            x.sub_(new_mean).mul_(std / new_std.clamp_min(_EPS)).add_(mean)
        flat[rows] = x.mul_(sign)
        return image
