"""A DICOM archive (PACS or planning-system export) with RTSTRUCT or DICOM-SEG → raw dataset.

1. **Index**: one header-only pass over every file (any names, any nesting), in parallel;
   the index is cached in ``OUT/dicom_index.json`` (keyed by path, size and modification
   time), so a second run re-reads only new or changed files.
2. **Group**: image series of the chosen modality (default: the most common) by patient,
   study and FrameOfReferenceUID; each is paired with the RTSTRUCTs and SEGs that refer to
   it (ReferencedSeriesInstanceUID or its SOP instances, else the same FrameOfReferenceUID
   when that frame holds just one such series).
3. **Labels**: ``rois={"liver": ["Liver", "LIVER_*", "re:leber.*"]}`` — case-insensitive
   globs, or regular expressions after ``re:``; values 1..N in the given order, a later
   label painted over an earlier one where they overlap (or the case refused with
   ``overlap="error"``). Contours become masks by :mod:`voxseg.io.contours` (voxel centre
   inside the polygon, even-odd rule), SEG segments through highdicom (fractional ≥ 0.5).
4. **Channels**: ``channels=[("T1", "desc:*t1*"), ("T2", "desc:*t2*")]`` picks series of the
   same FrameOfReference; the first carries the labels, the others are resampled onto its
   grid (linear).
5. **Write**: ``imagesTr/``, ``labelsTr/``, ``dataset.json``; ``import_report.json`` and
   ``.csv`` (every case with its series and ROIs, everything skipped or failed with the
   reason) and ``case_map.csv`` (case id → PatientID, StudyInstanceUID, SeriesInstanceUID).
   Patient identifiers are only in those report files, never in the images or dataset.json.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.config import atomic_write_text, read_json, write_json
from voxseg.data.dataset import write_dataset_json
from voxseg.data.importers._common import (
    finish_output,
    prepare_output,
    run_cases,
    write_channels,
)
from voxseg.errors import VoxsegError
from voxseg.io import Image, write_image
from voxseg.io.dicom import (
    DicomHeader,
    assemble_series,
    candidate_files,
    has_dicom_preamble,
    list_series,
    read_header,
    read_series_pixels,
)

INDEX_NAME = "dicom_index.json"
_INDEX_VERSION = 2
_BATCH = 64


@dataclass
class RoiRule:
    """A label and the ROI/segment names that stand for it."""

    label: str
    patterns: list[str]

    def matches(self, name: str) -> bool:
        text = name.strip()
        for p in self.patterns:
            if p.startswith("re:"):
                if re.fullmatch(p[3:], text, flags=re.IGNORECASE):
                    return True
            elif fnmatch(text.lower(), p.strip().lower()):
                return True
        return False


def parse_roi_rules(items: Sequence[str]) -> list[RoiRule]:
    """``label=pattern|pattern|…`` (a bare ``label`` matches its own name)."""
    rules = []
    for item in items:
        label, sep, patterns = item.partition("=")
        label = label.strip()
        if not label or label == "background":
            raise VoxsegError(f"--roi {item!r}: give a label name (not 'background')")
        pats = [p for p in patterns.split("|") if p.strip()] if sep else [label]
        for p in pats:
            if p.startswith("re:"):
                try:
                    re.compile(p[3:])
                except re.error as exc:
                    raise VoxsegError(
                        f"--roi {item!r}: bad regular expression {p!r} ({exc})"
                    ) from exc
        rules.append(RoiRule(label, pats))
    names = [r.label for r in rules]
    dup = [n for n, c in Counter(names).items() if c > 1]
    if dup:
        raise VoxsegError(f"--roi: label {dup[0]!r} given twice; list its aliases with |")
    if not rules:
        raise VoxsegError("name at least one label with --roi label=pattern")
    return rules


@dataclass
class ChannelRule:
    """A channel name and the series selector: ``modality:MR``, ``desc:*t2*``,
    ``seq:*tse*`` or a bare SeriesDescription glob."""

    name: str
    selector: str

    def matches(self, h: DicomHeader) -> bool:
        key, sep, value = self.selector.partition(":")
        if not sep:
            key, value = "desc", self.selector
        value = value.lower()
        field_value = {
            "modality": h.modality,
            "desc": h.series_description,
            "seq": h.sequence_name,
            "uid": h.series_uid,
        }.get(key.lower())
        if field_value is None:
            raise VoxsegError(
                f"--channel {self.name}={self.selector}: unknown selector {key!r}; "
                "use modality:, desc:, seq: or uid:"
            )
        return fnmatch(field_value.lower(), value)


def parse_channel_rules(items: Sequence[str]) -> list[ChannelRule]:
    rules = []
    for item in items:
        name, sep, selector = item.partition("=")
        if not sep or not name.strip() or not selector.strip():
            raise VoxsegError(f"--channel {item!r} is not of the form NAME=SELECTOR")
        rules.append(ChannelRule(name.strip(), selector.strip()))
    return rules


@dataclass
class ImportReport:
    """What :func:`import_dicom` did: cases written, series skipped, failures, notes."""

    out: Path
    cases: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unmatched_rois: dict[str, int] = field(default_factory=dict)
    ignored_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed


# --------------------------------------------------------------------------- index


def index_archive(
    src: Path, cache: Path | None, num_processes: int | None
) -> tuple[list[DicomHeader], dict[str, str], int]:
    """Headers of every DICOM file under ``src``, damaged DICOM files with the reason, and
    the number of non-DICOM files ignored; reuses and refreshes ``cache``."""
    files = candidate_files(src)
    old: dict[str, Any] = {}
    if cache is not None and cache.is_file():
        try:
            data = read_json(cache)
            if data.get("version") == _INDEX_VERSION and data.get("root") == str(src):
                old = data["files"]
        except (VoxsegError, KeyError, AttributeError, ValueError):
            old = {}
    entries: dict[str, Any] = {}
    todo: list[str] = []
    for f in files:
        st = f.stat()
        key = str(f.relative_to(src))
        prev = old.get(key)
        if prev and prev["size"] == st.st_size and prev["mtime"] == st.st_mtime_ns:
            entries[key] = prev
        else:
            entries[key] = {"size": st.st_size, "mtime": st.st_mtime_ns}
            todo.append(key)
    batches = [(src, todo[i : i + _BATCH]) for i in range(0, len(todo), _BATCH)]
    for batch in run_cases(_index_batch, batches, num_processes, "indexing DICOM headers"):
        for key, value in batch.items():
            entries[key].update(value)
    if cache is not None:
        write_json(
            cache, {"version": _INDEX_VERSION, "root": str(src), "files": entries}, indent=None
        )
    headers, damaged, ignored = [], {}, 0
    for key, e in entries.items():
        if "header" in e:
            d = dict(e["header"])
            d["path"] = str(src / key)
            headers.append(DicomHeader.from_dict(d))
        elif e.get("damaged"):
            damaged[str(src / key)] = e["error"]
        else:
            ignored += 1
    return headers, damaged, ignored


def _index_batch(src: Path, keys: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in keys:
        path = src / key
        try:
            h = read_header(path).to_dict()
            h.pop("path")
            out[key] = {"header": h}
        except VoxsegError as exc:
            out[key] = {"damaged": has_dicom_preamble(path), "error": str(exc)}
    return out


# --------------------------------------------------------------------------- grouping


@dataclass
class _Case:
    case_id: str
    patient_id: str
    study_uid: str
    frame_uid: str
    channels: list[list[DicomHeader]]
    label_sources: list[DicomHeader]


def _series_groups(headers: list[DicomHeader]) -> dict[str, list[DicomHeader]]:
    groups: dict[str, list[DicomHeader]] = {}
    for h in headers:
        if h.is_image:
            groups.setdefault(h.series_uid, []).append(h)
    return groups


def _describe(h: DicomHeader) -> str:
    desc = f" {h.series_description!r}" if h.series_description else ""
    return f"{h.modality} series{desc} {h.series_uid}"


def plan_cases(
    headers: list[DicomHeader],
    modality: str | None,
    channels: list[ChannelRule],
    report: ImportReport,
    series_uids: Sequence[str] = (),
) -> list[_Case]:
    """Pair image series with their label sources and extra channels (see module doc);
    ``series_uids`` keeps only those labelled series."""
    series = _series_groups(headers)
    if not series:
        raise VoxsegError(f"{report.out}: no DICOM image series found in the source")
    if modality is None:
        counts = Counter(hs[0].modality for hs in series.values())
        modality = counts.most_common(1)[0][0]
    primary_rule = channels[0] if channels else ChannelRule(modality, f"modality:{modality}")
    primaries = {
        uid: hs
        for uid, hs in series.items()
        if hs[0].modality.upper() == modality.upper() and primary_rule.matches(hs[0])
    }
    if not primaries:
        found = ", ".join(sorted({hs[0].modality for hs in series.values()}))
        raise VoxsegError(
            f"no {modality} image series matches {primary_rule.selector!r}; found: {found}"
        )
    candidates = primaries
    if series_uids:
        absent = [u for u in series_uids if u not in primaries]
        if absent:
            raise VoxsegError(
                f"--series-uid {', '.join(absent)}: no such {modality} image series in the "
                f"source; its {modality} series:\n{list_series(primaries.values())}"
            )
        primaries = {u: hs for u, hs in primaries.items() if u in series_uids}
    sources = [h for h in headers if h.modality.upper() in ("RTSTRUCT", "SEG")]
    by_source: dict[str, list[DicomHeader]] = {}
    for s in sources:
        target = _referenced_series(s, series, candidates)
        if target is None and series_uids:  # a frame holding several series, one chosen
            target = _referenced_series(s, series, primaries)
        if target is not None and target not in primaries:
            report.skipped.append(
                {
                    "item": s.path,
                    "patient": s.patient_id,
                    "reason": f"its series {target} is not among --series-uid",
                }
            )
            continue
        if target is None:
            report.failed.append(
                {"item": s.path, "reason": _unpaired(s, series, candidates, modality)}
            )
            continue
        by_source.setdefault(target, []).append(s)
    cases = []
    ordered = sorted(
        primaries.items(), key=lambda kv: (kv[1][0].patient_id, kv[1][0].study_uid, kv[0])
    )
    for uid, hs in ordered:
        h = hs[0]
        if uid not in by_source:
            report.skipped.append(
                {
                    "item": _describe(h),
                    "patient": h.patient_id,
                    "reason": "no RTSTRUCT or SEG refers to it",
                }
            )
            continue
        chans = [hs]
        missing = None
        for rule in channels[1:]:
            match = [
                g
                for u, g in series.items()
                if u != uid
                and g[0].frame_of_reference_uid == h.frame_of_reference_uid
                and rule.matches(g[0])
            ]
            if not match:
                missing = rule
                break
            chans.append(max(match, key=len))
        if missing is not None:
            report.skipped.append(
                {
                    "item": _describe(h),
                    "patient": h.patient_id,
                    "reason": f"no series for channel {missing.name} ({missing.selector}) in "
                    "its frame of reference",
                }
            )
            continue
        cases.append(
            _Case(
                f"case_{len(cases):04d}",
                h.patient_id,
                h.study_uid,
                h.frame_of_reference_uid,
                chans,
                sorted(by_source[uid], key=lambda s: (s.modality, s.path)),
            )
        )
    return cases


def _unpaired(
    s: DicomHeader, series: dict[str, list[DicomHeader]], primaries: dict[str, Any], modality: str
) -> str:
    """Why the label object ``s`` belongs to no image series of the import."""
    other = [u for u in s.referenced_series if u in series]
    if other:
        return (
            f"{s.modality} refers to {series[other[0]][0].modality} series {other[0]}, "
            f"not to a {modality} series (choose it with --modality or --channel)"
        )
    same_frame = _same_frame(s, primaries)
    if len(same_frame) > 1:
        return (
            f"{s.modality} names no series it belongs to, and its frame of reference "
            f"{s.frame_of_reference_uid} holds {len(same_frame)} image series; choose one "
            f"with --series-uid UID:\n{list_series(primaries[u] for u in same_frame)}"
        )
    refs = ", ".join(s.referenced_series) or "(none)"
    return (
        f"{s.modality} refers to series {refs} (frame of reference "
        f"{s.frame_of_reference_uid or '?'}), which is not in the source"
    )


def _same_frame(s: DicomHeader, primaries: dict[str, Any]) -> list[str]:
    return [
        uid
        for uid, hs in primaries.items()
        if s.frame_of_reference_uid and hs[0].frame_of_reference_uid == s.frame_of_reference_uid
    ]


def _referenced_series(
    s: DicomHeader, series: dict[str, list[DicomHeader]], primaries: dict[str, Any]
) -> str | None:
    """The primary image series a label object belongs to (None: not in the source)."""
    for uid in s.referenced_series:
        if uid in primaries:
            return uid
    if s.referenced_instances:
        wanted = set(s.referenced_instances)
        for uid, hs in primaries.items():
            if any(h.sop_instance_uid in wanted for h in hs):
                return uid
    if s.referenced_series and any(u in series for u in s.referenced_series):
        return None  # it refers to a series of another modality
    same_frame = _same_frame(s, primaries)
    return same_frame[0] if len(same_frame) == 1 else None


# --------------------------------------------------------------------------- conversion


def _convert_case(
    case: _Case,
    rules: list[RoiRule],
    out: Path,
    overlap: str,
    allow_missing: bool,
    resample_uneven: bool,
) -> dict[str, Any]:
    """Write one case; returns its report entry (``status`` ok, skipped or failed)."""
    from voxseg.io.dicom_seg import read_dicom_seg
    from voxseg.io.rtstruct import read_rtstruct, roi_mask

    entry: dict[str, Any] = {
        "case": case.case_id,
        "patient": case.patient_id,
        "study": case.study_uid,
        "series": case.channels[0][0].series_uid,
        "series_description": case.channels[0][0].series_description,
        "label_sources": [s.path for s in case.label_sources],
        "warnings": [],
    }
    try:
        series = assemble_series(
            case.channels[0], resample_uneven=resample_uneven, source=_describe(case.channels[0][0])
        )
        image = read_series_pixels(series)
        images = [image]
        for hs in case.channels[1:]:
            extra = assemble_series(hs, resample_uneven=resample_uneven, source=_describe(hs[0]))
            images.append(_resample_onto(read_series_pixels(extra), image))
        masks: dict[str, np.ndarray] = {}
        used: dict[str, list[str]] = {}
        names: list[str] = []
        for src in case.label_sources:
            if src.modality.upper() == "RTSTRUCT":
                structure = read_rtstruct(src.path)
                for roi in structure.rois:
                    names.append(roi.name)
                    rule = next((r for r in rules if r.matches(roi.name)), None)
                    if rule is None:
                        continue
                    mask, raster = roi_mask(roi, series)
                    entry["warnings"].extend(f"{Path(src.path).name}: {p}" for p in raster.problems)
                    if not roi.contours:
                        entry["warnings"].append(
                            f"{Path(src.path).name}: ROI {roi.name!r} has no contours"
                        )
                    _add(masks, used, rule.label, mask, roi.name)
            else:
                for seg in read_dicom_seg(src.path, series):
                    names.append(seg.label)
                    rule = next((r for r in rules if r.matches(seg.label)), None)
                    if rule is None:
                        continue
                    mask = seg.mask if seg.mask.dtype == bool else seg.mask >= 0.5
                    _add(masks, used, rule.label, mask, seg.label)
        entry["rois"] = {k: v for k, v in used.items()}
        entry["unmatched"] = [n for n in names if not any(r.matches(n) for r in rules)]
        empty = [r.label for r in rules if r.label not in masks or not masks[r.label].any()]
        entry["missing"] = empty
        if empty and not allow_missing:
            entry["status"] = "skipped"
            entry["reason"] = (
                f"no contours for {', '.join(empty)} (ROIs present: {', '.join(names) or 'none'}); "
                "pass --allow-missing to keep it with background there"
            )
            return entry
        label_map = np.zeros(series.geometry.shape, dtype=np.uint8)
        for value, rule in enumerate(rules, start=1):
            mask = masks.get(rule.label)
            if mask is None:
                continue
            under = label_map[mask]  # what the earlier labels left where this one goes
            clash = under[under > 0]
            if clash.size:
                other = sorted({rules[v - 1].label for v in np.unique(clash)})
                text = f"{rule.label} overlaps {', '.join(other)} in {clash.size} voxels"
                if overlap == "error":
                    entry["status"] = "failed"
                    entry["reason"] = text + " (--overlap error)"
                    return entry
                entry["warnings"].append(text + f" ({rule.label} kept there)")
            label_map[mask] = value
        if len(images) > 1:
            dtype = np.result_type(*[i.array for i in images])
            channels = np.stack([im.array.astype(dtype, copy=False) for im in images])
        else:
            channels = image.array
        write_channels(
            Image.from_geometry(channels, series.geometry),
            out / "imagesTr",
            case.case_id,
            fast_gzip=True,
        )
        write_image(
            Image.from_geometry(label_map, series.geometry),
            out / "labelsTr" / f"{case.case_id}.nii.gz",
            fast_gzip=True,
        )
        # one comparison per label: a bincount would widen the whole map to int64 first
        entry["voxels"] = {
            r.label: int(np.count_nonzero(label_map == v)) for v, r in enumerate(rules, 1)
        }
        entry["status"] = "ok"
    except VoxsegError as exc:
        entry["status"] = "failed"
        entry["reason"] = str(exc)
    return entry


def _add(masks: dict[str, np.ndarray], used: dict[str, list[str]], label: str, mask, name) -> None:
    masks[label] = mask if label not in masks else masks[label] | mask
    used.setdefault(label, []).append(name)


def _resample_onto(image: Image, reference: Image) -> Image:
    """``image`` linearly resampled onto the grid of ``reference`` (another channel)."""
    import SimpleITK as sitk

    from voxseg.io import from_sitk, to_sitk

    moving = to_sitk(image.with_array(image.array.astype(np.float32)))
    ref = to_sitk(reference.with_array(np.zeros(reference.shape, np.uint8)))
    out = sitk.Resample(moving, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return from_sitk(out)


# --------------------------------------------------------------------------- entry point


def import_dicom(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    rois: Sequence[str | RoiRule],
    *,
    modality: str | None = None,
    channels: Sequence[str | ChannelRule] = (),
    overlap: str = "paint",
    allow_missing: bool = False,
    resample_uneven: bool = False,
    index: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    num_processes: int | None = None,
    series_uids: Sequence[str] = (),
) -> ImportReport:
    """Convert the DICOM archive ``src`` into a raw dataset at ``out`` (see module doc);
    ``series_uids`` imports only those labelled series."""
    src = Path(src).absolute()
    if not src.is_dir():
        raise VoxsegError(f"{src}: folder not found")
    if overlap not in ("paint", "error"):
        raise VoxsegError(f"overlap must be 'paint' or 'error', got {overlap!r}")
    roi_rules = [r for r in rois if isinstance(r, RoiRule)]
    roi_rules += parse_roi_rules([r for r in rois if isinstance(r, str)]) if not roi_rules else []
    chan_rules = [c for c in channels if isinstance(c, ChannelRule)]
    chan_rules += parse_channel_rules([c for c in channels if isinstance(c, str)])
    out = prepare_output(out, overwrite)
    for name in ("import_report.json", "import_report.csv", "case_map.csv"):
        (out / name).unlink(missing_ok=True)
    report = ImportReport(out)
    cache = Path(index) if index else out / INDEX_NAME
    headers, damaged, report.ignored_files = index_archive(src, cache, num_processes)
    for path, why in damaged.items():
        report.failed.append({"item": path, "reason": why})
    cases = plan_cases(headers, modality, chan_rules, report, series_uids)
    names = [c.name for c in chan_rules] or [
        cases[0].channels[0][0].modality if cases else (modality or "CT")
    ]
    jobs = [(c, roi_rules, out, overlap, allow_missing, resample_uneven) for c in cases]
    results = run_cases(_convert_case, jobs, num_processes, "importing DICOM cases")
    unmatched: Counter[str] = Counter()
    for case, entry in zip(cases, results, strict=True):
        unmatched.update(entry.get("unmatched", []))
        report.warnings.extend(f"{case.case_id}: {w}" for w in entry.get("warnings", []))
        status = entry.get("status")
        if status == "ok":
            report.cases.append(entry)
        elif status == "skipped":
            report.skipped.append(
                {"item": entry["case"], "patient": case.patient_id, "reason": entry["reason"]}
            )
        else:
            report.failed.append(
                {
                    "item": f"{case.case_id} ({_describe(case.channels[0][0])})",
                    "reason": entry["reason"],
                }
            )
    report.unmatched_rois = dict(sorted(unmatched.items()))
    _renumber(report, out)
    if not report.cases:
        raise VoxsegError(
            f"{src}: no case could be imported; "
            + "; ".join(f"{d['item']}: {d['reason']}" for d in (report.skipped + report.failed)[:5])
        )
    labels = {"background": 0, **{r.label: i for i, r in enumerate(roi_rules, start=1)}}
    write_dataset_json(
        out,
        dict(enumerate(names)),
        labels,
        len(report.cases),
        ".nii.gz",
        description=f"imported from DICOM ({src.name}) by voxseg",
    )
    _write_reports(report, roi_rules)
    finish_output(out)
    return report


def _renumber(report: ImportReport, out: Path) -> None:
    """Make written case ids consecutive (skipped and failed cases leave gaps)."""
    for i, entry in enumerate(report.cases):
        new = f"case_{i:04d}"
        old = entry["case"]
        if new == old:
            continue
        for f in sorted((out / "imagesTr").glob(f"{old}_*.nii.gz")):
            os.replace(f, f.with_name(new + f.name[len(old) :]))
        os.replace(out / "labelsTr" / f"{old}.nii.gz", out / "labelsTr" / f"{new}.nii.gz")
        entry["case"] = new


def _write_reports(report: ImportReport, rules: list[RoiRule]) -> None:
    out = report.out
    rows = [["case", "PatientID", "StudyInstanceUID", "SeriesInstanceUID"]]
    rows += [[c["case"], c["patient"], c["study"], c["series"]] for c in report.cases]
    atomic_write_text(out / "case_map.csv", _csv(rows))
    write_json(
        out / "import_report.json",
        {
            "labels": {r.label: r.patterns for r in rules},
            "cases": report.cases,
            "skipped": report.skipped,
            "failed": report.failed,
            "warnings": report.warnings,
            "unmatched_rois": report.unmatched_rois,
            "ignored_non_dicom_files": report.ignored_files,
        },
    )
    table = [["case_or_item", "status", "series", "rois", "missing", "reason"]]
    for c in report.cases:
        rois = "; ".join(f"{k}<-{'|'.join(v)}" for k, v in c.get("rois", {}).items())
        table.append([c["case"], "ok", c["series"], rois, " ".join(c.get("missing", [])), ""])
    for status, items in (("skipped", report.skipped), ("failed", report.failed)):
        table += [[d["item"], status, "", "", "", d["reason"]] for d in items]
    atomic_write_text(out / "import_report.csv", _csv(table))


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()
