"""Augmentation settings: per-transform probabilities and ranges, and the named presets.

Every probability ``p`` is drawn once per sample of the batch (as nnU-Net's per-sample
``RandomTransform``); ``p_per_channel`` is then drawn per channel of a chosen sample.
``sampling="split_at_one"`` draws a factor below 1 or above 1 with equal odds and then
uniformly on that side (batchgeneratorsv2's ``BGContrast``); ``"uniform"`` draws uniformly
over the whole range (ovseg).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxseg.errors import VoxsegError

Range = tuple[float, float]
Sampling = Literal["uniform", "split_at_one"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _check(self) -> _Section:
        for name, value in self:
            if name.startswith("p") and isinstance(value, float) and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} = {value} is a probability and must lie in [0, 1]")
            if isinstance(value, tuple) and len(value) == 2 and value[0] > value[1]:
                raise ValueError(f"{name} = {value}: the minimum is larger than the maximum")
        return self


class RotationConfig(_Section):
    """Random rotation; 3D draws one angle per axis, 2D and in-plane one angle."""

    p: float = 0.2
    degrees: Range = (-30.0, 30.0)
    degrees_in_plane: Range = (-180.0, 180.0)


class ScalingConfig(_Section):
    """Random zoom; a factor > 1 samples a wider region (objects get smaller), as nnU-Net."""

    p: float = 0.2
    range: Range = (0.7, 1.4)
    isotropic: bool = True


class ElasticConfig(_Section):
    """Smooth random displacement: Gaussian noise on a coarse control grid, upsampled."""

    p: float = 0.0
    magnitude: Range = (0.0, 4.0)
    control_points: int = Field(5, ge=2)


class MirrorConfig(_Section):
    """Flip each allowed spatial axis with ``p_per_axis`` (``axes=None``: the plan's
    ``mirror_axes``, and every axis when the plan has none)."""

    p_per_axis: float = 0.5
    axes: tuple[int, ...] | None = None

    def resolved_axes(self, plan_axes: Sequence[int] | None, spatial_dims: int) -> tuple[int, ...]:
        """The axes flipped in training and test-time augmentation: none when
        ``p_per_axis`` is 0, else this config's ``axes``, else the plan's, else all."""
        if self.p_per_axis == 0:
            return ()
        if self.axes is not None:
            return tuple(self.axes)
        if plan_axes is not None:
            return tuple(int(a) for a in plan_axes)
        return tuple(range(spatial_dims))


class NoiseConfig(_Section):
    """Additive Gaussian noise; ``range`` bounds the std or the variance (``parameter``).

    batchgeneratorsv2 names its range ``noise_variance`` but uses the drawn value as the
    standard deviation; the ``nnunet`` preset reproduces that with ``parameter="std"``.
    """

    p: float = 0.1
    range: Range = (0.0, 0.1)
    parameter: Literal["std", "variance"] = "std"
    p_per_channel: float = 1.0
    synchronize_channels: bool = True


class BlurConfig(_Section):
    """Separable Gaussian blur with reflecting borders; sigma in voxels."""

    p: float = 0.2
    sigma: Range = (0.5, 1.0)
    p_per_channel: float = 0.5
    per_axis: bool = True
    in_plane_only: bool = False


class _FactorConfig(_Section):
    """A factor drawn from ``range`` per sample, shared by its channels or not
    (batchgeneratorsv2's defaults for brightness and contrast)."""

    p: float = 0.15
    range: Range = (0.75, 1.25)
    sampling: Sampling = "split_at_one"
    p_per_channel: float = 1.0
    synchronize_channels: bool = False


class BrightnessConfig(_FactorConfig):
    """Multiply the intensities by a random factor."""


class ContrastConfig(_FactorConfig):
    """Scale intensities around their mean; ``preserve_range`` clips to the old min/max."""

    preserve_range: bool = True


class LowResolutionConfig(_Section):
    """Downsample (nearest) by ``zoom`` and upsample back (linear): blurs fine detail."""

    p: float = 0.25
    zoom: Range = (0.5, 1.0)
    p_per_channel: float = 0.5
    synchronize_axes: bool = True


class GammaConfig(_Section):
    """``x -> x_n ** gamma`` on the range-normalised image; inverted on ``p_invert``."""

    p: float = 0.3
    range: Range = (0.7, 1.5)
    sampling: Sampling = "split_at_one"
    p_invert: float = 0.0
    retain_stats: bool = True
    p_per_channel: float = 1.0


DEFAULT_ORDER = [
    "noise",
    "blur",
    "brightness",
    "contrast",
    "low_resolution",
    "inverted_gamma",
    "gamma",
]


class AugmentationConfig(BaseModel):
    """All augmentation settings; spatial transforms are composed into one resampling."""

    model_config = ConfigDict(extra="forbid")

    rotation: RotationConfig = RotationConfig()
    scaling: ScalingConfig = ScalingConfig()
    elastic: ElasticConfig = ElasticConfig()
    mirror: MirrorConfig = MirrorConfig()
    in_plane_only: bool = False
    seg_pad_value: int = 0
    noise: NoiseConfig = NoiseConfig()
    blur: BlurConfig = BlurConfig()
    brightness: BrightnessConfig = BrightnessConfig()
    contrast: ContrastConfig = ContrastConfig()
    low_resolution: LowResolutionConfig = LowResolutionConfig()
    inverted_gamma: GammaConfig = GammaConfig(p=0.1, p_invert=1.0)
    gamma: GammaConfig = GammaConfig()
    intensity_order: list[str] = Field(default_factory=lambda: list(DEFAULT_ORDER))
    custom: dict[str, dict] = Field(default_factory=dict)

    def without_intensity(self) -> AugmentationConfig:
        """A copy with every intensity transform switched off (spatial only)."""
        return self.model_copy(update={"intensity_order": []})

    def without_spatial(self) -> AugmentationConfig:
        """A copy with rotation, scaling, elastic deformation and mirroring switched off."""
        return self.model_copy(
            update={
                "rotation": self.rotation.model_copy(update={"p": 0.0}),
                "scaling": self.scaling.model_copy(update={"p": 0.0}),
                "elastic": self.elastic.model_copy(update={"p": 0.0}),
                "mirror": self.mirror.model_copy(update={"p_per_axis": 0.0}),
            }
        )


def _nnunet() -> AugmentationConfig:
    """nnU-Net v2 (``nnUNetTrainer.get_training_transforms``, batchgeneratorsv2)."""
    return AugmentationConfig()


def _ovseg() -> AugmentationConfig:
    """ovseg's GPU defaults: in-plane grid augmentation and its gray-value augmentation."""
    return AugmentationConfig(
        rotation=RotationConfig(p=0.2, degrees_in_plane=(-180.0, 180.0)),
        scaling=ScalingConfig(p=0.2, range=(0.7, 1.4)),
        in_plane_only=True,
        noise=NoiseConfig(p=0.15, range=(0.0, 0.1), parameter="variance"),
        blur=BlurConfig(
            p=0.1, sigma=(0.5, 1.5), p_per_channel=1.0, per_axis=False, in_plane_only=True
        ),
        brightness=BrightnessConfig(p=0.15, range=(0.7, 1.3), sampling="uniform"),
        contrast=ContrastConfig(p=0.15, range=(0.65, 1.5), sampling="uniform"),
        low_resolution=LowResolutionConfig(p=0.125, zoom=(0.5, 1.0), p_per_channel=1.0),
        inverted_gamma=GammaConfig(p=0.0, p_invert=1.0),
        gamma=GammaConfig(
            p=0.15, range=(0.7, 1.5), sampling="uniform", p_invert=0.15, retain_stats=False
        ),
    )


PRESETS = {"nnunet": _nnunet, "ovseg": _ovseg}


def augmentation_preset(name: str) -> AugmentationConfig:
    """The named preset (``nnunet`` or ``ovseg``) as a fresh config."""
    if name not in PRESETS:
        raise VoxsegError(
            f"unknown augmentation preset {name!r}; available: {', '.join(sorted(PRESETS))}"
        )
    return PRESETS[name]()
