"""Evaluation: per-class and per-region metrics (overlap, volume, surface distances), lesion-wise
detection, and folder evaluation with ``summary.json`` and ``metrics.csv``."""

from voxseg.evaluation.evaluate import (
    evaluate_case,
    evaluate_folder,
    label_mask,
    pair_cases,
    summarise,
    summary_table,
    write_summary,
)
from voxseg.evaluation.metrics import (
    ALL_METRICS,
    LesionDetection,
    average_symmetric_surface_distance,
    binary_metrics,
    hausdorff,
    lesion_detection,
    normalised_surface_dice,
    overlap_metrics,
    surface_metrics,
)
from voxseg.evaluation.surface import SurfaceDistances, surface_distances

__all__ = [
    "ALL_METRICS",
    "LesionDetection",
    "SurfaceDistances",
    "average_symmetric_surface_distance",
    "binary_metrics",
    "evaluate_case",
    "evaluate_folder",
    "hausdorff",
    "label_mask",
    "lesion_detection",
    "normalised_surface_dice",
    "overlap_metrics",
    "pair_cases",
    "summarise",
    "summary_table",
    "surface_distances",
    "surface_metrics",
    "write_summary",
]
