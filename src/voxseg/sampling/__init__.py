"""Patch sampling for training: where each patch of a batch is cut from its case.

Samplers are registered by name (``SAMPLERS``) and pick the corner of a crop; the
:class:`~voxseg.sampling.batches.PatchBatches` dataset reads those crops from the
preprocessed store and stacks them into batches for a torch ``DataLoader``.
"""

from voxseg.sampling.batches import PatchBatches, read_crop
from voxseg.sampling.samplers import (
    SAMPLERS,
    CenterlineSampler,
    ForegroundSampler,
    RoiSampler,
    Sampler,
    SamplingConfig,
    UniformSampler,
    build_sampler,
)

__all__ = [
    "SAMPLERS",
    "CenterlineSampler",
    "ForegroundSampler",
    "PatchBatches",
    "RoiSampler",
    "Sampler",
    "SamplingConfig",
    "UniformSampler",
    "build_sampler",
    "read_crop",
]
