"""Validate a raw dataset and report every problem at once.

The rules are nnU-Net v2's (``verify_dataset_integrity``) plus what voxseg needs later:
``dataset.json`` fields, file naming and pairing, ``numTraining``, channel counts, image and
label geometry (shape, spacing, origin, direction, also between channels), label values
declared in ``dataset.json``, NaN/Inf in images, non-integer labels, empty label maps
(warning), unreadable or truncated files, and the ``ignore`` label being the highest integer.

Headers are read with ``sitk.ImageFileReader.ReadImageInformation``; voxel data is read once
per file. Cases are checked in parallel; an exception in a worker becomes a problem of that
case, never a lost one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydantic import ValidationError

from voxseg.config import atomic_write_text
from voxseg.data.dataset import SUPPORTED_ENDINGS, DatasetInfo
from voxseg.errors import DatasetError, VoxsegError
from voxseg.io.formats import NATURAL_ENDINGS, read_image
from voxseg.io.gz import GZIP_ERRORS, open_gzip
from voxseg.io.header import check_claimed_size, read_header
from voxseg.io.image import Geometry, ItkHeader, sitk_geometry

log = logging.getLogger(__name__)

#: Endings of files that look like images (a file with one of these but not the dataset's
#: ``file_ending`` is an error, any other file is ignored with a warning).
IMAGE_LIKE_ENDINGS = (*SUPPORTED_ENDINGS, ".nhdr", ".gipl", ".jpg", ".jpeg")

#: Data files that accompany a header (MetaImage ``.mhd``, detached NRRD ``.nhdr``).
COMPANION_ENDINGS = (".raw", ".zraw", ".gz", ".bz2")

#: Cache of a clean check, written next to ``dataset.json`` (see :func:`ensure_valid`).
CACHE_NAME = ".voxseg_check.json"

_CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True, order=True)
class Problem:
    """One problem: the file (relative to the dataset root) and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class CheckReport:
    """All problems found in a dataset; it is valid when ``errors`` is empty."""

    root: Path
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    num_cases: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """Raise :class:`DatasetError` listing every error (warnings are not raised)."""
        if self.errors:
            n = len(self.errors)
            raise DatasetError(
                f"{self.root}: dataset check found {n} error{'s' * (n != 1)} "
                f"(run 'voxseg dataset check {self.root}' after fixing them)",
                [str(p) for p in self.errors],
            )


@dataclass(frozen=True)
class _Rules:
    """What dataset.json declares, as far as it could be read (``None`` = unknown)."""

    file_ending: str
    num_channels: int | None
    label_values: frozenset[int] | None
    ignore_label: int | None


@dataclass(frozen=True)
class _CaseFiles:
    """The files of one case, relative to the root; channel files sorted by index."""

    split: str
    case_id: str
    images: tuple[str, ...]
    label: str | None


def check_dataset(
    root: str | os.PathLike[str],
    *,
    geometry_tolerance: float = 1e-4,
    splits: Iterable[str] = ("Tr", "Ts"),
    num_processes: int | None = None,
    read_voxels: bool = True,
) -> CheckReport:
    """Check a raw dataset folder; return every error and warning found.

    ``read_voxels=False`` checks only names, headers and geometry (no NaN or label values).
    ``num_processes`` defaults to the number of CPUs (at most 8); ``1`` runs in-process.
    """
    root = Path(root).absolute()
    report = CheckReport(root)
    if not root.is_dir():
        report.errors.append(Problem(str(root), "dataset folder not found"))
        return report
    rules, raw_info = _check_dataset_json(root, report)
    cases: list[_CaseFiles] = []
    for split in splits:
        found = _collect_split(root, split, rules.file_ending, report)
        cases.extend(found)
        report.num_cases[split] = len(found)
    if "Tr" in splits and raw_info is not None:
        n_tr = report.num_cases.get("Tr", 0)
        declared = raw_info.get("numTraining")
        if isinstance(declared, int) and declared != n_tr:
            report.errors.append(
                Problem(
                    "dataset.json",
                    f"numTraining is {declared} but imagesTr/ holds {n_tr} cases",
                )
            )
    _check_centerlines(root, {c.case_id for c in cases if c.split == "Tr"}, report)
    for errors, warnings in _run_cases(
        root, cases, rules, geometry_tolerance, read_voxels, num_processes
    ):
        report.errors.extend(errors)
        report.warnings.extend(warnings)
    report.errors.sort()
    report.warnings.sort()
    return report


def ensure_valid(
    root: str | os.PathLike[str],
    *,
    num_processes: int | None = None,
    use_cache: bool = True,
) -> CheckReport:
    """Check a dataset and raise :class:`DatasetError` with every message if it has errors.

    A clean result is cached in ``.voxseg_check.json`` keyed on the names, sizes and
    modification times of the dataset's files, so later steps skip an unchanged dataset.
    """
    root = Path(root).absolute()
    key = _dataset_key(root) if use_cache else None
    cache = root / CACHE_NAME
    if key is not None and cache.is_file():
        try:
            if json.loads(cache.read_text(encoding="utf-8")).get("key") == key:
                return CheckReport(root)
        except (OSError, json.JSONDecodeError):
            pass
    report = check_dataset(root, num_processes=num_processes)
    report.raise_for_errors()
    if key is not None:
        try:
            atomic_write_text(cache, json.dumps({"key": key}))
        except OSError:
            pass  # a read-only dataset is checked again next time
    return report


# --- dataset.json ----------------------------------------------------------------------


def _check_dataset_json(root: Path, report: CheckReport) -> tuple[_Rules, dict[str, Any] | None]:
    """Validate dataset.json field by field; return what could be read of it."""
    path = root / "dataset.json"
    err = report.errors
    guessed = _Rules(_guess_ending(root), None, None, None)
    if not path.is_file():
        err.append(Problem("dataset.json", "missing (every raw dataset needs one)"))
        return guessed, None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        err.append(Problem("dataset.json", f"not valid JSON ({exc})"))
        return guessed, None
    if not isinstance(raw, dict):
        err.append(Problem("dataset.json", "must hold a JSON object"))
        return guessed, None
    bad_fields: set[str] = set()
    try:
        DatasetInfo.model_validate(raw)
    except ValidationError as exc:
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
            bad_fields.add(str(e["loc"][0]) if e["loc"] else "")
            err.append(Problem("dataset.json", f"{loc}: {e['msg']}{_hint(raw, e['loc'])}"))
    # the fields that are valid, typed: bad ones replaced by placeholders and not used
    clean = {k: v for k, v in raw.items() if k not in bad_fields}
    clean.update({k: v for k, v in _PLACEHOLDERS.items() if k not in clean})
    info = DatasetInfo.model_validate(clean)
    if "file_ending" not in raw:
        report.warnings.append(
            Problem("dataset.json", "file_ending missing (assumed .nii.gz; nnU-Net requires it)")
        )
    ending = ".nii.gz" if "file_ending" in bad_fields else info.file_ending
    if ending not in SUPPORTED_ENDINGS:
        err.append(
            Problem(
                "dataset.json",
                f"file_ending {ending!r} is not supported; "
                f"use one of {', '.join(SUPPORTED_ENDINGS)}",
            )
        )
    num_channels = None if "channel_names" in bad_fields else info.num_channels
    label_values = ignore = None
    if "labels" not in bad_fields:
        label_values = frozenset(info.label_values)
        ignore = info.ignore_label
        _check_label_rules(info, report)
    return _Rules(ending, num_channels, label_values, ignore), raw


_PLACEHOLDERS: dict[str, Any] = {
    "channel_names": {"0": "placeholder"},
    "labels": {"background": 0},
    "numTraining": 0,
    "file_ending": ".nii.gz",
    "regions_class_order": None,
}


def _check_label_rules(info: DatasetInfo, report: CheckReport) -> None:
    labels = info.labels
    ignore = labels.get("ignore")
    if ignore is not None:
        others = [v for k, vs in labels.items() if k != "ignore" for v in _as_list(vs)]
        if not isinstance(ignore, int):
            report.errors.append(Problem("dataset.json", "labels.ignore must be one integer"))
        elif others and ignore <= max(others):
            report.errors.append(
                Problem(
                    "dataset.json",
                    f"labels.ignore is {ignore} but must be the highest label "
                    f"(highest other label: {max(others)})",
                )
            )
    values = info.label_values
    if values != list(range(len(values))):
        report.warnings.append(
            Problem(
                "dataset.json",
                f"label values {values} are not consecutive 0, 1, 2, ... (nnU-Net refuses this)",
            )
        )
    if info.has_regions:
        n_regions = len(info.foreground_labels)
        order = info.regions_class_order
        if order is None:
            report.errors.append(
                Problem("dataset.json", "labels define regions but regions_class_order is missing")
            )
        elif len(order) != n_regions:
            report.errors.append(
                Problem(
                    "dataset.json",
                    f"regions_class_order has {len(order)} entries for {n_regions} regions",
                )
            )


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _hint(raw: dict[str, Any], loc: tuple[Any, ...]) -> str:
    """A hint for the usual mistakes: an MSD dataset.json, labels written index → name."""
    if loc and loc[0] == "channel_names" and "modality" in raw:
        return " (this looks like an MSD dataset.json: use 'voxseg dataset import msd')"
    if loc and loc[0] == "labels":
        labels = raw.get("labels")
        if isinstance(labels, dict) and all(str(k).isdigit() for k in labels):
            return ' (labels must map name → integer, e.g. {"background": 0, "tumor": 1})'
    return ""


def _guess_ending(root: Path) -> str:
    """The most common image ending in imagesTr (used when dataset.json does not say)."""
    counts: dict[str, int] = defaultdict(int)
    folder = root / "imagesTr"
    if folder.is_dir():
        for p in folder.iterdir():
            ending = _ending(p.name)
            if ending in SUPPORTED_ENDINGS:
                counts[ending] += 1
    return max(counts, key=counts.__getitem__) if counts else ".nii.gz"


def _ending(name: str) -> str:
    low = name.lower()
    return ".nii.gz" if low.endswith(".nii.gz") else Path(low).suffix


# --- names and pairing -------------------------------------------------------------------


def _collect_split(root: Path, split: str, ending: str, report: CheckReport) -> list[_CaseFiles]:
    """Pair the image channel files and label files of one split; report naming problems."""
    images_dir, labels_dir = root / f"images{split}", root / f"labels{split}"
    if not images_dir.is_dir():
        if split == "Tr":
            report.errors.append(Problem(f"images{split}", "folder missing"))
        if labels_dir.is_dir() and any(labels_dir.iterdir()):
            report.errors.append(Problem(f"labels{split}", f"labels without an images{split}/"))
        return []
    channels: dict[str, dict[int, str]] = defaultdict(dict)
    for name in _files(images_dir, f"images{split}", ending, report):
        stem = name[: -len(ending)]
        m = _CHANNEL_RE.match(stem)
        rel = f"images{split}/{name}"
        if m is None:
            report.errors.append(
                Problem(rel, f"name does not match {{case}}_XXXX{ending} (XXXX = 4-digit channel)")
            )
            continue
        channels[m["case"]][int(m["channel"])] = rel
    labels: dict[str, str] = {}
    if labels_dir.is_dir():
        for name in _files(labels_dir, f"labels{split}", ending, report):
            labels[name[: -len(ending)]] = f"labels{split}/{name}"
    elif split == "Tr":
        report.errors.append(Problem(f"labels{split}", "folder missing"))

    for case_id, label in sorted(labels.items()):
        if case_id not in channels:
            m = _CHANNEL_RE.match(case_id)
            hint = (
                f" (label files carry no channel suffix: name it {m['case']}{ending})"
                if m and m["case"] in channels
                else ""
            )
            report.errors.append(
                Problem(
                    label, f"no image for this label (images{split}/{case_id}_0000{ending}){hint}"
                )
            )
    cases = []
    for case_id in sorted(channels):
        chans = channels[case_id]
        missing = [i for i in range(max(chans) + 1) if i not in chans]
        for i in missing:
            report.errors.append(
                Problem(
                    f"images{split}/{case_id}_{i:04d}{ending}",
                    f"missing (case {case_id} has channel files {sorted(chans)})",
                )
            )
        label = labels.get(case_id)
        if label is None and split == "Tr":
            report.errors.append(
                Problem(f"labels{split}/{case_id}{ending}", f"missing (label of case {case_id})")
            )
        cases.append(_CaseFiles(split, case_id, tuple(chans[i] for i in sorted(chans)), label))
    return cases


def _files(folder: Path, rel: str, ending: str, report: CheckReport) -> list[str]:
    """Names of the image files in ``folder``; stray files are reported."""
    out = []
    for p in sorted(folder.iterdir()):
        name = p.name
        if name.startswith("."):
            if name.lower().endswith(ending):
                report.warnings.append(
                    Problem(
                        f"{rel}/{name}", "hidden file ignored (nnU-Net would read it: delete it)"
                    )
                )
            continue
        if p.is_dir():
            report.warnings.append(Problem(f"{rel}/{name}", "folder ignored"))
        elif name.endswith(ending):
            out.append(name)
        elif ending in (".mhd", ".nhdr") and _ending(name) in COMPANION_ENDINGS:
            continue
        elif _ending(name) in IMAGE_LIKE_ENDINGS:
            report.errors.append(
                Problem(
                    f"{rel}/{name}",
                    f"ending {_ending(name)} differs from file_ending {ending} in dataset.json",
                )
            )
        else:
            report.warnings.append(
                Problem(f"{rel}/{name}", "not an image of this dataset; ignored")
            )
    return out


def _check_centerlines(root: Path, train_ids: set[str], report: CheckReport) -> None:
    folder = root / "centerlines"
    if not folder.is_dir():
        return
    for p in sorted(folder.glob("*.vtp")):
        if p.stem not in train_ids:
            report.warnings.append(
                Problem(f"centerlines/{p.name}", "centerline of no case in imagesTr; ignored")
            )


# --- per case ----------------------------------------------------------------------------


def _run_cases(
    root: Path,
    cases: list[_CaseFiles],
    rules: _Rules,
    tol: float,
    read_voxels: bool,
    num_processes: int | None,
) -> Iterable[tuple[list[Problem], list[Problem]]]:
    """Check every case, in a process pool unless ``num_processes == 1``."""
    from voxseg.progress import ProgressReporter

    if not cases:
        return
    workers = num_processes or min(8, os.cpu_count() or 1)
    workers = max(1, min(workers, len(cases)))
    with ProgressReporter("checking cases", len(cases), log, transient=True) as bar:
        if workers == 1:
            for case in cases:
                yield _check_case_safely(root, case, rules, tol, read_voxels)
                bar.item(f"checked {case.case_id}")
            return
        with ProcessPoolExecutor(workers) as pool:
            futures = {
                pool.submit(_check_case_safely, root, c, rules, tol, read_voxels): c for c in cases
            }
            for fut in as_completed(futures):
                case = futures[fut]
                try:
                    yield fut.result()
                except Exception as exc:  # a worker that died (e.g. out of memory)
                    path = case.label or case.images[0]
                    yield [Problem(path, f"checking case {case.case_id} failed: {exc!r}")], []
                bar.item(f"checked {case.case_id}")


def _check_case_safely(
    root: Path, case: _CaseFiles, rules: _Rules, tol: float, read_voxels: bool
) -> tuple[list[Problem], list[Problem]]:
    """:func:`_check_case`, with any unexpected exception turned into a problem."""
    try:
        return _check_case(root, case, rules, tol, read_voxels)
    except Exception as exc:  # report, never lose, a bug or an odd file
        path = case.label or case.images[0]
        return [Problem(path, f"checking case {case.case_id} failed: {exc!r}")], []


def _check_case(
    root: Path, case: _CaseFiles, rules: _Rules, tol: float, read_voxels: bool
) -> tuple[list[Problem], list[Problem]]:
    errors: list[Problem] = []
    warnings: list[Problem] = []
    headers: list[tuple[str, Geometry, int]] = []
    for rel in case.images:
        head = _read(root / rel, rel, errors, read_voxels, _image_voxels)
        if head is not None:
            headers.append((rel, *head))
    if headers:
        ref_rel, ref_geom, _ = headers[0]
        for rel, geom, _ in headers[1:]:
            errors.extend(
                Problem(rel, _vs(d, ref_rel)) for d in ref_geom.differences(geom, atol=tol)
            )
        total = sum(n for _, _, n in headers)
        expected = rules.num_channels
        if expected is None or len(headers) != len(case.images) or total == expected:
            pass
        elif total < expected and all(n == 1 for _, _, n in headers):
            end = len(rules.file_ending)
            prefix, last = case.images[-1][: -end - 4], int(case.images[-1][-end - 4 : -end])
            errors.extend(
                Problem(
                    f"{prefix}{k:04d}{rules.file_ending}", f"missing (channel {k} of {expected})"
                )
                for k in range(last + 1, expected)
            )
        else:
            errors.append(
                Problem(
                    case.images[0],
                    f"case {case.case_id} has {total} channel(s) in {len(headers)} file(s) but "
                    f"dataset.json channel_names declares {rules.num_channels}",
                )
            )
    if case.label is None:
        return errors, warnings

    def label_voxels(arr: np.ndarray, rel: str, n_channels: int) -> list[Problem]:
        return _label_voxels(arr, rel, n_channels, rules, warnings)

    head = _read(root / case.label, case.label, errors, read_voxels, label_voxels)
    if head is not None and headers:
        geom, n_channels = head
        if n_channels != 1:
            errors.append(
                Problem(
                    case.label, f"has {n_channels} channels; a label map has one (an RGB mask?)"
                )
            )
        ref_rel, ref_geom, _ = headers[0]
        errors.extend(
            Problem(case.label, _vs(d, ref_rel)) for d in ref_geom.differences(geom, atol=tol)
        )
    return errors, warnings


def _vs(difference: str, ref: str) -> str:
    """``'spacing (a) differs from (b)'`` → ``'... differs from (b) of imagesTr/x_0000'``."""
    return (
        f"{difference} from {ref}" if difference.endswith("differs") else f"{difference} of {ref}"
    )


def _read(path: Path, rel: str, errors: list[Problem], read_voxels: bool, check_voxels):
    """Read the header (and voxels, once) of one file; return ``(geometry, channels)``."""
    if _ending(path.name) in NATURAL_ENDINGS:
        return _read_natural(path, rel, errors, read_voxels, check_voxels)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
        geom, n_channels = header_geometry(reader)
    except (RuntimeError, ValueError) as exc:
        errors.append(Problem(rel, f"unreadable ({_first_line(exc)})"))
        return None
    if read_voxels:
        try:  # before allocating: a header claiming more than the file can hold is corrupt
            check_claimed_size(read_header(path))
        except VoxsegError as exc:
            errors.append(Problem(rel, str(exc).removeprefix(f"{path}: ")))
            return geom, n_channels
        try:
            arr = _voxels(reader, path)
        except (RuntimeError, ValueError, *GZIP_ERRORS) as exc:
            errors.append(Problem(rel, f"voxel data unreadable, truncated? ({_first_line(exc)})"))
            return geom, n_channels
        errors.extend(check_voxels(arr, rel, n_channels))
    return geom, n_channels


def _voxels(reader: sitk.ImageFileReader, path: Path) -> np.ndarray:
    """The voxel values (axis order irrelevant here).

    NIfTI goes through nibabel: SimpleITK's NIfTI reader turns NaN into 0 and does not
    notice a file cut short, so it would hide exactly what the check looks for. A
    ``.nii.gz`` is inflated by ISA-L (:mod:`voxseg.io.gz`) on its way to nibabel.
    """
    if _ending(path.name) not in (".nii", ".nii.gz"):
        return sitk.GetArrayFromImage(reader.Execute())  # a view would outlive its image
    import nibabel as nib

    if _ending(path.name) == ".nii.gz":
        with open_gzip(path) as f:
            # sizeof_hdr tells NIfTI-1 from NIfTI-2 (other files: nibabel's own detection)
            kind = {348: nib.Nifti1Image, 540: nib.Nifti2Image}.get(
                int.from_bytes(f.read(4), "little")
            )
            if kind is not None:
                f.seek(0)
                return np.asanyarray(kind.from_stream(f).dataobj)
    return np.asanyarray(nib.load(path).dataobj)


def _read_natural(path: Path, rel: str, errors: list[Problem], read_voxels: bool, check_voxels):
    """2D natural images through :func:`voxseg.io.read_image` (palette PNGs, alpha, DPI)."""
    try:
        image = read_image(path, is_label=rel.startswith("labels"))
    except VoxsegError as exc:
        errors.append(Problem(rel, f"unreadable ({str(exc).removeprefix(f'{path}: ')})"))
        return None
    if read_voxels:
        errors.extend(check_voxels(image.array, rel, image.num_channels))
    return image.geometry, image.num_channels


def header_geometry(reader: sitk.ImageFileReader) -> tuple[Geometry, int]:
    """Geometry and channel count from a header read by ``ReadImageInformation`` (the axis
    rules of :func:`voxseg.io.image.sitk_geometry`, as for a read image)."""
    return sitk_geometry(ItkHeader.of(reader))


def _image_voxels(arr: np.ndarray, rel: str, n_channels: int) -> list[Problem]:
    if not np.issubdtype(arr.dtype, np.floating):
        return []
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    if n_nan or n_inf:
        return [Problem(rel, f"contains {n_nan} NaN and {n_inf} Inf voxels; replace them")]
    return []


def _label_voxels(
    arr: np.ndarray, rel: str, n_channels: int, rules: _Rules, warnings: list[Problem]
) -> list[Problem]:
    if n_channels != 1:
        return []  # reported with the geometry
    if np.issubdtype(arr.dtype, np.floating):
        finite = np.isfinite(arr)
        if not finite.all():
            return [Problem(rel, f"contains {int(np.count_nonzero(~finite))} NaN/Inf voxels")]
        fractional = arr != np.round(arr)
        if fractional.any():
            example = float(arr[fractional].flat[0])
            return [
                Problem(rel, f"non-integer label values (e.g. {example:g}); labels are integers")
            ]
    elif not np.issubdtype(arr.dtype, np.integer):
        return [Problem(rel, f"label pixel type {arr.dtype} is not an integer type")]
    values = unique_values(arr)
    problems = []
    if rules.label_values is not None:
        unknown = [v for v in values if v not in rules.label_values]
        if unknown:
            problems.append(
                Problem(
                    rel,
                    f"label values {_short(unknown)} not declared in dataset.json labels "
                    f"(declared: {_short(sorted(rules.label_values))})",
                )
            )
    if all(v in (0, rules.ignore_label) for v in values):
        warnings.append(Problem(rel, "label map is empty (only background)"))
    return problems


def unique_values(arr: np.ndarray, chunk: int = 1 << 22) -> list[int]:
    """Sorted distinct integer values of an integer-valued array, in bounded memory."""
    flat = np.asarray(arr).ravel(order="K")  # memory order: no copy of a NIfTI's F-order array
    if flat.size == 0:
        return []
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo >= 1 << 20:
        return [int(v) for v in np.unique(flat)]
    seen = np.zeros(hi - lo + 1, dtype=bool)
    for start in range(0, flat.size, chunk):
        part = flat[start : start + chunk].astype(np.int64) - lo
        seen[np.bincount(part, minlength=seen.size) > 0] = True
    return [int(v) + lo for v in np.flatnonzero(seen)]


def _short(values: list[int], n: int = 12) -> str:
    text = ", ".join(str(v) for v in values[:n])
    return f"[{text}{', ...' if len(values) > n else ''}]"


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _dataset_key(root: Path) -> str | None:
    """A fingerprint of names, sizes and modification times of every file of the dataset."""
    h = hashlib.sha256()
    try:
        for sub in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
            files = [sub] if sub.is_file() else sorted(q for q in sub.rglob("*") if q.is_file())
            for f in files:
                st = f.stat()
                h.update(f"{f.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return h.hexdigest()
