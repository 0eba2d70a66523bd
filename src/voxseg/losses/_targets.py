"""Turning a target into what a loss compares against: one-hot or region masks plus a mask
of the voxels that count (everything but the ``ignore`` label)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from voxseg.errors import VoxsegError


@dataclass
class Prepared:
    """Probabilities and matching targets ``[b, C, *spatial]`` and a ``[b, 1, *spatial]`` mask.

    ``labels`` holds the integer target ``[b, *spatial]`` (ignore voxels set to 0) for
    softmax losses and is None for region-based ones.
    """

    probs: torch.Tensor
    onehot: torch.Tensor
    mask: torch.Tensor | None
    labels: torch.Tensor | None


def split_ignore(
    target: torch.Tensor, region_based: bool, ignore_label: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Separate the ignore voxels: ``(target without them, float mask of kept voxels)``.

    Softmax: ``target`` is ``[b, 1, *sp]`` integer labels; ignore voxels become label 0.
    Region-based: ``target`` is ``[b, R, *sp]`` masks, or ``[b, R + 1, *sp]`` with the
    ignore mask as the last channel when ``ignore_label`` is set (nnU-Net's convention).
    """
    if ignore_label is None:
        return target, None
    if region_based:
        keep = 1.0 - target[:, -1:].float()
        return target[:, :-1], keep
    ignored = target == ignore_label
    return torch.where(ignored, torch.zeros_like(target), target), (~ignored).float()


def prepare(
    logits: torch.Tensor,
    target: torch.Tensor,
    region_based: bool,
    ignore_label: int | None,
    include_background: bool,
) -> Prepared:
    """Softmax (or sigmoid for regions) probabilities and the matching one-hot targets."""
    target, mask = split_ignore(target, region_based, ignore_label)
    check_shapes(logits, target, region_based)
    if region_based:
        return Prepared(torch.sigmoid(logits), target.to(logits.dtype), mask, None)
    labels = target[:, 0].long()
    probs = torch.softmax(logits, 1)
    onehot = F.one_hot(labels, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    if not include_background:
        probs, onehot = probs[:, 1:], onehot[:, 1:]
    return Prepared(probs, onehot, mask, labels)


def check_shapes(logits: torch.Tensor, target: torch.Tensor, region_based: bool) -> None:
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[2:]:
        raise VoxsegError(
            f"loss: logits {list(logits.shape)} and target {list(target.shape)} differ in "
            f"batch size or spatial shape"
        )
    if region_based and target.shape[1] != logits.shape[1]:
        raise VoxsegError(
            f"loss: {logits.shape[1]} region outputs but {target.shape[1]} region masks in "
            f"the target (with an ignore label, the target carries one more channel)"
        )
    if not region_based and target.shape[1] != 1:
        raise VoxsegError(
            f"loss: the target must be [b, 1, *spatial] integer labels, got {list(target.shape)}"
        )


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` over the kept voxels (0 when none is kept)."""
    if mask is None:
        return values.mean()
    mask = mask.expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def labels_to_regions(
    labels: torch.Tensor, regions: list[list[int]], ignore_label: int | None = None
) -> torch.Tensor:
    """``[b, 1, *sp]`` labels → ``[b, R, *sp]`` region masks (region = union of its labels).

    With an ``ignore_label`` the ignore mask is appended as a last channel, the layout
    region-based losses expect.
    """
    channels = [torch.isin(labels[:, 0], torch.as_tensor(r, device=labels.device)) for r in regions]
    if ignore_label is not None:
        channels.append(labels[:, 0] == ignore_label)
    return torch.stack(channels, 1).to(torch.uint8)


def downsample_target(target: torch.Tensor, size: torch.Size, mode: str) -> torch.Tensor:
    """Target at a deep-supervision output's resolution: nearest neighbour or max pooling."""
    if tuple(target.shape[2:]) == tuple(size):
        return target
    if mode == "max":
        pool = F.adaptive_max_pool3d if target.ndim == 5 else F.adaptive_max_pool2d
        return pool(target.float(), size).to(target.dtype)
    return F.interpolate(target.float(), size=size, mode="nearest").to(target.dtype)
