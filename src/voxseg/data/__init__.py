"""Raw datasets: the nnU-Net v2 format, validation, importers, exporters, splits."""

from voxseg.data.dataset import (
    SUPPORTED_ENDINGS,
    Case,
    Dataset,
    DatasetInfo,
    read_dataset_info,
    write_dataset_json,
)

__all__ = [
    "SUPPORTED_ENDINGS",
    "Case",
    "Dataset",
    "DatasetInfo",
    "read_dataset_info",
    "write_dataset_json",
]
