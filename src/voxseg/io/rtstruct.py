"""DICOM RT Structure Sets: read ROIs and their contours, write label maps as contours.

Contours are matched to ROIs by ReferencedROINumber, never by position (planning systems
leave ROIs without contours out of ROIContourSequence). Placement on an image grid uses
geometry only (:func:`voxseg.io.contours.contours_to_mask`), so structure sets without
per-contour image references work too. Written structure sets trace each label's voxel-
centre boundary (:func:`voxseg.io.contours.mask_to_contours`, holes as separate contours),
reference the source slice of every contour, and copy the patient and study of the source.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.errors import VoxsegError
from voxseg.io.contours import RasterReport, contours_to_mask, mask_to_contours
from voxseg.io.dicom import DicomSeries, decimal_string, new_dataset

RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
_AREA_TYPES = ("CLOSED_PLANAR", "CLOSED_PLANAR_XOR")
#: ROI colours (RGB) for written labels, cycled.
COLOURS = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
)


@dataclass
class Roi:
    """One ROI of a structure set and its closed planar contours (LPS mm)."""

    number: int
    name: str
    contours: list[np.ndarray] = field(default_factory=list)
    #: Contours left out because they are not areas (POINT, OPEN_PLANAR …), with counts.
    skipped_types: dict[str, int] = field(default_factory=dict)


@dataclass
class StructureSet:
    path: Path
    frame_of_reference_uid: str
    referenced_series: list[str]
    rois: list[Roi]

    def roi(self, name: str) -> Roi:
        for r in self.rois:
            if r.name == name:
                return r
        raise KeyError(name)


def read_rtstruct(path: str | os.PathLike[str]) -> StructureSet:
    """ROIs and contours of an RTSTRUCT file; :class:`VoxsegError` if it is not one."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise VoxsegError(f"{path}: not a readable DICOM file ({exc})") from exc
    if str(ds.get("Modality", "")) != "RTSTRUCT" or "StructureSetROISequence" not in ds:
        raise VoxsegError(f"{path}: not an RT Structure Set (Modality {ds.get('Modality')!r})")
    rois = {
        int(r.ROINumber): Roi(int(r.ROINumber), str(r.get("ROIName", f"ROI {r.ROINumber}")))
        for r in ds.StructureSetROISequence
    }
    for item in ds.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        roi = rois.setdefault(number, Roi(number, f"ROI {number}"))
        for c in item.get("ContourSequence", []):
            kind = str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            data = _contour_data(c, path)
            if kind not in _AREA_TYPES or data is None:
                roi.skipped_types[kind] = roi.skipped_types.get(kind, 0) + 1
                continue
            roi.contours.append(data)
    frame, series = "", []
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        frame = frame or str(ref.get("FrameOfReferenceUID", ""))
        for study in ref.get("RTReferencedStudySequence", []):
            series.extend(
                str(s.SeriesInstanceUID) for s in study.get("RTReferencedSeriesSequence", [])
            )
    return StructureSet(path, frame, series, sorted(rois.values(), key=lambda r: r.number))


def _contour_data(item: Any, path: Path) -> np.ndarray | None:
    """ContourData ``(N, 3)``, parsed from the encoded bytes when still raw (pydicom's
    per-value DS objects cost most of the reading time of large structure sets)."""
    tag = 0x30060050
    if tag not in item:
        return None
    elem = item.get_item(tag)
    try:
        if getattr(elem, "is_raw", False) and isinstance(elem.value, bytes):
            text = elem.value.decode("ascii").strip(" \x00")
            values = np.array(text.split("\\"), dtype=float) if text else np.zeros(0)
        else:
            values = np.asarray([float(v) for v in item.ContourData], dtype=float)
    except ValueError as exc:
        raise VoxsegError(f"{path}: ContourData is not a list of numbers ({exc})") from exc
    if values.size % 3:
        raise VoxsegError(f"{path}: ContourData holds {values.size} numbers, not x/y/z triples")
    return values.reshape(-1, 3)


def roi_mask(roi: Roi, series: DicomSeries) -> tuple[np.ndarray, RasterReport]:
    """The ROI rasterised on the grid of ``series`` (voxel centre inside the polygon)."""
    mask, report = contours_to_mask(roi.contours, series.geometry, name=f"ROI {roi.name!r} contour")
    for kind, n in roi.skipped_types.items():
        report.problems.append(f"ROI {roi.name!r}: {n} {kind} contour(s) are not areas (left out)")
    return mask, report


def write_rtstruct(
    label_map: np.ndarray,
    series: DicomSeries,
    labels: dict[str, int],
    path: str | os.PathLike[str],
    *,
    structure_set_label: str = "voxseg",
    description: str = "",
    software_version: str = "",
    sources: Sequence[Any] | None = None,
) -> Path:
    """Write ``label_map`` (``[z, y, x]`` on ``series``' grid) as an RTSTRUCT, one ROI per
    label in ``labels`` (name → value, background left out), atomically. The patient and
    study come from the first source header (``sources[0]`` when the caller has read them
    with :func:`voxseg.io.dicom.source_datasets`)."""
    import pydicom
    from pydicom.charset import convert_encodings, default_encoding
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    path = Path(path)
    if series.resampled:
        raise VoxsegError(f"{path}: the source series was resampled; no slice to refer contours to")
    if tuple(label_map.shape) != series.geometry.shape:
        raise VoxsegError(
            f"{path}: label map shape {label_map.shape} differs from the source series "
            f"{series.geometry.shape}"
        )
    src = sources[0] if sources else pydicom.dcmread(series.files[0], stop_before_pixels=True)
    now = datetime.datetime.now()
    ds = new_dataset(RTSTRUCT_SOP_CLASS)
    _copy_patient_and_study(src, ds)
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9001
    ds.SeriesDescription = description or structure_set_label
    ds.InstanceNumber = 1
    ds.Manufacturer = "voxseg"
    ds.SoftwareVersions = software_version or _version()
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = series.first.frame_of_reference_uid
    ds.StructureSetLabel = structure_set_label[:16]
    ds.StructureSetName = structure_set_label[:64]
    ds.StructureSetDescription = description
    ds.StructureSetDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.ApprovalStatus = "UNAPPROVED"

    slice_refs = [_image_ref(h.sop_class_uid, h.sop_instance_uid, f, h) for h, f in series.slices]
    contour_heads: dict[int, bytes] = {}
    instances = {h.sop_instance_uid: h for h, _ in series.slices}
    contour_images = Sequence(
        [_image_ref(h.sop_class_uid, uid, None, h) for uid, h in instances.items()]
    )
    rt_series = pydicom.Dataset()
    rt_series.SeriesInstanceUID = series.uid
    rt_series.ContourImageSequence = contour_images
    rt_study = pydicom.Dataset()
    rt_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # detached study management
    rt_study.ReferencedSOPInstanceUID = series.first.study_uid
    rt_study.RTReferencedSeriesSequence = Sequence([rt_series])
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = series.first.frame_of_reference_uid
    frame.RTReferencedStudySequence = Sequence([rt_study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([frame])

    set_rois, roi_contours, observations = Sequence(), Sequence(), Sequence()
    foreground = [(n, v) for n, v in labels.items() if int(v) != 0]
    for number, (name, value) in enumerate(foreground, start=1):
        roi = pydicom.Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = series.first.frame_of_reference_uid
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        set_rois.append(roi)
        item = pydicom.Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = list(COLOURS[(number - 1) % len(COLOURS)])
        contours = mask_to_contours(label_map == value, series.geometry)
        if contours:
            item[_CONTOUR_SEQUENCE] = _encoded_contour_sequence(
                contours, slice_refs, contour_heads, path
            )
        # The item holds an encoded element: pydicom copies it when the item is written in
        # the encoding it declares (explicit VR little endian, as the file, see new_dataset).
        item.set_original_encoding(False, True, default_encoding)
        roi_contours.append(item)
        obs = pydicom.Dataset()
        obs.ObservationNumber = number
        obs.ReferencedROINumber = number
        obs.ROIObservationLabel = name[:16]
        obs.RTROIInterpretedType = "ORGAN"
        obs.ROIInterpreter = ""
        observations.append(obs)
    ds.StructureSetROISequence = set_rois
    ds.ROIContourSequence = roi_contours
    ds.RTROIObservationsSequence = observations
    # Declared, so pydicom writes the top level as it is instead of walking (and decoding)
    # every nested sequence to correct ambiguous VRs, of which a structure set has none.
    charset = ds.SpecificCharacterSet if "SpecificCharacterSet" in ds else None
    ds.set_original_encoding(
        False, True, default_encoding if charset is None else convert_encodings(charset)
    )
    return _atomic_save(ds, path)


def _image_ref(sop_class: str, sop_uid: str, frame: int | None, h: Any) -> Any:
    import pydicom

    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = sop_class
    ref.ReferencedSOPInstanceUID = sop_uid
    if frame is not None and h.number_of_frames > 1:
        ref.ReferencedFrameNumber = frame + 1
    return ref


_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "IssuerOfPatientID",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "SpecificCharacterSet",
)


def _copy_patient_and_study(src: Any, ds: Any) -> None:
    """Patient and General Study modules of the source (the DICOM object joins its study)."""
    for key in _PATIENT_STUDY:
        if key in src:
            setattr(ds, key, src[key].value)
        elif key not in ("IssuerOfPatientID", "PatientAge", "SpecificCharacterSet"):
            setattr(ds, key, "")


#: (3006,0040) Contour Sequence.
_CONTOUR_SEQUENCE = 0x30060040
_ITEM = b"\xfe\xff\x00\xe0"


def _contour_head(image_ref: Any) -> bytes:
    """The start of every contour item on one slice, encoded by pydicom (explicit VR little
    endian): Contour Image Sequence with the slice's reference, Contour Geometric Type."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pydicom.sequence import Sequence

    item = pydicom.Dataset()
    item.ContourImageSequence = Sequence([image_ref])
    item.ContourGeometricType = "CLOSED_PLANAR"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, item)
    return fp.getvalue()


def _encoded_contour_sequence(
    contours: list[tuple[int, np.ndarray]],
    slice_refs: list[Any],
    heads: dict[int, bytes],
    path: Path,
) -> Any:
    """A Contour Sequence as one encoded (raw) element, the bytes pydicom writes for items
    of ``ContourImageSequence``, ``ContourGeometricType``, ``NumberOfContourPoints`` and
    ``ContourData``: building and writing one pydicom Dataset per contour cost ~1.7 ms,
    which made the noisy maps of poor models (10^5-10^6 contours) take up to an hour.
    ``heads`` caches :func:`_contour_head` per slice index."""
    import warnings

    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    texts = _decimal_strings(np.concatenate([points.reshape(-1) for _, points in contours]))
    parts, start = [], 0
    for k, points in contours:
        if k not in heads:
            heads[k] = _contour_head(slice_refs[k])
        count = str(len(points)).encode("ascii")
        if len(count) % 2:
            count += b" "
        data = "\\".join(texts[start : start + points.size]).encode("ascii")
        start += points.size
        if len(data) % 2:
            data += b" "
        if len(data) <= 0xFFFF:
            data_head = b"\x06\x30\x50\x00DS" + len(data).to_bytes(2, "little")
        else:  # as pydicom writes a value past the 2-byte length of explicit VR DS
            warnings.warn(
                f"{path}: a contour of {len(points)} points on slice {k} has more ContourData "
                "than an explicit VR DS value holds (64 kB); written with VR UN",
                stacklevel=3,
            )
            data_head = b"\x06\x30\x50\x00UN\x00\x00" + len(data).to_bytes(4, "little")
        body = b"".join(
            (
                heads[k],
                b"\x06\x30\x46\x00IS",
                len(count).to_bytes(2, "little"),
                count,
                data_head,
                data,
            )
        )
        parts += [_ITEM, len(body).to_bytes(4, "little"), body]
    value = b"".join(parts)
    tag = Tag(_CONTOUR_SEQUENCE)
    return RawDataElement(tag, "SQ", len(value), value, 0, False, True)


def _decimal_strings(values: np.ndarray) -> list[str]:
    """``decimal_string(v, 10)`` of every value. ``%.10g`` is that string unless it passes
    16 characters, which needs a three-digit exponent: those values (and non-finite ones)
    take the general rule."""
    texts = list(map("%.10g".__mod__, values.tolist()))
    magnitude = np.abs(values)
    usual = (magnitude < 1e100) & ((magnitude >= 1e-99) | (values == 0))
    for i in np.flatnonzero(~usual):
        texts[i] = decimal_string(float(values[i]), 10)
    return texts


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"voxseg {version('voxseg')}"
    except PackageNotFoundError:
        return "voxseg"


def _atomic_save(ds: Any, path: Path) -> Path:
    """Write ``ds`` to ``path`` through a hidden temporary file in the same folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
