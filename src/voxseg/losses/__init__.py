"""Losses: a registry of segmentation losses built from a ``LossConfig``.

``build_loss({"name": "dice_ce"}, num_classes=3)`` returns ``loss(logits, target)``;
logits may be a deep-supervision list (highest resolution first). Losses live one family
per module and register themselves on import.
"""

from voxseg.losses import blob, ce, compound, dice
from voxseg.losses._registry import (
    LOSSES,
    DeepSupervisionLoss,
    LossConfig,
    build_loss,
    deep_supervision_weights,
    register_loss,
)
from voxseg.losses._targets import labels_to_regions
from voxseg.losses.blob import BlobDiceLoss
from voxseg.losses.ce import CrossEntropyLoss, FocalLoss
from voxseg.losses.compound import CombinedLoss, DiceCELoss
from voxseg.losses.dice import DiceLoss, TverskyLoss
from voxseg.losses.heatmap import HeatmapLoss, HeatmapMSELoss

__all__ = [
    "LOSSES",
    "BlobDiceLoss",
    "CombinedLoss",
    "CrossEntropyLoss",
    "DeepSupervisionLoss",
    "DiceCELoss",
    "DiceLoss",
    "FocalLoss",
    "HeatmapLoss",
    "HeatmapMSELoss",
    "LossConfig",
    "TverskyLoss",
    "blob",
    "build_loss",
    "ce",
    "compound",
    "deep_supervision_weights",
    "dice",
    "labels_to_regions",
    "register_loss",
]
