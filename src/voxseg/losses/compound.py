"""Dice + cross-entropy (nnU-Net's default) and weighted combinations of any losses."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from voxseg.errors import VoxsegError
from voxseg.losses._registry import build_single, register_loss
from voxseg.losses._targets import prepare
from voxseg.losses.ce import cross_entropy
from voxseg.losses.dice import DiceLoss

if TYPE_CHECKING:
    from voxseg.losses._registry import LossConfig


@register_loss("dice_ce")
class DiceCELoss(nn.Module):
    """``weight_ce · CE + weight_dice · soft Dice`` (nnU-Net: 1 and 1, Dice without background).

    Region-based: binary cross-entropy + Dice on sigmoid probabilities of every region
    (nnU-Net's ``DC_and_BCE_loss``).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        region_based: bool = False,
        ignore_label: int | None = None,
        weight_ce: float = 1.0,
        weight_dice: float = 1.0,
        batch_dice: bool = False,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.region_based = region_based
        self.ignore_label = ignore_label
        self.weight_ce, self.weight_dice = weight_ce, weight_dice
        self.dice = DiceLoss(
            num_classes=num_classes,
            region_based=region_based,
            ignore_label=ignore_label,
            batch_dice=batch_dice,
            smooth=smooth,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = prepare(
            logits, target, self.region_based, self.ignore_label, self.dice.include_background
        )
        ce = cross_entropy(logits, target, self.region_based, self.ignore_label)
        return self.weight_ce * ce + self.weight_dice * self.dice.from_prepared(p)


@register_loss("combo")
class CombinedLoss(nn.Module):
    """Weighted sum of losses, each a ``LossConfig`` (or dict) with its own ``weight``."""

    def __init__(
        self,
        *,
        num_classes: int,
        region_based: bool = False,
        ignore_label: int | None = None,
        terms: list[LossConfig | dict[str, Any]],
    ) -> None:
        super().__init__()
        built = [
            build_single(
                t, num_classes=num_classes, region_based=region_based, ignore_label=ignore_label
            )
            for t in terms
        ]
        if not built:
            raise VoxsegError("a 'combo' loss needs at least one term in 'terms'")
        self.weights = [w for w, _ in built]
        self.terms = nn.ModuleList(m for _, m in built)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * t(logits, target) for w, t in zip(self.weights, self.terms, strict=True))
