"""The pipeline spec: ``pipeline.json`` in a self-contained, movable pipeline folder.

::

    PIPELINE/
        pipeline.json            this spec
        stages/<stage>/          one voxseg model folder per stage (config, plans, weights)
        work/                    training workspace (derived datasets, stores); deletable

A stage is a voxseg model plus how its input is derived from the image and from earlier
stages' outputs (:data:`InputSpec`). Every stage's output is a label map pasted back into
the input image's geometry; ``output`` says which stage labels make the final label map.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxseg.config import load_model, write_json
from voxseg.errors import VoxsegError
from voxseg.modelfolder import PIPELINE_SPEC as SPEC_NAME
from voxseg.modelfolder import ModelLayout
from voxseg.planning.budget import CPU_GFLOPS


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FullInput(_Strict):
    """The whole image; the stage's plan reorients and resamples it (coarse spacing, or the
    spacing that brings the median case to ``shape``)."""

    kind: Literal["full"] = "full"
    orientation: str | None = None
    spacing: list[float] | None = Field(None, description="target spacing (z, y, x) in mm")
    min_spacing: list[float] | None = Field(
        None,
        description="coarsen the plan's own spacing to at least this (z, y, x) in mm; "
        "an axis that is already coarser keeps its spacing",
    )
    shape: list[int] | None = Field(None, description="resize the median case to this shape")


class BBoxCropInput(_Strict):
    """The image cropped (on its own grid, no resampling) to the bounding box of an earlier
    stage's output, grown by ``margin_mm`` per axis (z, y, x)."""

    kind: Literal["crop_bbox"] = "crop_bbox"
    source: str
    margin_mm: list[float] = Field(default_factory=lambda: [10.0, 10.0, 10.0])


class CenterlineCropInput(_Strict):
    """SCT's crop: reorient, resample to ``spacing``, take the per-slice centre of mass of an
    earlier stage's mask as the centerline and stack a fixed in-plane ``window`` (voxels,
    y x) around it on every slice it spans (± ``margin_slices``)."""

    kind: Literal["crop_centerline"] = "crop_centerline"
    source: str
    orientation: str = "sct:RPI"
    spacing: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5])
    window: list[int] = Field(default_factory=lambda: [48, 48])
    margin_slices: int = Field(2, ge=0)


class PreviousPredictionInput(_Strict):
    """The image plus one channel per foreground label of an earlier stage (one-hot), as in
    ovseg's and nnU-Net's cascades."""

    kind: Literal["previous_prediction"] = "previous_prediction"
    source: str
    fill: list[int] = Field(
        default_factory=list,
        description="source-stage label values replaced by their nearest other label and given "
        "no channel: a structure too small for the source stage to find must not reach this "
        "stage from the ground truth while it trains",
    )


class CenterlinePatchesInput(_Strict):
    """SeqSeg's local model: trained on centerline-guided patches of the dataset (the
    sampler's ``sampler`` settings), its patch holding the ``patch_percentile`` of the
    sampled box sides; a new scan is traced from its seed file (``tracing``: tracing
    settings, e.g. ``{"max_steps": 300}``)."""

    kind: Literal["centerline_patches"] = "centerline_patches"
    sampler: dict[str, Any] = Field(default_factory=dict, description="SamplerConfig settings")
    patch_percentile: float = Field(90.0, gt=0, le=100)
    tracing: dict[str, Any] = Field(default_factory=dict, description="TracingConfig settings")


InputSpec = Annotated[
    FullInput
    | BBoxCropInput
    | CenterlineCropInput
    | PreviousPredictionInput
    | CenterlinePatchesInput,
    Field(discriminator="kind"),
]


class PlanSettings(_Strict):
    """How a stage's plan is made (``voxseg plan`` options) and which configuration trains."""

    configuration: str = "3d_fullres"
    device: Literal["cuda", "cpu"] | None = None
    patch_size: list[int] | None = None
    spacing: list[float] | None = None
    cpu_gflops_per_iteration: float = Field(
        CPU_GFLOPS, gt=0, description="the segmentation plans' CPU budget (GFLOP per iteration)"
    )
    normalization: Literal["nyul"] | None = Field(
        None, description="replace the channel's scheme (nyul: landmarks learned on training)"
    )
    num_folds: int = Field(5, ge=2)


class StageSpec(_Strict):
    """One stage: what it segments, from which input, with which model settings."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    labels: dict[str, list[int]] = Field(
        description="stage label name → the source dataset's label values it covers; "
        "stage values are 1, 2, … in this order"
    )
    input: InputSpec = Field(default_factory=FullInput)
    model: Literal["segmentation", "heatmap"] = "segmentation"
    plan: PlanSettings = Field(default_factory=PlanSettings)
    settings: list[str] = Field(default_factory=list, description="--set overrides")
    folds: list[str] = Field(default_factory=lambda: ["all"])
    train_from: Literal["labels", "predictions"] = Field(
        "labels",
        description="derive training inputs from the source stage's labels or from its "
        "cross-validated predictions",
    )
    mask_augmentation: bool = Field(
        False, description="ovseg's morphology augmentation of previous-prediction channels"
    )
    paste: bool = Field(
        False,
        description="while training, copy the stage's objects into other patches inside the "
        "previous-prediction channel of their 'inside' host (sampling.paste: more places and "
        "contrasts for a class with few objects)",
    )
    heatmap_sigma: float = Field(2.0, gt=0, description="heatmap Gaussian sigma in voxels")
    heatmap_loss: Literal["bce_dice", "mse"] = Field(
        "bce_dice", description="heatmap loss: BCE + soft Dice, or the spine repo's MSE"
    )
    output: dict[str, int] = Field(
        default_factory=dict, description="stage label name → value in the final label map"
    )
    inside: dict[str, str] = Field(
        default_factory=dict,
        description="stage label name → a label of the source stage: a predicted object of "
        "the label is kept only when most of it lies in (or within INSIDE_MARGIN_VOXELS of) "
        "the source stage's prediction of that label or of the label itself (lesions inside "
        "their organ)",
    )

    @property
    def source(self) -> str | None:
        return getattr(self.input, "source", None)

    @property
    def stage_labels(self) -> dict[str, int]:
        return {"background": 0, **{n: i + 1 for i, n in enumerate(self.labels)}}


class PipelineSpec(_Strict):
    """An ordered list of stages and the labels of the final output."""

    name: str
    recipe: str = "custom"
    dataset: str = Field("", description="the dataset it was made for (informational)")
    channel_names: dict[str, str]
    labels: dict[str, int] = Field(description="labels of the final output map")
    lesion_labels: list[str] = Field(
        default_factory=list, description="labels evaluated lesion-wise (connected components)"
    )
    lesion_overlap: float = Field(0.0, ge=0, le=1, description="IoU for a lesion match (0: any)")
    stages: list[StageSpec]

    @model_validator(mode="after")
    def _check(self) -> PipelineSpec:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise ValueError(f"stage {stage.name!r} appears twice")
            if stage.source is not None and stage.source not in seen:
                raise ValueError(
                    f"stage {stage.name!r} reads {stage.source!r}, which is not an earlier stage"
                )
            for label, host in stage.inside.items():
                if label not in stage.labels:
                    raise ValueError(f"stage {stage.name!r}: 'inside' names unknown {label!r}")
                source = next((s for s in self.stages if s.name == stage.source), None)
                if source is None or host not in source.labels:
                    raise ValueError(
                        f"stage {stage.name!r}: 'inside' needs {host!r} to be a label of the "
                        f"stage it reads (source: {stage.source!r})"
                    )
            for label, value in stage.output.items():
                if label not in stage.labels:
                    raise ValueError(f"stage {stage.name!r} outputs unknown label {label!r}")
                if value not in self.labels.values():
                    raise ValueError(f"stage {stage.name!r}: output value {value} not in labels")
            seen.add(stage.name)
        if not self.stages:
            raise ValueError("a pipeline needs at least one stage")
        return self

    def stage(self, name: str) -> StageSpec:
        for s in self.stages:
            if s.name == name:
                return s
        raise VoxsegError(
            f"pipeline {self.name!r} has no stage {name!r}; stages: "
            + ", ".join(s.name for s in self.stages)
        )


def stage_dir(pipeline_dir: str | os.PathLike[str], stage: str) -> Path:
    """The model folder of a stage inside the pipeline folder."""
    return ModelLayout(pipeline_dir).stage_dir(stage)


def work_dir(pipeline_dir: str | os.PathLike[str]) -> Path:
    """The training workspace inside the pipeline folder (may be deleted after training)."""
    return Path(pipeline_dir) / "work"


def read_spec(pipeline_dir: str | os.PathLike[str]) -> PipelineSpec:
    path = Path(pipeline_dir) / SPEC_NAME
    if not path.is_file():
        raise VoxsegError(
            f"{path}: not a pipeline folder (no {SPEC_NAME}); create one with "
            "'voxseg pipeline init RECIPE DATASET OUT'"
        )
    return load_model(PipelineSpec, path)


def write_spec(spec: PipelineSpec, pipeline_dir: str | os.PathLike[str]) -> Path:
    path = Path(pipeline_dir) / SPEC_NAME
    write_json(path, spec)
    return path
