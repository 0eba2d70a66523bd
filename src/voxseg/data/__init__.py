"""Raw datasets: the nnU-Net v2 format, validation, importers, exporters, splits."""

from voxseg.data.check import CheckReport, Problem, check_dataset, ensure_valid
from voxseg.data.dataset import (
    DATASET_FOLDERS,
    SUPPORTED_ENDINGS,
    Case,
    Dataset,
    DatasetInfo,
    read_dataset_info,
    write_dataset_json,
)
from voxseg.data.export import export_nnunet
from voxseg.data.splits import get_splits, kfold_splits, load_or_create_splits, load_splits

__all__ = [
    "DATASET_FOLDERS",
    "SUPPORTED_ENDINGS",
    "Case",
    "CheckReport",
    "Dataset",
    "DatasetInfo",
    "Problem",
    "check_dataset",
    "ensure_valid",
    "export_nnunet",
    "get_splits",
    "kfold_splits",
    "load_or_create_splits",
    "load_splits",
    "read_dataset_info",
    "write_dataset_json",
]
