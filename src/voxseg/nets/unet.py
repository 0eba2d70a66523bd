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

from voxseg.nets._registry import NetworkInfo, NetworkRequest, register_family
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


@register_family("unet", UNET_INFO, forwards_kwargs_to=(PlainConvUNet,))
def unet(net: NetworkRequest, /, **kwargs: Any) -> nn.Module:
    """nnU-Net's default ``PlainConvUNet`` (two convs per encoder and decoder stage)."""
    return _initialised(
        PlainConvUNet(
            input_channels=net.in_channels,
            num_classes=net.num_classes,
            n_conv_per_stage=list(net.topology.n_conv_per_stage),
            n_conv_per_stage_decoder=list(net.topology.n_conv_per_stage_decoder),
            deep_supervision=net.deep_supervision,
            **_common(net.topology, **kwargs),
        )
    )


def _resenc(
    net: NetworkRequest, blocks: list[int], blocks_decoder: list[int], kwargs: dict[str, Any]
) -> nn.Module:
    return _initialised(
        ResidualEncoderUNet(
            input_channels=net.in_channels,
            num_classes=net.num_classes,
            n_blocks_per_stage=blocks,
            n_conv_per_stage_decoder=blocks_decoder,
            deep_supervision=net.deep_supervision,
            **_common(net.topology, **kwargs),
        )
    )


@register_family("resenc_unet", UNET_INFO, forwards_kwargs_to=(ResidualEncoderUNet,))
def resenc_unet(net: NetworkRequest, /, **kwargs: Any) -> nn.Module:
    """``ResidualEncoderUNet`` with residual blocks per stage = the topology's convs per stage."""
    topology = net.topology
    blocks = list(topology.n_conv_per_stage)
    return _resenc(net, blocks, list(topology.n_conv_per_stage_decoder), kwargs)


def _preset_factory(key: str):
    preset = RESENC_PRESETS[key]

    def build(net: NetworkRequest, /, **kwargs: Any) -> nn.Module:
        n = net.topology.n_stages
        blocks = list(preset.blocks_per_stage_encoder[:n])
        return _resenc(net, blocks, [preset.blocks_per_stage_decoder] * (n - 1), kwargs)

    build.__name__ = build.__qualname__ = f"resenc_unet_{key}"
    build.__doc__ = (
        f"nnU-Net's ResEnc {key.upper()} preset (planned for ~{preset.vram_target_gb:g} GB VRAM)."
    )
    family = register_family(
        f"resenc_unet_{key}", UNET_INFO, forwards_kwargs_to=(ResidualEncoderUNet,)
    )
    return family(build)


resenc_unet_m = _preset_factory("m")
resenc_unet_l = _preset_factory("l")
resenc_unet_xl = _preset_factory("xl")
