"""Intensity family: multiplicative brightness, contrast and (inverted) gamma.

Each works on the rows ``b * c`` chosen by its probabilities, all rows at once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from voxseg.augment import _random as rnd
from voxseg.augment._registry import AUGMENTATIONS
from voxseg.augment._rows import RowTransform
from voxseg.augment.config import BrightnessConfig, ContrastConfig, GammaConfig

_EPS = 1e-7


def _per_row(values: Tensor, b: int, c: int) -> Tensor:
    return values.expand(b, c).reshape(b * c)


class _FactorTransform(RowTransform):
    """Draws a ``[b, c]`` factor from ``range``: one per sample with
    ``synchronize_channels``, else one per channel."""

    config: BrightnessConfig | ContrastConfig

    def draw(self, b: int, c: int, generator: torch.Generator, device: torch.device) -> Tensor:
        cfg = self.config
        shape = (b, 1 if cfg.synchronize_channels else c)
        return rnd.factor(shape, *cfg.range, cfg.sampling, generator, device).expand(b, c)


@AUGMENTATIONS.register("brightness")
class Brightness(_FactorTransform):
    """Multiply a channel by a factor from ``range``."""

    config: BrightnessConfig

    def apply(
        self, image: Tensor, mask: Tensor, rows: Tensor, factor: Tensor, generator: torch.Generator
    ) -> Tensor:
        b, c = image.shape[:2]
        factor = torch.where(mask, factor, torch.ones_like(factor)).to(image.dtype)
        return image.mul_(factor.view(b, c, *([1] * (image.ndim - 2))))


@AUGMENTATIONS.register("contrast")
class Contrast(_FactorTransform):
    """``x -> (x - mean) * f + mean`` per channel, clipped to the old range if asked."""

    config: ContrastConfig

    def apply(
        self, image: Tensor, mask: Tensor, rows: Tensor, factor: Tensor, generator: torch.Generator
    ) -> Tensor:
        cfg = self.config
        b, c = image.shape[:2]
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
class Gamma(RowTransform):
    """Gamma on the range-normalised channel; inverted (``-x``) with ``p_invert``.

    With ``retain_stats`` the result is rescaled to the channel's old mean and std
    (batchgeneratorsv2 ``GammaTransform``).
    """

    config: GammaConfig

    def draw(
        self, b: int, c: int, generator: torch.Generator, device: torch.device
    ) -> tuple[Tensor, Tensor]:
        cfg = self.config
        gamma = rnd.factor((b, c), *cfg.range, cfg.sampling, generator, device)
        return gamma, rnd.bernoulli((b, c), cfg.p_invert, generator, device)

    def apply(
        self,
        image: Tensor,
        mask: Tensor,
        rows: Tensor,
        params: tuple[Tensor, Tensor],
        generator: torch.Generator,
    ) -> Tensor:
        cfg = self.config
        gamma, invert = params
        b, c = image.shape[:2]
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
