"""The plan: every decision planning makes, with the rule behind each value.

Written to ``preprocessed/<dataset>/plans/<plan_name>.json``; several named plans coexist.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from voxseg.config import load_model, write_json
from voxseg.errors import VoxsegError
from voxseg.nets.topology import Topology

CONFIGURATIONS = ("2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres")


class ChannelNormalization(BaseModel):
    """How one input channel is normalised (a name in ``NORMALIZATIONS`` + its parameters)."""

    channel: int
    channel_name: str
    scheme: str
    params: dict[str, Any] = Field(default_factory=dict)
    rule: str = ""


class ResamplingPlan(BaseModel):
    """Interpolation orders; ``separate_z`` is decided per case from its own spacing."""

    order_image: int = 3
    order_z_image: int = 0
    labels: str = "per-class linear interpolation then argmax (resample_labels)"
    anisotropy_threshold: float = 3.0


class ConfigurationPlan(BaseModel):
    """One configuration (``2d``, ``3d_fullres``, ...): what to preprocess and train."""

    name: str
    spatial_dims: Literal[2, 3]
    spacing: list[float] = Field(description="target spacing (z, y, x); 2d: (y, x)")
    median_shape: list[int] = Field(description="median case shape at the target spacing")
    patch_size: list[int]
    batch_size: int = Field(ge=1)
    network: str = "unet"
    topology: Topology
    resampling: ResamplingPlan = Field(default_factory=ResamplingPlan)
    data_from: str = Field(description="configuration whose preprocessed data this one reads")
    previous_stage: str | None = None
    next_stage: str | None = None
    estimated_gpu_memory_gb: float | None = None
    estimated_training_gflops: float | None = None
    mirror_axes: list[int] | None = Field(
        None,
        description="patch axes mirroring may flip, in training and test-time augmentation "
        "(None: every axis; []: none)",
    )
    batch_dice: bool | None = Field(
        None,
        description="Dice over the whole batch rather than per sample, for losses that take "
        "it when the model config leaves loss.batch_dice unset (None: the loss's default)",
    )
    explanations: dict[str, str] = Field(default_factory=dict)


class Plans(BaseModel):
    """A named plan for one dataset."""

    plan_name: str = "default"
    dataset: str
    voxseg_version: str = ""
    device: Literal["cuda", "cpu"] = "cuda"
    gpu_memory_gb: float = 8.0
    orientation: str | None = None
    channel_names: dict[str, str]
    labels: dict[str, int | list[int]]
    num_cases: int
    original_median_spacing: list[float]
    original_median_shape: list[int]
    use_mask_for_norm: bool = False
    normalization: list[ChannelNormalization]
    configurations: dict[str, ConfigurationPlan]
    explanations: dict[str, str] = Field(default_factory=dict)

    def configuration(self, name: str) -> ConfigurationPlan:
        if name not in self.configurations:
            raise VoxsegError(
                f"plan {self.plan_name!r} of {self.dataset} has no configuration {name!r}; "
                f"it has: {', '.join(self.configurations)}"
            )
        return self.configurations[name]


def plans_path(preprocessed_dataset_dir: str | os.PathLike[str], plan_name: str) -> Path:
    return Path(preprocessed_dataset_dir) / "plans" / f"{plan_name}.json"


def write_plans(plans: Plans, preprocessed_dataset_dir: str | os.PathLike[str]) -> Path:
    path = plans_path(preprocessed_dataset_dir, plans.plan_name)
    write_json(path, plans)
    return path


def read_plans(preprocessed_dataset_dir: str | os.PathLike[str], plan_name: str) -> Plans:
    path = plans_path(preprocessed_dataset_dir, plan_name)
    if not path.is_file():
        existing = (
            sorted(p.stem for p in path.parent.glob("*.json")) if path.parent.is_dir() else []
        )
        raise VoxsegError(
            f"{path}: no plan {plan_name!r}; run 'voxseg plan' first"
            + (f" (existing plans: {', '.join(existing)})" if existing else "")
        )
    return load_model(Plans, path)
