"""ovseg raw data (``images/`` + ``labels/``) → raw dataset.

Images are ``{case}{ending}`` (3D, or 4D/vector with several channels) or already split as
``{case}_{XXXX}{ending}``; labels are ``{case}{ending}``. Cases are matched by name; images
without a label go to ``imagesTs``. Everything is written as ``.nii.gz``, one file per
channel. Label names come from ``labels`` or are inferred from the values found.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from voxseg.data.check import unique_values
from voxseg.data.dataset import write_dataset_json
from voxseg.data.importers._common import (
    as_label,
    case_id_of,
    finish_output,
    label_names,
    prepare_output,
    run_cases,
    volume_files,
    write_channels,
)
from voxseg.errors import VoxsegError
from voxseg.io import read_image, write_image
from voxseg.io.formats import read_channels

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")


def import_ovseg(
    raw: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    channel_names: list[str] | None = None,
    labels: dict[str, int] | None = None,
    overwrite: bool = False,
    num_processes: int | None = None,
) -> Path:
    """Convert an ovseg ``raw_data/<name>`` folder into a raw dataset at ``out``."""
    raw = Path(raw).absolute()
    label_files = {case_id_of(p): p for p in volume_files(raw / "labels")}
    images = _group_images(volume_files(raw / "images"), set(label_files))
    orphans = sorted(set(label_files) - set(images))
    if orphans:
        raise VoxsegError(f"{raw / 'labels'}: labels without an image: {', '.join(orphans)}")
    if not any(c in label_files for c in images):
        raise VoxsegError(f"{raw}: no case has both an image and a label")
    out = prepare_output(out, overwrite)
    jobs = [
        (case, files, label_files.get(case), out, "Tr" if case in label_files else "Ts")
        for case, files in sorted(images.items())
    ]
    results = run_cases(_convert_case, jobs, num_processes, "importing ovseg cases")
    counts = {n for n, _ in results}
    if len(counts) != 1:
        raise VoxsegError(f"{raw / 'images'}: cases have different channel counts {sorted(counts)}")
    num_channels = counts.pop()
    names = channel_names or (["zscore"] * num_channels)
    if len(names) != num_channels:
        raise VoxsegError(
            f"{len(names)} channel name(s) given but the images have {num_channels} channel(s)"
        )
    found = sorted({v for _, values in results for v in values})
    write_dataset_json(
        out,
        dict(enumerate(names)),
        label_names(found, labels),
        sum(1 for c in images if c in label_files),
        ".nii.gz",
    )
    finish_output(out)
    return out


def _group_images(files: list[Path], label_ids: set[str]) -> dict[str, list[Path]]:
    """Case → image files: ``{case}{ending}``, or ``{case}_XXXX{ending}`` sorted by channel."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in files:
        stem = case_id_of(p)
        m = _CHANNEL.match(stem)
        case = m.group(1) if m and stem not in label_ids else stem
        groups[case].append(p)
    for case, paths in groups.items():
        if len(paths) > 1 and any(_CHANNEL.match(case_id_of(p)) is None for p in paths):
            shown = ", ".join(p.name for p in paths)
            raise VoxsegError(f"case {case}: both a single image and channel files ({shown})")
        paths.sort()
    return dict(groups)


def _convert_case(
    case: str, images: list[Path], label: Path | None, out: Path, split: str
) -> tuple[int, list[int]]:
    image = read_channels(images) if len(images) > 1 else read_image(images[0])
    n = write_channels(image, out / f"images{split}", case)
    values: list[int] = []
    if label is not None:
        lab = as_label(read_image(label, is_label=True), label)
        write_image(lab, out / f"labels{split}" / f"{case}.nii.gz")
        values = unique_values(lab.array)
    return n, values
