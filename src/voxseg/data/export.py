"""Export a raw dataset as nnU-Net v2 raw data (``DatasetXXX_Name``).

nnU-Net's rules (``nnunetv2/experiment_planning/verify_dataset_integrity.py`` and its
reader/writer registry): ``dataset.json`` with ``channel_names``, ``labels``,
``numTraining``, ``file_ending``; case ids are the image names minus ``_XXXX`` and the
ending; label values consecutive from 0 (``ignore`` the highest); the file ending must have
a reader (SimpleITK: ``.nii.gz .nrrd .mha``; nibabel: ``.nii``; 2D natural images:
``.png .bmp .tif``). Files in other formats are rewritten as NIfTI, one file per channel.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from voxseg.config import write_json
from voxseg.data.check import ensure_valid
from voxseg.data.dataset import Dataset
from voxseg.errors import VoxsegError

#: File endings nnU-Net v2 reads as they are.
NNUNET_ENDINGS = (".nii.gz", ".nrrd", ".mha", ".nii", ".png", ".bmp")

#: Keys of dataset.json nnU-Net v2 reads.
NNUNET_KEYS = (
    "channel_names",
    "labels",
    "numTraining",
    "file_ending",
    "regions_class_order",
    "overwrite_image_reader_writer",
)


def export_nnunet(
    root: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    dataset_id: int,
    *,
    name: str | None = None,
    overwrite: bool = False,
    num_processes: int | None = None,
) -> Path:
    """Write ``out_dir/Dataset{id:03d}_{name}`` in nnU-Net v2 raw format; return its path."""
    root = Path(root).absolute()
    ensure_valid(root, num_processes=num_processes)
    ds = Dataset(root)
    info = ds.info
    if not 1 <= dataset_id <= 999:
        raise VoxsegError(f"nnU-Net dataset id must be 1..999, got {dataset_id}")
    values = info.label_values
    if values != list(range(len(values))):
        raise VoxsegError(
            f"{root / 'dataset.json'}: nnU-Net needs consecutive label values 0, 1, 2, ...; "
            f"this dataset has {values}. Renumber the labels first."
        )
    name = _clean_name(name or _short_name(root.name))
    out_dir = Path(out_dir).absolute()
    target = out_dir / f"Dataset{dataset_id:03d}_{name}"
    _check_target(out_dir, target, dataset_id, overwrite)

    keep = info.file_ending in NNUNET_ENDINGS
    ending = info.file_ending if keep else ".nii.gz"
    tmp = out_dir / f".{target.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    splits = [s for s in ("Tr", "Ts") if (root / f"images{s}").is_dir()]
    for split in splits:
        for case in ds.cases(split):
            if keep:
                _copy_case(ds, case, split, tmp)
            else:
                _convert_case(ds, case, split, tmp, ending)
    dataset_json: dict[str, Any] = {
        "channel_names": info.channel_names,
        "labels": info.labels,
        "numTraining": len(ds.case_ids("Tr")),
        "file_ending": ending,
    }
    if info.regions_class_order is not None:
        dataset_json["regions_class_order"] = info.regions_class_order
    if ending == ".nii":
        # nnU-Net would pick its nibabel reader for .nii; keep SimpleITK's geometry handling
        dataset_json["overwrite_image_reader_writer"] = "SimpleITKIO"
    write_json(tmp / "dataset.json", dataset_json)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _copy_case(ds: Dataset, case, split: str, out: Path) -> None:
    for src in case.images:
        _copy(src, out / f"images{split}" / src.name)
    if case.label is not None:
        _copy(case.label, out / f"labels{split}" / case.label.name)


def _convert_case(ds: Dataset, case, split: str, out: Path, ending: str) -> None:
    """Rewrite a case as NIfTI, one file per channel (nnU-Net reads vector pixels wrongly)."""
    from voxseg.io import write_image

    image, label = ds.load_case(case)
    for c in range(image.num_channels):
        write_image(image.channel(c), out / f"images{split}" / f"{case.case_id}_{c:04d}{ending}")
    if label is not None:
        write_image(label, out / f"labels{split}" / f"{case.case_id}{ending}")


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _short_name(folder: str) -> str:
    m = re.fullmatch(r"Dataset\d+_(.+)", folder) or re.fullmatch(r"Task\d+_(.+)", folder)
    return m.group(1) if m else folder


def _clean_name(name: str) -> str:
    clean = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")
    if not clean:
        raise VoxsegError(f"dataset name {name!r} has no usable characters")
    return clean


def _check_target(out_dir: Path, target: Path, dataset_id: int, overwrite: bool) -> None:
    """Refuse an existing target (unless told) and an id nnU-Net would find twice."""
    if target.exists() and not overwrite:
        raise VoxsegError(f"{target}: already exists (use --overwrite to replace it)")
    if out_dir.is_dir():
        clash = [
            d.name
            for d in out_dir.iterdir()
            if d.is_dir() and d != target and d.name.startswith(f"Dataset{dataset_id:03d}_")
        ]
        if clash:
            raise VoxsegError(
                f"{out_dir}: dataset id {dataset_id} is already used by {', '.join(clash)}; "
                "nnU-Net needs unique ids (choose another --id)"
            )
