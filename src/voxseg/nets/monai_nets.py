"""MONAI's SwinUNETR, Attention U-Net, SegResNet and UNETR behind voxseg's factory keywords.

These take their spatial dimensions (and, where it maps, features and strides) from the
topology; their own size settings (``feature_size``, ``hidden_size``, ``depths``, ...) are
keyword arguments passed through to MONAI with MONAI's defaults. Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn  # MONAI is imported by each builder: `import monai` costs ~0.5 GB

from voxseg.errors import VoxsegError
from voxseg.nets._registry import NetworkInfo, NetworkRequest, register_family


@register_family(
    "swin_unetr",
    NetworkInfo(needs_patch_divisible_by=32, min_input_size=64),
    forwards_kwargs_to=("monai.networks.nets:SwinUNETR",),
)
def swin_unetr(net: NetworkRequest, /, **kwargs: Any) -> nn.Module:
    """SwinUNETR (Hatamizadeh et al. 2022); ``feature_size`` must be a multiple of 12.

    Inputs are at least 64 per axis: at 32 the instance-normed bottleneck has one voxel.
    """
    kwargs.setdefault("feature_size", 48)
    from monai.networks.nets import SwinUNETR

    return SwinUNETR(
        in_channels=net.in_channels,
        out_channels=net.num_classes,
        spatial_dims=net.topology.spatial_dims,
        **kwargs,
    )


@register_family(
    "attention_unet",
    NetworkInfo(needs_patch_divisible_by="topology"),
    forwards_kwargs_to=("monai.networks.nets:AttentionUnet",),
)
def attention_unet(net: NetworkRequest, /, **kwargs: Any) -> nn.Module:
    """Attention U-Net (Oktay et al. 2018) with the topology's features and strides."""
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(
        spatial_dims=net.topology.spatial_dims,
        in_channels=net.in_channels,
        out_channels=net.num_classes,
        channels=list(net.topology.features_per_stage),
        strides=[tuple(s) for s in net.topology.strides[1:]],
        **kwargs,
    )


@register_family(
    "segresnet",
    NetworkInfo(needs_patch_divisible_by="topology"),
    forwards_kwargs_to=("monai.networks.nets:SegResNet",),
)
def segresnet(net: NetworkRequest, /, **kwargs: Any) -> nn.Module:
    """SegResNet (Myronenko 2018): one level per topology stage, stride 2 between levels.

    The topology must have stride 2 on every axis (SegResNet downsamples isotropically);
    ``init_filters`` is the first stage's feature count.
    """
    if any(s != [2] * net.topology.spatial_dims for s in net.topology.strides[1:]):
        raise VoxsegError(
            f"segresnet downsamples by 2 on every axis; the topology's strides "
            f"{net.topology.strides} differ; use unet or resenc_unet for anisotropic data"
        )
    init = net.topology.features_per_stage[0]
    n = net.topology.n_stages
    kwargs.setdefault("blocks_down", (1, 2, 2, 4, 4, 4, 4, 4)[:n])
    kwargs.setdefault("blocks_up", (1,) * (n - 1))
    kwargs.setdefault("norm", ("GROUP", {"num_groups": 8 if init % 8 == 0 else 1}))
    from monai.networks.nets import SegResNet

    return SegResNet(
        spatial_dims=net.topology.spatial_dims,
        init_filters=init,
        in_channels=net.in_channels,
        out_channels=net.num_classes,
        **kwargs,
    )


@register_family(
    "unetr",
    NetworkInfo(needs_patch_divisible_by=16, fixed_input_size=True),
    forwards_kwargs_to=("monai.networks.nets:UNETR",),
)
def unetr(net: NetworkRequest, /, **kwargs: Any) -> nn.Module:
    """UNETR (Hatamizadeh et al. 2022): a ViT on 16-voxel tokens; input = the patch size."""
    kwargs.setdefault("feature_size", 16)
    from monai.networks.nets import UNETR

    return UNETR(
        in_channels=net.in_channels,
        out_channels=net.num_classes,
        img_size=list(net.patch_size),
        spatial_dims=net.topology.spatial_dims,
        **kwargs,
    )
