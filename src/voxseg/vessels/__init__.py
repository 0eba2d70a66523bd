"""Vessels: centerlines from masks, centerline-guided patch datasets, SeqSeg-style tracing
from seed points, and centerline metrics."""

from voxseg.vessels.centerline import (
    Centerline,
    CenterlineBranch,
    centerline_polydata,
    extract_centerline,
    read_centerline_json,
)
from voxseg.vessels.metrics import (
    centerline_distance,
    centerline_metrics,
    centerline_overlap,
    distal_recall,
)
from voxseg.vessels.sampling import SamplerConfig, sample_case, sample_dataset, walk_centerline
from voxseg.vessels.seeds import Seed, read_seeds
from voxseg.vessels.segmenters import LocalSegmenter, OracleSegmenter, PredictorSegmenter
from voxseg.vessels.tracing import TraceResult, TraceStep, TracingConfig, trace

__all__ = [
    "Centerline",
    "CenterlineBranch",
    "LocalSegmenter",
    "OracleSegmenter",
    "PredictorSegmenter",
    "SamplerConfig",
    "Seed",
    "TraceResult",
    "TraceStep",
    "TracingConfig",
    "centerline_distance",
    "centerline_metrics",
    "centerline_overlap",
    "centerline_polydata",
    "distal_recall",
    "extract_centerline",
    "read_centerline_json",
    "read_seeds",
    "sample_case",
    "sample_dataset",
    "trace",
    "walk_centerline",
]
