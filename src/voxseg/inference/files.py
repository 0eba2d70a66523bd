"""Predicting files and folders: input discovery, part splitting, skip-finished, atomic
outputs, and failures that are reported without stopping the other cases."""

from __future__ import annotations

import logging
import os
import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.errors import VoxsegError
from voxseg.io import Image, file_ending, read_image, read_image_on_disk, write_image
from voxseg.io.dicom import (
    DicomHeader,
    DicomSeries,
    assemble_series,
    choose_series,
    folder_groups,
    has_dicom_preamble,
    list_series,
    read_series_pixels,
    series_matches,
)
from voxseg.io.formats import SUPPORTED_ENDINGS as IMAGE_ENDINGS
from voxseg.locks import LOCK_NAME, folder_lock
from voxseg.preprocessing.memory_guard import check_predict
from voxseg.progress import ProgressReporter, note_step

log = logging.getLogger(__name__)

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_DICOM_SUFFIXES = {".dcm", ".ima", ""}


#: ``--output-type`` values besides the default image file (DICOM input only).
DICOM_OUTPUT_TYPES = ("dicom-seg", "rtstruct")
_OUTPUT_SUFFIX = {"dicom-seg": "_SEG.dcm", "rtstruct": "_RTSTRUCT.dcm"}


@dataclass
class CaseInput:
    """One case to predict: its channel files (or a DICOM folder with the slice headers of
    the series to read, found when the inputs were discovered) and the output ending."""

    case_id: str
    paths: list[Path]
    ending: str
    series: list[DicomHeader] | None = None

    @property
    def is_dicom(self) -> bool:
        return len(self.paths) == 1 and self.paths[0].is_dir()

    def read_dicom(self) -> tuple[Image, DicomSeries]:
        """The image and its series (slice headers, for writers that reference them)."""
        folder = self.paths[0]
        headers = self.series or choose_series(folder_groups(folder), None, str(folder))
        series = assemble_series(headers, source=str(folder))
        return read_series_pixels(series), series

    def read(self, on_disk: Path | None = None) -> Image:
        """The case's image; ``on_disk`` (a scratch folder): a single NIfTI file keeps its
        voxels on disk there (:func:`voxseg.io.read_image_on_disk`), for readers of small
        parts of a large image."""
        if self.is_dicom:
            return self.read_dicom()[0]
        if on_disk is not None and len(self.paths) == 1:
            return read_image_on_disk(self.paths[0], on_disk)
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


def _is_dicom_folder(folder: Path, recursive: bool = False) -> bool:
    """A folder holding DICOM files (beside any JSON/CSV/text); with ``recursive``, in it
    or in any folder below (a patient folder of study/series folders)."""
    found = folder.rglob("*") if recursive else folder.iterdir()
    checked = 0
    for p in found:
        if p.name.startswith(".") or p.suffix.lower() not in _DICOM_SUFFIXES or not p.is_file():
            continue
        if has_dicom_preamble(p):
            return True
        checked += 1
        if checked >= 3 and not recursive:
            return False
    return False


def _dicom_cases(folder: Path, series: Sequence[str]) -> list[CaseInput]:
    """One case per image series of ``folder`` that ``series`` selects (RTSTRUCT, SEG and
    other objects left out): its only one without selectors, every one with ``all``, those
    matching a selector (:func:`voxseg.io.dicom.series_matches`) otherwise. The folder name
    is the case id, with the SeriesNumber when the folder holds several series."""
    try:
        groups = folder_groups(folder)
    except VoxsegError:
        return []  # only non-image objects (an RTSTRUCT folder beside the scan)
    if "all" in series:
        chosen = list(groups.values())
    elif series:
        chosen = [hs for hs in groups.values() if any(series_matches(s, hs[0]) for s in series)]
    else:
        chosen = [choose_series(groups, None, str(folder))]
    if len(groups) == 1:
        return [CaseInput(folder.name, [folder], ".nii.gz", hs) for hs in chosen]
    cases = []
    for i, hs in enumerate(chosen):
        number = hs[0].series_number
        suffix = f"S{number}" if number is not None else f"{i}"
        cases.append(CaseInput(f"{folder.name}_{suffix}", [folder], ".nii.gz", hs))
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        for i, c in enumerate(cases):
            c.case_id = f"{folder.name}_{i}"
    return cases


def discover_inputs(path: str | os.PathLike[str], series: Sequence[str] = ()) -> list[CaseInput]:
    """Cases in ``path``: a file, a DICOM series folder, a folder of DICOM series folders,
    a folder in nnU-Net naming (``case_0000.nii.gz`` …) or one file per case. The number of
    channels is checked when a case is read (one RGB file holds three).

    A DICOM folder holding several image series needs ``series``: selectors such as
    ``uid:1.2.3`` or ``desc:*abdomen*`` (:func:`voxseg.io.dicom.series_matches`), or
    ``all`` to predict each; without them the error lists every such folder's series.
    """
    path = Path(path)
    if not path.exists():
        raise VoxsegError(f"{path}: input not found")
    if path.is_file():
        return [CaseInput(_strip_channel(_stem(path)), [path], file_ending(path))]
    series = list(series)
    for s in series:
        if s != "all":
            series_matches(s, DicomHeader(path=""))  # an unknown key is an error now
    if _is_dicom_folder(path):
        folders = [path]
        files: list[Path] = []
    else:
        folders = sorted(
            p for p in path.iterdir() if p.is_dir() and _is_dicom_folder(p, recursive=True)
        )
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    cases = _series_cases(path, folders, series)
    grouped: dict[str, dict[int, Path]] = {}
    singles: list[Path] = []
    for f in files:
        if file_ending(f) not in IMAGE_ENDINGS:  # dataset.json, labels.csv, notes …
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


def _series_cases(path: Path, folders: list[Path], series: list[str]) -> list[CaseInput]:
    """The cases of the DICOM ``folders`` (see :func:`_dicom_cases`); one error names every
    folder that holds several series when ``series`` is empty, and every selector that
    matched no series."""
    cases: list[CaseInput] = []
    ambiguous: list[str] = []
    for folder in folders:
        try:
            cases.extend(_dicom_cases(folder, series))
        except VoxsegError as exc:
            ambiguous.append(str(exc))
    if ambiguous:
        raise VoxsegError(
            "\n".join(ambiguous)
            + "\nchoose with --series-uid UID or --series desc:PATTERN (number:N, modality:CT), "
            "or predict every series with --series all"
        )
    unmatched = [
        s
        for s in series
        if s != "all" and not any(series_matches(s, c.series[0]) for c in cases if c.series)
    ]
    if unmatched:
        found = [hs for folder in folders for hs in _groups_or_none(folder)]
        raise VoxsegError(
            f"{path}: no DICOM series matches {', '.join(map(repr, unmatched))}; "
            + (f"the series found:\n{list_series(found)}" if found else "no DICOM series found")
        )
    return cases


def _groups_or_none(folder: Path) -> list[list[DicomHeader]]:
    try:
        return list(folder_groups(folder).values())
    except VoxsegError:
        return []


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
    output_types: Sequence[str] = (),
    seg_fractional: bool = False,
    series: Sequence[str] = (),
    qc: bool = False,
) -> PredictReport:
    """Predict every case under ``inputs`` into ``output_dir``; see :class:`PredictReport`.

    ``output_types`` adds DICOM outputs on the source series (``dicom-seg``: ``{case}_SEG.dcm``,
    ``rtstruct``: ``{case}_RTSTRUCT.dcm``) beside the label map; DICOM input only.
    ``series`` chooses among the series of a DICOM folder (see :func:`discover_inputs`).
    ``qc`` writes ``qc/<case>.json`` and ``qc.csv`` (:mod:`voxseg.inference.qc`).
    """
    output_dir = Path(output_dir)
    cases = select_part(discover_inputs(inputs, series), num_parts, part_id)
    output_types = _check_output_types(output_types, cases, seg_fractional)
    report = PredictReport()
    lock = LOCK_NAME if num_parts == 1 else f".voxseg-part{part_id}of{num_parts}.lock"
    note_step(f"predicting {len(cases)} case(s) into {output_dir}")
    with (
        folder_lock(output_dir, "prediction folder", name=lock),
        ProgressReporter("predicting", len(cases), log) as progress,
    ):
        quality = None
        if qc:
            from voxseg.inference.qc import QualityControl

            quality = QualityControl(predictor, output_dir)
        dicom = None
        if output_types:
            from voxseg.inference.dicom_outputs import DicomOutputs

            dicom = DicomOutputs(
                output_types,
                predictor,
                seg_fractional,
                lambda exc: _failure(exc, output_dir),
            )
        for case in cases:
            out = output_path(case, output_dir, fmt)
            extra = [output_dir / f"{case.case_id}{_OUTPUT_SUFFIX[t]}" for t in output_types]
            if all(p.exists() for p in (out, *extra)) and not overwrite:
                report.skipped.append(case.case_id)
                if quality is not None:
                    quality.existing(case.case_id, out, _case_files(case, out))
                progress.item(f"{case.case_id}: already predicted, kept")
                continue
            progress.describe(f"predicting {case.case_id}")
            try:
                check_predict(
                    case.case_id,
                    case.paths,
                    predictor.model.plan_config.spacing,
                    predictor.model.num_outputs,
                    save_probabilities,
                )
                image, source = case.read_dicom() if dicom else (case.read(), None)
                _require_finite(image, case)
                if dicom is not None:
                    dicom.prefetch(source)
                want_probabilities = save_probabilities or seg_fractional
                if quality is not None:
                    pred = predictor.predict(
                        image, probabilities=want_probabilities, agreement=True
                    )
                else:
                    pred = predictor.predict(image, probabilities=want_probabilities)
                if save_probabilities and pred.probabilities is not None:
                    save_probabilities_npz(output_dir / f"{case.case_id}.npz", pred.probabilities)
                if overlays:
                    from voxseg.inference.overlay import save_overlay

                    save_overlay(
                        output_dir / "overlays" / f"{case.case_id}.png",
                        image,
                        pred.segmentation,
                        labels=predictor.model.info.foreground_labels,
                    )
                if dicom is not None:  # written on its thread, beside what follows
                    dicom.submit(case.case_id, extra, pred, source)
                write_image(pred.segmentation, out)
                if quality is not None:
                    quality.case(
                        case.case_id, pred.segmentation, pred.agreement, _case_files(case, out)
                    )
                report.done.append(case.case_id)
                progress.item(f"predicted {case.case_id}")
            except Exception as exc:  # noqa: BLE001 — one bad case must not stop the others
                report.failed[case.case_id] = _failure(exc, output_dir)
                log.error("failed %s: %s", case.case_id, exc)
                progress.advance()
        if dicom is not None:
            for case_id, detail in dicom.finish().items():
                if case_id in report.done:
                    report.done.remove(case_id)
                report.failed[case_id] = detail
        if quality is not None:
            quality.finish()
    return report


def _failure(exc: BaseException, output_dir: Path) -> str:
    """How a failed case is reported: one line for a user's problem, a short traceback
    for anything else."""
    if isinstance(exc, OSError):  # a full disk, a read-only folder: one line
        return f"{exc.filename or output_dir}: {exc.strerror or exc}"
    if isinstance(exc, VoxsegError):
        return str(exc)
    return "".join(traceback.format_exception(exc, limit=3))


def _case_files(case: CaseInput, out: Path) -> dict[str, Any]:
    """What a QC record names: the prediction beside it and the image(s) it was made from."""
    return {"prediction": out.name, "image": [str(p.absolute()) for p in case.paths]}


def _check_output_types(
    output_types: Sequence[str], cases: list[CaseInput], seg_fractional: bool
) -> list[str]:
    """Known, de-duplicated output types; DICOM outputs need DICOM input (clear error)."""
    types = list(dict.fromkeys(t.lower() for t in output_types))
    unknown = [t for t in types if t not in DICOM_OUTPUT_TYPES]
    if unknown:
        raise VoxsegError(
            f"--output-type {unknown[0]!r} is not one of {', '.join(DICOM_OUTPUT_TYPES)} "
            "(the label map in the input's format is always written)"
        )
    if seg_fractional and "dicom-seg" not in types:
        raise VoxsegError("--seg-fractional needs --output-type dicom-seg")
    not_dicom = [c for c in cases if not c.is_dicom]
    if types and not_dicom:
        raise VoxsegError(
            f"--output-type {' '.join(types)} writes DICOM objects that refer to the source "
            f"series; {not_dicom[0].paths[0]} is not a DICOM series (give a DICOM folder)"
        )
    return types


def _require_finite(image: Image, case: CaseInput) -> None:
    """NaN or Inf voxels would spread through normalisation into every window they touch."""
    finite = np.isfinite(image.array)
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise VoxsegError(
            f"{case.paths[0]}: {bad} NaN/Inf voxel(s); replace them (e.g. with the background "
            "value) before predicting"
        )


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
