"""Networks: a registry of segmentation architectures built from a plan's topology.

``build_network("unet", in_channels=1, num_classes=3, topology=..., patch_size=[...])``
returns logits ``[b, num_classes, *spatial]`` (a list, highest resolution first, with deep
supervision). Families live one per module and register themselves on import.
"""

from voxseg.nets import monai_nets, segformer3d, unet
from voxseg.nets._registry import (
    NETWORKS,
    NetworkInfo,
    NetworkRequest,
    build_network,
    network_info,
    register_family,
    register_network,
)
from voxseg.nets.topology import Topology
from voxseg.nets.unet import RESENC_PRESETS, ResEncPreset
from voxseg.nets.weights import (
    AdaptReport,
    adapt_state_dict,
    load_pretrained,
    load_weights,
    read_weights,
    save_weights,
)

__all__ = [
    "NETWORKS",
    "RESENC_PRESETS",
    "AdaptReport",
    "NetworkInfo",
    "NetworkRequest",
    "ResEncPreset",
    "Topology",
    "adapt_state_dict",
    "build_network",
    "load_pretrained",
    "load_weights",
    "monai_nets",
    "network_info",
    "read_weights",
    "register_family",
    "register_network",
    "save_weights",
    "segformer3d",
    "unet",
]
