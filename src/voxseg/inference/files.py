"""Predicting files and folders: input discovery, part splitting, skip-finished, atomic
outputs, and failures that are reported without stopping the other cases."""

from __future__ import annotations

import os
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voxseg.errors import VoxsegError
from voxseg.io import Image, file_ending, read_image, write_image
from voxseg.locks import LOCK_NAME, folder_lock

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_DICOM_SUFFIXES = {".dcm", ".ima", ""}


@dataclass
class CaseInput:
    """One case to predict: its channel files (or a DICOM folder) and the output ending."""

    case_id: str
    paths: list[Path]
    ending: str

    def read(self) -> Image:
        images = [read_image(p) for p in self.paths]
        if len(images) == 1:
            return images[0]
        first = images[0]
        arrays = []
        for im in images:
            arrays.extend(im.array if im.array.ndim == 4 else [im.array])
        return Image(np.stack(arrays), first.spacing, first.origin, first.direction)


@dataclass
class PredictReport:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def _stem(path: Path) -> str:
    ending = file_ending(path)
    return path.name[: -len(ending)] if ending else path.name


def _is_dicom_folder(folder: Path) -> bool:
    files = [p for p in folder.iterdir() if p.is_file()]
    return (
        bool(files)
        and all(p.suffix.lower() in _DICOM_SUFFIXES for p in files)
        and any(_looks_like_dicom(p) for p in files[:3])
    )


def _looks_like_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def discover_inputs(path: str | os.PathLike[str]) -> list[CaseInput]:
    """Cases in ``path``: a file, a DICOM series folder, a folder of DICOM series folders,
    a folder in nnU-Net naming (``case_0000.nii.gz`` …) or one file per case. The number of
    channels is checked when a case is read (one RGB file holds three)."""
    path = Path(path)
    if not path.exists():
        raise VoxsegError(f"{path}: input not found")
    if path.is_file():
        return [CaseInput(_strip_channel(_stem(path)), [path], file_ending(path))]
    if _is_dicom_folder(path):
        return [CaseInput(path.name, [path], ".nii.gz")]
    subdirs = sorted(p for p in path.iterdir() if p.is_dir() and _is_dicom_folder(p))
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    cases: list[CaseInput] = [CaseInput(d.name, [d], ".nii.gz") for d in subdirs]
    grouped: dict[str, dict[int, Path]] = {}
    singles: list[Path] = []
    for f in files:
        if not file_ending(f):
            continue
        m = _CHANNEL.match(_stem(f))
        if m:
            grouped.setdefault(m["case"], {})[int(m["channel"])] = f
        else:
            singles.append(f)
    for case, channels in sorted(grouped.items()):
        expected = list(range(len(channels)))
        if sorted(channels) != expected:
            raise VoxsegError(
                f"{path}: case {case!r} has channel files {sorted(channels)}; channels must be "
                f"numbered _0000, _0001, … without gaps"
            )
        ordered = [channels[c] for c in expected]
        cases.append(CaseInput(case, ordered, file_ending(ordered[0])))
    cases.extend(CaseInput(_stem(f), [f], file_ending(f)) for f in singles)
    if not cases:
        raise VoxsegError(f"{path}: no images found")
    return cases


def _strip_channel(stem: str) -> str:
    m = _CHANNEL.match(stem)
    return m["case"] if m else stem


def select_part(cases: list[CaseInput], num_parts: int, part_id: int) -> list[CaseInput]:
    """Every ``num_parts``-th case starting at ``part_id`` (for parallel jobs)."""
    if not 0 <= part_id < num_parts:
        raise VoxsegError(f"--part-id must be in 0..{num_parts - 1}, got {part_id}")
    return cases[part_id::num_parts]


def output_path(case: CaseInput, output_dir: Path, fmt: str | None) -> Path:
    ending = fmt if fmt else case.ending
    if not ending.startswith("."):
        ending = "." + ending
    return output_dir / f"{case.case_id}{ending}"


def predict_folder(
    predictor,
    inputs: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    save_probabilities: bool = False,
    fmt: str | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    overwrite: bool = False,
    overlays: bool = False,
    quiet: bool = False,
) -> PredictReport:
    """Predict every case under ``inputs`` into ``output_dir``; see :class:`PredictReport`."""
    from rich.progress import Progress

    output_dir = Path(output_dir)
    cases = select_part(discover_inputs(inputs), num_parts, part_id)
    report = PredictReport()
    lock = LOCK_NAME if num_parts == 1 else f".voxseg-part{part_id}of{num_parts}.lock"
    with (
        folder_lock(output_dir, "prediction folder", name=lock),
        Progress(disable=quiet) as progress,
    ):
        task = progress.add_task("predicting", total=len(cases))
        for case in cases:
            out = output_path(case, output_dir, fmt)
            if out.exists() and not overwrite:
                report.skipped.append(case.case_id)
                progress.advance(task)
                continue
            progress.update(task, description=f"predicting {case.case_id}")
            try:
                image = case.read()
                pred = predictor.predict(image, probabilities=save_probabilities)
                if save_probabilities and pred.probabilities is not None:
                    save_probabilities_npz(output_dir / f"{case.case_id}.npz", pred.probabilities)
                if overlays:
                    from voxseg.inference.overlay import save_overlay

                    save_overlay(
                        output_dir / "overlays" / f"{case.case_id}.png", image, pred.segmentation
                    )
                write_image(pred.segmentation, out)
                report.done.append(case.case_id)
            except Exception as exc:  # noqa: BLE001 — one bad case must not stop the others
                detail = str(exc) if isinstance(exc, VoxsegError) else traceback.format_exc(limit=3)
                report.failed[case.case_id] = detail
                progress.console.print(f"[red]failed[/] {case.case_id}: {exc}")
            progress.advance(task)
    return report


def save_probabilities_npz(path: Path, probabilities: Image) -> None:
    """Compressed per-class probabilities (``probabilities`` ``[C, z, y, x]``) with the
    geometry, as nnU-Net's ``--save_probabilities`` ``.npz`` (no pickle)."""
    g = probabilities.geometry
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(
        tmp,
        probabilities=probabilities.array,
        spacing=np.asarray(g.spacing),
        origin=np.asarray(g.origin),
        direction=np.asarray(g.direction),
    )
    os.replace(tmp, path)
