"""Multi-stage pipelines: localise → crop → segment, cascades, heatmap localisation.

``voxseg pipeline init cord-lesion DATASET OUT`` writes a ``pipeline.json``;
``train_pipeline(OUT, DATASET)`` trains its stages with voxseg's own flow;
``PipelineRunner(OUT).predict(image)`` runs them on a new scan and returns every output in
the scan's own geometry.
"""

from voxseg.pipelines.derive import Derived, crop_bbox, crop_centerline, derive, stage_label_map
from voxseg.pipelines.evaluate import evaluate_pipeline, lesion_summary
from voxseg.pipelines.finetune import finetune_pipeline
from voxseg.pipelines.predict import PipelineResult, PipelineRunner, predict_pipeline_folder
from voxseg.pipelines.recipes import RECIPES, init_pipeline
from voxseg.pipelines.spec import (
    BBoxCropInput,
    CenterlineCropInput,
    FullInput,
    PipelineSpec,
    PlanSettings,
    PreviousPredictionInput,
    StageSpec,
    read_spec,
    stage_dir,
    write_spec,
)
from voxseg.pipelines.train import train_pipeline, train_stage

__all__ = [
    "RECIPES",
    "BBoxCropInput",
    "CenterlineCropInput",
    "Derived",
    "FullInput",
    "PipelineResult",
    "PipelineRunner",
    "PipelineSpec",
    "PlanSettings",
    "PreviousPredictionInput",
    "StageSpec",
    "crop_bbox",
    "crop_centerline",
    "derive",
    "evaluate_pipeline",
    "finetune_pipeline",
    "init_pipeline",
    "lesion_summary",
    "predict_pipeline_folder",
    "read_spec",
    "stage_dir",
    "stage_label_map",
    "train_pipeline",
    "train_stage",
    "write_spec",
]
