"""Post-processing of label maps: registered steps built from config dicts, and the choice of
steps on cross-validation predictions."""

from voxseg.postprocess.determine import determine_postprocessing, load_postprocessing
from voxseg.postprocess.steps import (
    POSTPROCESSING,
    FillHoles,
    KeepLargestComponent,
    PostprocessingStep,
    RemoveSmallComponents,
    apply_postprocessing,
    build_step,
)

__all__ = [
    "POSTPROCESSING",
    "FillHoles",
    "KeepLargestComponent",
    "PostprocessingStep",
    "RemoveSmallComponents",
    "apply_postprocessing",
    "build_step",
    "determine_postprocessing",
    "load_postprocessing",
]
