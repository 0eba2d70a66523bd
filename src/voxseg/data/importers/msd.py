"""Medical Segmentation Decathlon tasks → raw dataset.

MSD ``dataset.json``: ``modality`` (index → name), ``labels`` (index → name), ``training``
(list of ``{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}``), ``test``
(list of paths). Multi-modal images are 4D NIfTI; each modality becomes one channel file
``{case}_{XXXX}.nii.gz`` with the geometry kept. Labels are copied unchanged.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from voxseg.config import read_json
from voxseg.data.dataset import write_dataset_json
from voxseg.data.importers._common import (
    case_id_of,
    finish_output,
    prepare_output,
    run_cases,
    write_channels,
)
from voxseg.errors import VoxsegError
from voxseg.io import file_ending, read_image, write_image


def import_msd(
    task_folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    num_processes: int | None = None,
) -> Path:
    """Convert an MSD ``TaskXX_Name`` folder into a raw dataset at ``out``; return ``out``."""
    task = Path(task_folder).absolute()
    meta = read_json(task / "dataset.json")
    for key in ("modality", "labels", "training"):
        if key not in meta:
            raise VoxsegError(f"{task / 'dataset.json'}: no {key!r} (is this an MSD task?)")
    try:
        modality = {int(k): str(v) for k, v in meta["modality"].items()}
        labels = {str(v): int(k) for k, v in meta["labels"].items()}
    except (AttributeError, ValueError) as exc:
        raise VoxsegError(
            f"{task / 'dataset.json'}: modality/labels must map index → name"
        ) from exc
    if sorted(modality) != list(range(len(modality))):
        raise VoxsegError(f"{task / 'dataset.json'}: modality indices must be 0..N-1")
    labels = {("background" if v == 0 else k): v for k, v in labels.items()}
    out = prepare_output(out, overwrite)

    jobs = []
    for entry in meta["training"]:
        image, label = _resolve(task, entry["image"]), _resolve(task, entry["label"])
        jobs.append((image, label, out, "Tr", len(modality)))
    for entry in meta.get("test", []):
        path = entry["image"] if isinstance(entry, dict) else entry
        jobs.append((_resolve(task, path), None, out, "Ts", len(modality)))
    run_cases(_convert_case, jobs, num_processes, "importing MSD cases")
    extra = {k: meta[k] for k in ("name", "description") if isinstance(meta.get(k), str)}
    write_dataset_json(
        out,
        {i: modality[i] for i in sorted(modality)},
        dict(sorted(labels.items(), key=lambda kv: kv[1])),
        len(meta["training"]),
        ".nii.gz",
        **extra,
    )
    finish_output(out)
    return out


def _resolve(task: Path, rel: str) -> Path:
    path = (task / rel).resolve()
    if not path.is_file():
        raise VoxsegError(f"{path}: listed in {task / 'dataset.json'} but not found")
    return path


def _convert_case(image: Path, label: Path | None, out: Path, split: str, channels: int) -> str:
    case_id = case_id_of(image)
    img = read_image(image)
    if img.num_channels != channels:
        raise VoxsegError(
            f"{image}: has {img.num_channels} channel(s) but dataset.json lists {channels} "
            "modalities"
        )
    write_channels(img, out / f"images{split}", case_id)
    if label is not None:
        dst = out / f"labels{split}" / f"{case_id}.nii.gz"
        if file_ending(label) == ".nii.gz":
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(label, dst)
        else:
            write_image(read_image(label), dst)
    return case_id
