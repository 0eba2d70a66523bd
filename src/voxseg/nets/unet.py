"""nnU-Net's plain and residual-encoder U-Nets from ``dynamic-network-architectures``.

Defaults are nnU-Net's: instance norm (affine, eps 1e-5), LeakyReLU (inplace), conv bias,
no dropout, He initialisation. The ResEnc presets M/L/XL share one architecture
(encoder blocks 1, 3, 4, 6, 6, ... and one conv per decoder stage; Isensee et al.,
"nnU-Net Revisited", MICCAI 2024); they differ in the GPU memory the planner targets,
which sets patch and batch size, kept here as ``RESENC_PRESETS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from voxseg.nets._registry import NetworkInfo, register_network
from voxseg.nets.topology import Topology

UNET_INFO = NetworkInfo(supports_deep_supervision=True, needs_patch_divisible_by="topology")


@dataclass(frozen=True)
class ResEncPreset:
    """One of nnU-Net's residual-encoder presets (``nnUNetPlannerResEnc{M,L,XL}``)."""

    vram_target_gb: float
    blocks_per_stage_encoder: tuple[int, ...] = (1, 3, 4, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6)
    blocks_per_stage_decoder: int = 1


RESENC_PRESETS: dict[str, ResEncPreset] = {
    "m": ResEncPreset(vram_target_gb=8),
    "l": ResEncPreset(vram_target_gb=24),
    "xl": ResEncPreset(vram_target_gb=40),
}


def _common(topology: Topology, **overrides: Any) -> dict[str, Any]:
    conv = nn.Conv3d if topology.spatial_dims == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if topology.spatial_dims == 3 else nn.InstanceNorm2d
    kwargs: dict[str, Any] = {
        "n_stages": topology.n_stages,
        "features_per_stage": list(topology.features_per_stage),
        "conv_op": conv,
        "kernel_sizes": [list(k) for k in topology.kernel_sizes],
        "strides": [list(s) for s in topology.strides],
        "conv_bias": True,
        "norm_op": norm,
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": nn.LeakyReLU,
        "nonlin_kwargs": {"inplace": True},
    }
    kwargs.update(overrides)
    return kwargs


def _initialised(model: nn.Module) -> nn.Module:
    model.apply(model.initialize)
    return model


@register_network("unet", UNET_INFO)
def unet(
    *,
    in_channels: int,
    num_classes: int,
    topology: Topology,
    patch_size: list[int],
    deep_supervision: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """nnU-Net's default ``PlainConvUNet`` (two convs per encoder and decoder stage)."""
    return _initialised(
        PlainConvUNet(
            input_channels=in_channels,
            num_classes=num_classes,
            n_conv_per_stage=list(topology.n_conv_per_stage),
            n_conv_per_stage_decoder=list(topology.n_conv_per_stage_decoder),
            deep_supervision=deep_supervision,
            **_common(topology, **kwargs),
        )
    )


def _resenc(
    in_channels: int,
    num_classes: int,
    topology: Topology,
    deep_supervision: bool,
    blocks: list[int],
    blocks_decoder: list[int],
    kwargs: dict[str, Any],
) -> nn.Module:
    return _initialised(
        ResidualEncoderUNet(
            input_channels=in_channels,
            num_classes=num_classes,
            n_blocks_per_stage=blocks,
            n_conv_per_stage_decoder=blocks_decoder,
            deep_supervision=deep_supervision,
            **_common(topology, **kwargs),
        )
    )


@register_network("resenc_unet", UNET_INFO)
def resenc_unet(
    *,
    in_channels: int,
    num_classes: int,
    topology: Topology,
    patch_size: list[int],
    deep_supervision: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """``ResidualEncoderUNet`` with residual blocks per stage = the topology's convs per stage."""
    return _resenc(
        in_channels,
        num_classes,
        topology,
        deep_supervision,
        list(topology.n_conv_per_stage),
        list(topology.n_conv_per_stage_decoder),
        kwargs,
    )


unet.forwards_kwargs_to = (PlainConvUNet,)  # type: ignore[attr-defined]
resenc_unet.forwards_kwargs_to = (ResidualEncoderUNet,)  # type: ignore[attr-defined]


def _preset_factory(key: str):
    preset = RESENC_PRESETS[key]

    def factory(
        *,
        in_channels: int,
        num_classes: int,
        topology: Topology,
        patch_size: list[int],
        deep_supervision: bool = False,
        **kwargs: Any,
    ) -> nn.Module:
        n = topology.n_stages
        return _resenc(
            in_channels,
            num_classes,
            topology,
            deep_supervision,
            list(preset.blocks_per_stage_encoder[:n]),
            [preset.blocks_per_stage_decoder] * (n - 1),
            kwargs,
        )

    factory.forwards_kwargs_to = (ResidualEncoderUNet,)  # type: ignore[attr-defined]
    factory.__name__ = f"resenc_unet_{key}"
    factory.__doc__ = (
        f"nnU-Net's ResEnc {key.upper()} preset (planned for ~{preset.vram_target_gb:g} GB VRAM)."
    )
    return register_network(f"resenc_unet_{key}", UNET_INFO)(factory)


resenc_unet_m = _preset_factory("m")
resenc_unet_l = _preset_factory("l")
resenc_unet_xl = _preset_factory("xl")
