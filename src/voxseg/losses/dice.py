"""Soft Dice and Tversky losses (softmax over classes, or sigmoid for regions).

Dice follows nnU-Net's ``MemoryEfficientSoftDiceLoss``: per sample and class (or per class
over the whole batch with ``batch_dice``) ``(2·TP + s) / (ΣP + ΣG + s)`` with s = 1e-5,
background excluded, averaged over classes. The loss is ``1 − mean Dice`` (nnU-Net returns
``−mean Dice``; the gradient is the same). Tversky (Salehi et al. 2017) is
``(TP + s) / (TP + α·FP + β·FN + s)``, α weighting false positives, β false negatives.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from voxseg.losses._registry import register_loss
from voxseg.losses._targets import Prepared, prepare


def overlap_stats(p: Prepared, batch_dice: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft TP, ΣP and ΣG per class (and per sample unless ``batch_dice``), ignore masked."""
    probs, gt = p.probs, p.onehot
    if p.mask is not None:
        probs, gt = probs * p.mask, gt * p.mask
    axes = tuple(range(2, probs.ndim))
    if batch_dice:
        axes = (0, *axes)
    return (probs * gt).sum(axes), probs.sum(axes), gt.sum(axes)


@register_loss("dice")
class DiceLoss(nn.Module):
    """Soft Dice loss; regions always include every channel (there is no background)."""

    def __init__(
        self,
        *,
        num_classes: int,
        region_based: bool = False,
        ignore_label: int | None = None,
        batch_dice: bool = False,
        smooth: float = 1e-5,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        self.region_based = region_based
        self.ignore_label = ignore_label
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.include_background = include_background or region_based

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = prepare(logits, target, self.region_based, self.ignore_label, self.include_background)
        return self.from_prepared(p)

    def from_prepared(self, p: Prepared) -> torch.Tensor:
        tp, sum_p, sum_g = overlap_stats(p, self.batch_dice)
        dice = (2 * tp + self.smooth) / (sum_p + sum_g + self.smooth).clamp_min(1e-8)
        return 1 - dice.mean()


@register_loss("tversky")
class TverskyLoss(DiceLoss):
    """Tversky loss; α = β = 0.5 is Dice, the default α 0.3, β 0.7 favours recall."""

    def __init__(self, *, alpha: float = 0.3, beta: float = 0.7, **dice: Any) -> None:
        super().__init__(**dice)
        self.alpha, self.beta = alpha, beta

    def from_prepared(self, p: Prepared) -> torch.Tensor:
        tp, sum_p, sum_g = overlap_stats(p, self.batch_dice)
        fp, fn = sum_p - tp, sum_g - tp
        score = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return 1 - score.mean()


TverskyLoss.forwards_kwargs_to = (DiceLoss,)  # type: ignore[attr-defined]
