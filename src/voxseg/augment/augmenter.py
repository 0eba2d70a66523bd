"""The batch augmenter: one spatial resampling, then the intensity transforms in order."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from voxseg._registry import check_kwargs
from voxseg.augment._registry import AUGMENTATIONS
from voxseg.augment.config import AugmentationConfig, augmentation_preset
from voxseg.augment.spatial import SpatialParams, SpatialTransform
from voxseg.errors import VoxsegError

IntensityTransform = Callable[[Tensor, torch.Generator], Tensor]


class Augmenter:
    """Augments a batch on the device of its tensors; deterministic under a generator seed."""

    def __init__(
        self,
        config: AugmentationConfig,
        spatial: SpatialTransform,
        intensity: list[tuple[str, IntensityTransform]],
    ) -> None:
        self.config = config
        self.spatial = spatial
        self.intensity = intensity

    @property
    def patch_size(self) -> tuple[int, ...]:
        return self.spatial.patch_size

    def __call__(
        self, image: Tensor, seg: Tensor | None, generator: torch.Generator
    ) -> tuple[Tensor, Tensor | None]:
        """``image [b, c, *in]``, ``seg [b, 1, *in]`` → both cropped/resampled to the patch."""
        params = self.sample_spatial(image.shape[0], generator, image.device)
        return self.apply(image, seg, params, generator)

    def sample_spatial(
        self, batch: int, generator: torch.Generator, device: torch.device | str
    ) -> SpatialParams:
        """Draw the spatial parameters of a batch (exposed for inspection and tests)."""
        return self.spatial.sample(batch, generator, torch.device(device))

    def apply(
        self,
        image: Tensor,
        seg: Tensor | None,
        params: SpatialParams,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor | None]:
        """Apply drawn spatial parameters, then draw and apply the intensity transforms."""
        dims = self.spatial.dims
        if image.ndim != dims + 2:
            raise ValueError(
                f"image must be [b, c, *{dims} spatial axes], got {tuple(image.shape)}"
            )
        if seg is not None and (seg.shape[0] != image.shape[0] or seg.shape[2:] != image.shape[2:]):
            raise ValueError(f"seg {tuple(seg.shape)} does not match image {tuple(image.shape)}")
        if not image.is_floating_point():
            image = image.float()
        out, out_seg = self.spatial.apply(image, seg, params)
        out = out.contiguous()
        for _, transform in self.intensity:
            out = transform(out, generator)
        return out, out_seg


def _build_intensity(
    config: AugmentationConfig, spatial_dims: int, dummy_2d: bool
) -> list[tuple[str, IntensityTransform]]:
    out = []
    for name in config.intensity_order:
        factory = AUGMENTATIONS.get(name)
        section = getattr(config, name, None)
        if section is not None and name in AugmentationConfig.model_fields:
            transform = factory(config=section, spatial_dims=spatial_dims, dummy_2d=dummy_2d)
        else:
            kwargs = config.custom.get(name, {})
            check_kwargs(factory, kwargs, f"augmentation {name!r}")
            transform = factory(spatial_dims=spatial_dims, dummy_2d=dummy_2d, **kwargs)
        out.append((name, transform))
    return out


def build_augmentation(
    config: AugmentationConfig | str,
    *,
    spatial_dims: int,
    patch_size: tuple[int, ...],
    dummy_2d: bool = False,
) -> Augmenter:
    """An ``Augmenter`` from a config or a preset name (``"nnunet"``, ``"ovseg"``)."""
    if isinstance(config, str):
        config = augmentation_preset(config)
    if dummy_2d and spatial_dims != 3:
        raise VoxsegError("dummy_2d augmentation needs 3D patches (spatial_dims=3)")
    spatial = SpatialTransform(
        config, spatial_dims=spatial_dims, patch_size=tuple(patch_size), dummy_2d=dummy_2d
    )
    return Augmenter(config, spatial, _build_intensity(config, spatial_dims, dummy_2d))
