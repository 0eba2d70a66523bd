"""Networks: a registry of segmentation architectures built from a plan's topology."""

from voxseg.nets.topology import Topology

__all__ = ["Topology"]
