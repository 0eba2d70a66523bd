"""Heatmap losses (``loss.name=heatmap`` or ``heatmap_mse``): a loss on a Gaussian target.

The spine repo regresses a heatmap (MSE) on whole images resized to 64×64×128 and takes a
bounding box from it. Here the target is made on the fly from the (augmented) label patch:
the binary foreground smoothed by a Gaussian of ``sigma`` voxels and scaled to a maximum of
1 per sample, learnt with binary cross-entropy plus a soft Dice (or the repo's MSE, see
:data:`HEATMAP_LOSS_KINDS`). The prediction is the softmax probability of class 1 of a
two-output network — for two classes that is ``sigmoid(l1 - l0)`` — so the standard
predictor's argmax is exactly "heatmap > 0.5", and the box of that mask is the localisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from voxseg.errors import VoxsegError
from voxseg.losses._registry import register_loss


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


#: Heatmap loss kinds. ``bce_dice`` (default): binary cross-entropy of the class-1 logit
#: against the soft target plus a soft Dice between probability and target. ``mse``: the
#: spine repo's MSE on the probability — on a small structure it collapses to "all zero"
#: (MSE ≈ mean(target²) ≈ 0.007 for the spine phantoms), where the sigmoid's gradient
#: vanishes; BCE's gradient ``p - t`` does not, and the Dice term weighs the foreground
#: whatever its share of the image.
HEATMAP_LOSS_KINDS = ("bce_dice", "mse")


@register_loss("heatmap")
class HeatmapLoss(nn.Module):
    """Loss between ``softmax(logits)[:, 1]`` and :func:`heatmap_target` of the labels."""

    def __init__(
        self,
        *,
        num_classes: int,
        region_based: bool = False,
        ignore_label: int | None = None,
        sigma: float = 2.0,
        kind: str = "bce_dice",
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        if num_classes != 2 or region_based:
            what = "region-based training" if region_based else f"{num_classes} classes"
            raise VoxsegError(
                f"loss.name=heatmap needs a two-class (background, foreground) model, not "
                f"{what}; choose another loss.name or train on one foreground label"
            )
        if kind not in HEATMAP_LOSS_KINDS:
            raise VoxsegError(
                f"loss.kind={kind!r}: a heatmap loss's kind is one of {HEATMAP_LOSS_KINDS}"
            )
        self.sigma = float(sigma)
        self.kind = kind
        self.smooth = float(smooth)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        heat = heatmap_target(target > 0, self.sigma)
        logits = logits.float()
        if self.kind == "mse":
            return F.mse_loss(torch.softmax(logits, dim=1)[:, 1:2], heat)
        z = logits[:, 1:2] - logits[:, 0:1]  # softmax of two classes: p1 = sigmoid(l1 - l0)
        bce = F.binary_cross_entropy_with_logits(z, heat)
        prob = torch.sigmoid(z).flatten(1)
        t = heat.flatten(1)
        inter = (prob * t).sum(1)
        dice = (2 * inter + self.smooth) / (prob.sum(1) + t.sum(1) + self.smooth)
        return bce + (1 - dice).mean()


@register_loss("heatmap_mse")
class HeatmapMSELoss(HeatmapLoss):
    """:class:`HeatmapLoss` with ``kind="mse"`` (the spine repo's loss)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**{**kwargs, "kind": "mse"})


HeatmapMSELoss.forwards_kwargs_to = (HeatmapLoss,)  # type: ignore[attr-defined]


__all__ = [
    "HEATMAP_LOSS_KINDS",
    "HeatmapLoss",
    "HeatmapMSELoss",
    "gaussian_kernel",
    "heatmap_target",
]
