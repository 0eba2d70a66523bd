"""Cross-entropy (softmax) / binary cross-entropy (regions) and the focal loss.

Both average over the voxels that are not ``ignore`` (ignored voxels get no gradient); the
focal loss (Lin et al. 2017) ``−(1 − p_t)^γ · log p_t`` equals cross-entropy at γ = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxseg.losses._registry import register_loss
from voxseg.losses._targets import check_shapes, masked_mean, split_ignore


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, region_based: bool, ignore_label: int | None
) -> torch.Tensor:
    """Mean (B)CE over the kept voxels."""
    target, mask = split_ignore(target, region_based, ignore_label)
    check_shapes(logits, target, region_based)
    if region_based:
        values = F.binary_cross_entropy_with_logits(
            logits, target.to(logits.dtype), reduction="none"
        )
        return masked_mean(values, mask)
    values = F.cross_entropy(logits, target[:, 0].long(), reduction="none")
    return masked_mean(values, None if mask is None else mask[:, 0])


@register_loss("ce")
class CrossEntropyLoss(nn.Module):
    """Softmax cross-entropy over classes, or binary cross-entropy per region."""

    def __init__(
        self, *, num_classes: int, region_based: bool = False, ignore_label: int | None = None
    ) -> None:
        super().__init__()
        self.region_based = region_based
        self.ignore_label = ignore_label

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, self.region_based, self.ignore_label)


@register_loss("focal")
class FocalLoss(nn.Module):
    """Focal loss, mean over voxels (softmax) or over voxels and regions (sigmoid)."""

    def __init__(
        self,
        *,
        num_classes: int,
        region_based: bool = False,
        ignore_label: int | None = None,
        gamma: float = 2.0,
    ) -> None:
        super().__init__()
        self.region_based = region_based
        self.ignore_label = ignore_label
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target, mask = split_ignore(target, self.region_based, self.ignore_label)
        check_shapes(logits, target, self.region_based)
        if self.region_based:
            t = target.to(logits.dtype)
            log_pt = -F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        else:
            log_pt = torch.log_softmax(logits, 1).gather(1, target.long())
        values = -((1 - log_pt.exp()) ** self.gamma) * log_pt
        return masked_mean(values, mask)
