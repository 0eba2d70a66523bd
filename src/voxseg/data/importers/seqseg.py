"""SeqSeg data (``images/``, ``truths/``, ``centerlines/*.vtp``, optional ``seeds/``) →
raw dataset with ``centerlines/{case}.vtp`` and ``seeds/`` kept.

Images, truths and centerlines share the case name. Truth masks are binarised (vessel = 1).
Centerlines must carry ``MaximumInscribedSphereRadius`` (VMTK convention); they are copied
unchanged after checking that they lie inside their vessel mask (a centerline in RAS instead
of the image's LPS space, the usual mistake, lands outside it).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from voxseg.data.dataset import write_dataset_json
from voxseg.data.importers._common import (
    case_id_of,
    finish_output,
    prepare_output,
    run_cases,
    volume_files,
    write_channels,
)
from voxseg.errors import VoxsegError
from voxseg.io import Image, read_image, read_vtp, write_image
from voxseg.io.vtp import CENTERLINE_RADIUS

#: Share of centerline points that must fall inside the (dilated) vessel mask.
MIN_INSIDE = 0.5


def import_seqseg(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    channel_name: str = "CT",
    label_name: str = "vessel",
    check_alignment: bool = True,
    overwrite: bool = False,
    num_processes: int | None = None,
) -> Path:
    """Convert a SeqSeg data folder into a raw dataset at ``out``; return ``out``."""
    data = Path(data).absolute()
    images = {case_id_of(p): p for p in volume_files(data / "images")}
    truths = {case_id_of(p): p for p in volume_files(data / "truths")}
    orphans = sorted(set(truths) - set(images))
    if orphans:
        raise VoxsegError(f"{data / 'truths'}: masks without an image: {', '.join(orphans)}")
    if not truths:
        raise VoxsegError(f"{data / 'truths'}: no masks")
    lines_dir = data / "centerlines"
    lines = {p.stem: p for p in lines_dir.glob("*.vtp")} if lines_dir.is_dir() else {}
    stray = sorted(set(lines) - set(truths))
    if stray:
        raise VoxsegError(f"{lines_dir}: centerlines of no training case: {', '.join(stray)}")
    out = prepare_output(out, overwrite)
    jobs = [
        (
            case,
            images[case],
            truths.get(case),
            lines.get(case),
            out,
            check_alignment,
        )
        for case in sorted(images)
    ]
    run_cases(_convert_case, jobs, num_processes, "importing SeqSeg cases")
    if (data / "seeds").is_dir():
        shutil.copytree(data / "seeds", out / "seeds")
    write_dataset_json(
        out, {0: channel_name}, {"background": 0, label_name: 1}, len(truths), ".nii.gz"
    )
    finish_output(out)
    return out


def _convert_case(
    case: str,
    image: Path,
    truth: Path | None,
    centerline: Path | None,
    out: Path,
    check_alignment: bool,
) -> str:
    split = "Tr" if truth is not None else "Ts"
    img = read_image(image)
    write_channels(img, out / f"images{split}", case)
    if truth is None:
        return case
    mask = read_image(truth, is_label=True)
    mask = mask.with_array((mask.array > 0).astype(np.uint8))
    write_image(mask, out / f"labels{split}" / f"{case}.nii.gz")
    if centerline is not None:
        poly = read_vtp(centerline)
        if CENTERLINE_RADIUS not in poly.point_data:
            raise VoxsegError(
                f"{centerline}: no point array {CENTERLINE_RADIUS!r} (SeqSeg needs the radius; "
                "extract centerlines with VMTK or SeqSeg's centerlines.py)"
            )
        if check_alignment:
            _check_inside(poly.points, mask, centerline)
        dst = out / "centerlines" / f"{case}.vtp"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(centerline, dst)
    return case


def _check_inside(points: np.ndarray, mask: Image, path: Path) -> None:
    """Most centerline points must fall in the mask (one voxel of slack)."""
    if len(points) == 0:
        raise VoxsegError(f"{path}: centerline has no points")
    from scipy.ndimage import binary_dilation

    grown = binary_dilation(mask.array > 0, iterations=1)
    idx = np.rint(mask.geometry.physical_to_index(points)).astype(np.int64)
    ok = np.all((idx >= 0) & (idx < np.array(mask.shape)), axis=1)
    inside = np.zeros(len(points), dtype=bool)
    inside[ok] = grown[tuple(idx[ok].T)]
    share = float(inside.mean())
    if share < MIN_INSIDE:
        raise VoxsegError(
            f"{path}: only {share:.0%} of the centerline points lie inside the vessel mask; "
            "is it in another space (RAS instead of the image's LPS)? "
            "(--no-check-alignment to import anyway)"
        )
