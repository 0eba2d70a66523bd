"""Batched data augmentation in torch, on whatever device the batch lives.

``build_augmentation("nnunet", spatial_dims=3, patch_size=(128, 128, 128))`` returns an
``Augmenter``; ``augmenter(image [b, c, *in], seg [b, 1, *in], generator)`` returns the
augmented patch. Rotation, scaling, elastic deformation, mirroring and the crop to the
patch are one ``grid_sample``; the input may be larger than the patch
(``required_input_size``). Intensity transforms are registered in ``AUGMENTATIONS``.
"""

from voxseg.augment import intensity, mask, noise, resolution
from voxseg.augment._registry import AUGMENTATIONS
from voxseg.augment.augmenter import Augmenter, build_augmentation
from voxseg.augment.config import (
    PRESETS,
    AugmentationConfig,
    BlurConfig,
    BrightnessConfig,
    ContrastConfig,
    ElasticConfig,
    GammaConfig,
    LowResolutionConfig,
    MirrorConfig,
    NoiseConfig,
    RotationConfig,
    ScalingConfig,
    augmentation_preset,
)
from voxseg.augment.mask import previous_mask_augmentation
from voxseg.augment.spatial import SpatialParams, SpatialTransform, required_input_size

__all__ = [
    "AUGMENTATIONS",
    "PRESETS",
    "AugmentationConfig",
    "Augmenter",
    "BlurConfig",
    "BrightnessConfig",
    "ContrastConfig",
    "ElasticConfig",
    "GammaConfig",
    "LowResolutionConfig",
    "MirrorConfig",
    "NoiseConfig",
    "RotationConfig",
    "ScalingConfig",
    "SpatialParams",
    "SpatialTransform",
    "augmentation_preset",
    "build_augmentation",
    "intensity",
    "mask",
    "noise",
    "previous_mask_augmentation",
    "required_input_size",
    "resolution",
]
