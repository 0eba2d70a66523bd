"""DICOM image series through pydicom: headers, slice order, geometry and pixels.

A series is sorted along the normal of its ImageOrientationPatient (row × column direction)
by the projection of each ImagePositionPatient, whatever the file names; array axes are
``[z, y, x]`` = (slice normal, column direction, row direction), spacing
(slice step, PixelSpacing[0], PixelSpacing[1]). Enhanced multi-frame files contribute one
slice per frame (PerFrameFunctionalGroupsSequence). Pixels are RescaleSlope × stored +
RescaleIntercept; integer results stay integers (``int16`` when they fit), fractional ones
are ``float32``. Compressed transfer syntaxes decode through pydicom's plug-ins (pylibjpeg
with its openjpeg/libjpeg/rle plug-ins, or python-gdcm).

Objects that are not images (RTSTRUCT, SEG, RTPLAN, RTDOSE, SR, KO, presentation states,
JSON or CSV files beside the series) never become part of a series.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.errors import VoxsegError
from voxseg.io.image import Geometry, Image

#: Modalities of DICOM objects that are never image slices of a series.
NON_IMAGE_MODALITIES = frozenset(
    {"RTSTRUCT", "SEG", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE", "SR", "KO", "PR", "REG", "DOC"}
)
#: Relative deviation of a slice step from the median step that counts as uneven.
SPACING_TOLERANCE = 0.01
_DECODERS = "pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle (or python-gdcm)"


@dataclass
class DicomHeader:
    """What voxseg needs from one DICOM file's header (JSON-serialisable for the index)."""

    path: str
    modality: str = ""
    sop_class_uid: str = ""
    sop_instance_uid: str = ""
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    sequence_name: str = ""
    frame_of_reference_uid: str = ""
    rows: int = 0
    columns: int = 0
    number_of_frames: int = 1
    slice_thickness: float = 0.0
    #: One (position, orientation, pixel spacing) per frame; empty for non-images.
    positions: list[list[float]] = field(default_factory=list)
    orientation: list[float] = field(default_factory=list)
    pixel_spacing: list[float] = field(default_factory=list)
    transfer_syntax: str = ""
    #: Series (and SOP instances) an RTSTRUCT or SEG refers to.
    referenced_series: list[str] = field(default_factory=list)
    referenced_instances: list[str] = field(default_factory=list)
    #: Pixel encoding of a classic slice: with these the pixels are read without parsing
    #: the file again (:func:`read_series_pixels`); None/0 where the header lacks them.
    rescale: list[float] | None = None
    bits_allocated: int = 0
    bits_stored: int = 0
    pixel_representation: int = 0
    samples_per_pixel: int = 0

    @property
    def is_image(self) -> bool:
        return (
            self.rows > 0
            and self.modality.upper() not in NON_IMAGE_MODALITIES
            and bool(self.positions)
            and len(self.orientation) == 6
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DicomHeader:
        return cls(**d)


def read_header(path: str | os.PathLike[str]) -> DicomHeader:
    """The header of one file (pixels not read); :class:`VoxsegError` for non-DICOM files."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError) as exc:
        raise VoxsegError(f"{path}: not a readable DICOM file ({exc})") from exc
    if "SOPInstanceUID" not in ds:
        raise VoxsegError(f"{path}: not a DICOM object (no SOPInstanceUID)")
    try:
        return header_from_dataset(ds, path)
    except (AttributeError, ValueError, TypeError, IndexError) as exc:
        raise VoxsegError(f"{path}: damaged DICOM header ({exc})") from exc


def header_from_dataset(ds: Any, path: str | os.PathLike[str]) -> DicomHeader:
    """:class:`DicomHeader` of a pydicom dataset (classic or enhanced multi-frame)."""
    h = DicomHeader(
        path=str(path),
        modality=str(ds.get("Modality", "")),
        sop_class_uid=str(ds.get("SOPClassUID", "")),
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        series_number=int(ds.SeriesNumber) if ds.get("SeriesNumber") not in (None, "") else None,
        series_description=str(ds.get("SeriesDescription", "")),
        sequence_name=str(ds.get("SequenceName", "") or ds.get("PulseSequenceName", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
        slice_thickness=float(ds.get("SliceThickness", 0) or 0),
    )
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        h.transfer_syntax = str(meta.TransferSyntaxUID)
    if "PerFrameFunctionalGroupsSequence" in ds and h.modality.upper() != "SEG":
        _enhanced_geometry(ds, h)
    elif "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        h.positions = [[float(v) for v in ds.ImagePositionPatient]]
        h.orientation = [float(v) for v in ds.ImageOrientationPatient]
        h.pixel_spacing = [float(v) for v in ds.get("PixelSpacing", [1.0, 1.0])]
        h.rescale = list(_rescale(ds, 0))
        h.bits_allocated = int(ds.get("BitsAllocated", 0) or 0)
        h.bits_stored = int(ds.get("BitsStored", 0) or 0)
        h.pixel_representation = int(ds.get("PixelRepresentation", 0) or 0)
        h.samples_per_pixel = int(ds.get("SamplesPerPixel", 0) or 0)
    if h.modality.upper() == "RTSTRUCT":
        for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
            if not h.frame_of_reference_uid:
                h.frame_of_reference_uid = str(ref.get("FrameOfReferenceUID", ""))
            for study in ref.get("RTReferencedStudySequence", []):
                for series in study.get("RTReferencedSeriesSequence", []):
                    h.referenced_series.append(str(series.SeriesInstanceUID))
                    h.referenced_instances.extend(
                        str(im.ReferencedSOPInstanceUID)
                        for im in series.get("ContourImageSequence", [])
                    )
    elif h.modality.upper() == "SEG":
        for series in ds.get("ReferencedSeriesSequence", []):
            h.referenced_series.append(str(series.SeriesInstanceUID))
            h.referenced_instances.extend(
                str(im.ReferencedSOPInstanceUID)
                for im in series.get("ReferencedInstanceSequence", [])
            )
    return h


def _enhanced_geometry(ds: Any, h: DicomHeader) -> None:
    """Per-frame positions and the shared orientation/spacing of an enhanced image."""
    shared = ds.get("SharedFunctionalGroupsSequence", [None])[0]

    def item(frame: Any, name: str) -> Any:
        for groups in (frame, shared):
            if groups is not None and name in groups:
                return groups[name][0]
        return None

    for frame in ds.PerFrameFunctionalGroupsSequence:
        pos = item(frame, "PlanePositionSequence")
        if pos is None:
            return
        h.positions.append([float(v) for v in pos.ImagePositionPatient])
    first = ds.PerFrameFunctionalGroupsSequence[0]
    orient, measures = item(first, "PlaneOrientationSequence"), item(first, "PixelMeasuresSequence")
    if orient is not None:
        h.orientation = [float(v) for v in orient.ImageOrientationPatient]
    if measures is not None:
        h.pixel_spacing = [float(v) for v in measures.PixelSpacing]


@dataclass
class DicomSeries:
    """An image series sorted into array order: one ``(header, frame)`` per slice."""

    slices: list[tuple[DicomHeader, int]]
    geometry: Geometry
    #: Position of each slice along the normal (mm); uneven when resampled.
    normal_positions: np.ndarray
    resampled: bool = False

    @property
    def first(self) -> DicomHeader:
        return self.slices[0][0]

    @property
    def uid(self) -> str:
        return self.first.series_uid

    @property
    def files(self) -> list[Path]:
        seen: dict[str, None] = {}
        for h, _ in self.slices:
            seen.setdefault(h.path, None)
        return [Path(p) for p in seen]

    @property
    def sop_instance_uids(self) -> list[str]:
        return [h.sop_instance_uid for h, _ in self.slices]

    def describe(self) -> str:
        return describe_series(list({id(h): h for h, _ in self.slices}.values()))


def assemble_series(
    headers: Sequence[DicomHeader], *, resample_uneven: bool = False, source: str = ""
) -> DicomSeries:
    """Sort the image headers of one series into slices and derive its geometry.

    Raises :class:`VoxsegError` (naming ``source``) for duplicate slice positions, a missing
    slice or otherwise uneven spacing unless ``resample_uneven`` (the pixels are then
    interpolated linearly onto an even grid), and for slices of different size or orientation.
    """
    source = source or (headers[0].path if headers else "?")
    images = [h for h in headers if h.is_image]
    if not images:
        raise VoxsegError(f"{source}: no image slices in this series")
    ref = images[0]
    iop = np.asarray(ref.orientation, dtype=float)
    for h in images[1:]:
        if (h.rows, h.columns) != (ref.rows, ref.columns) or not np.allclose(
            h.orientation, iop, atol=1e-4
        ):
            raise VoxsegError(
                f"{source}: slices of different size or orientation in series {ref.series_uid} "
                f"({Path(h.path).name} vs {Path(ref.path).name}); is this a mixed series?"
            )
    row, col = _unit(iop[:3]), _unit(iop[3:])
    normal = np.cross(row, col)
    slices = [(h, f) for h in images for f in range(len(h.positions))]
    pos = np.array([h.positions[f] for h, f in slices], dtype=float)
    along = pos @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    pos, along = pos[order], along[order]
    spacing_yx = [float(v) for v in (ref.pixel_spacing or [1.0, 1.0])]
    resampled = False
    if len(slices) > 1:
        steps = np.diff(along)
        dup = np.flatnonzero(steps < 1e-3)
        if dup.size:
            a, b = slices[dup[0]][0], slices[dup[0] + 1][0]
            raise VoxsegError(
                f"{source}: duplicate slice position {along[dup[0]]:.3f} mm along the normal "
                f"({Path(a.path).name}, {Path(b.path).name}); two series mixed, or a repeated "
                "file: keep one"
            )
        # the most common step (ties: the smaller) is the series' spacing
        values, counts = np.unique(np.round(steps, 2), return_counts=True)
        step = float(values[np.argmax(counts)])
        uneven = np.abs(steps - step) > SPACING_TOLERANCE * step + 1e-3
        if not uneven.any():
            step = float((along[-1] - along[0]) / (len(along) - 1))
        if uneven.any():
            i = int(np.flatnonzero(uneven)[0])
            kind = (
                "a missing slice"
                if abs(steps[i] / step - round(steps[i] / step)) < 0.05 and steps[i] > step
                else "uneven slice spacing"
            )
            if not resample_uneven:
                raise VoxsegError(
                    f"{source}: {kind} in series {ref.series_uid}: step {steps[i]:.3f} mm "
                    f"between {along[i]:.3f} and {along[i + 1]:.3f} mm where the others are "
                    f"{step:.3f} mm; pass --resample-uneven to interpolate onto an even grid"
                )
            resampled = True
        shear = (pos[-1] - pos[0]) - normal * (along[-1] - along[0])
        if np.linalg.norm(shear) > 0.01 * max(1.0, along[-1] - along[0]):
            raise VoxsegError(
                f"{source}: slice positions of series {ref.series_uid} do not follow the "
                "slice normal (gantry tilt or sheared stack); resample it to an orthogonal "
                "grid first"
            )
    else:
        step = ref.slice_thickness or 1.0
    nz = len(slices)
    if resampled:
        nz = int(round((along[-1] - along[0]) / step)) + 1
    geometry = Geometry(
        shape=(nz, ref.rows, ref.columns),
        spacing=(step, spacing_yx[0], spacing_yx[1]),
        origin=tuple(pos[0]),
        direction=np.column_stack([normal, col, row]),
    )
    return DicomSeries(slices, geometry, along, resampled)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    if n == 0:
        raise VoxsegError("ImageOrientationPatient has a zero vector")
    return v / n


def read_series_pixels(series: DicomSeries) -> Image:
    """Pixels of ``series`` in array order with its geometry (see module docstring).

    Classic uncompressed little-endian 16-bit slices whose headers carry their encoding (as
    :func:`read_header` records it) are read straight from the end of each file, without
    parsing it again; everything else goes through pydicom's pixel handlers.
    """
    raw = _raw_slices(series)
    if raw is not None:
        stored, slopes = raw
    else:
        stored, slopes = _decoded_slices(series)
    slope = np.array([s for s, _ in slopes])[:, None, None]
    intercept = np.array([i for _, i in slopes])[:, None, None]
    if np.all(slope == 1) and np.all(intercept == np.round(intercept)):
        shift = intercept.astype(np.int64)
        lo = int(stored.min()) + int(shift.min()) if stored.size else 0
        hi = int(stored.max()) + int(shift.max()) if stored.size else 0
        dtype = np.int16 if -(2**15) <= lo and hi < 2**15 else np.int32
        if np.all(shift == 0) and stored.dtype in (np.uint8, np.int16, np.uint16):
            array = stored
        else:
            array = stored if stored.dtype == dtype else stored.astype(dtype)
            if np.all(shift == shift.flat[0]):
                array += dtype(shift.flat[0])
            else:
                array += shift.astype(dtype)
    else:
        array = (stored.astype(np.float64) * slope + intercept).astype(np.float32)
    if series.resampled:
        array = _resample_along(array, series)
    return Image.from_geometry(np.ascontiguousarray(array), series.geometry)


#: Transfer syntaxes whose pixel data are the plain little-endian values, and the length of
#: the PixelData element's header in each (explicit VR: tag, VR, 2 reserved, 4-byte length).
_NATIVE_SYNTAXES = {"1.2.840.10008.1.2.1": 12, "1.2.840.10008.1.2": 8}


def _raw_slices(series: DicomSeries) -> tuple[np.ndarray, list[tuple[float, float]]] | None:
    """Stored values read from the end of each file when every slice is classic, native
    little endian, 16-bit single-sample with its rescale in the header and its PixelData the
    last element (the element header just before the values is checked); else None. Unused
    high bits are kept as stored, as pydicom's ``pixel_array`` keeps them."""
    first = series.first
    ok = all(
        h.number_of_frames == 1
        and h.transfer_syntax in _NATIVE_SYNTAXES
        and h.rescale is not None
        and h.bits_allocated == 16
        and 0 < h.bits_stored <= 16
        and h.samples_per_pixel == 1
        and h.pixel_representation == first.pixel_representation
        for h, _ in series.slices
    )
    if not ok:
        return None
    dtype = np.dtype("<i2" if first.pixel_representation else "<u2")
    stored = np.empty((len(series.slices), first.rows, first.columns), dtype)
    nbytes = first.rows * first.columns * 2
    for k, (h, _) in enumerate(series.slices):
        head = _NATIVE_SYNTAXES[h.transfer_syntax]
        try:
            with open(h.path, "rb") as f:
                f.seek(0, os.SEEK_END)
                if f.tell() < nbytes + head:
                    return None
                f.seek(-(nbytes + head), os.SEEK_END)
                element = f.read(head)
                if not _is_pixel_element(element, nbytes) or f.readinto(stored[k]) != nbytes:
                    return None
        except OSError as exc:
            raise VoxsegError(f"{h.path}: cannot read DICOM file ({exc})") from exc
    return stored, [(h.rescale[0], h.rescale[1]) for h, _ in series.slices]


def _is_pixel_element(element: bytes, nbytes: int) -> bool:
    """Whether ``element`` is the header of a PixelData element of ``nbytes`` values."""
    if element[:4] != b"\xe0\x7f\x10\x00":
        return False
    if len(element) == 12:
        return element[4:6] in (b"OW", b"OB") and int.from_bytes(element[8:], "little") == nbytes
    return int.from_bytes(element[4:], "little") == nbytes


def _decoded_slices(series: DicomSeries) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Stored values of every slice through pydicom (any transfer syntax, multi-frame)."""
    import pydicom

    stored: np.ndarray | None = None
    slopes: list[tuple[float, float]] = []
    cache: dict[str, Any] = {}
    for k, (h, frame) in enumerate(series.slices):
        ds = cache.get(h.path)
        if ds is None:
            try:
                ds = pydicom.dcmread(h.path)
            except (OSError, EOFError, ValueError) as exc:
                raise VoxsegError(f"{h.path}: cannot read DICOM file ({exc})") from exc
            cache.clear()
            cache[h.path] = ds
        plane = _pixels(ds, h.path)[frame] if h.number_of_frames > 1 else _pixels(ds, h.path)
        if stored is None:
            stored = np.empty((len(series.slices), *plane.shape), plane.dtype)
        elif plane.shape != stored.shape[1:]:
            raise VoxsegError(f"{h.path}: slice of shape {plane.shape}, others {stored.shape[1:]}")
        elif np.result_type(stored, plane) != stored.dtype:
            stored = stored.astype(np.result_type(stored, plane))
        stored[k] = plane
        slopes.append(_rescale(ds, frame))
    if stored is None:
        raise VoxsegError(f"{series.describe()}: no slices to read")
    return stored, slopes


def _pixels(ds: Any, path: str) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise VoxsegError(f"{path}: DICOM without pixel data (is it an image?)")
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise VoxsegError(
            f"{path}: cannot decode the pixel data (transfer syntax {name}): {exc}. "
            f"Install the decoders with `pip install {_DECODERS}`"
        ) from exc


def _rescale(ds: Any, frame: int) -> tuple[float, float]:
    """RescaleSlope/Intercept of a classic slice, or of one frame of an enhanced image."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    for groups in (
        ds.get("PerFrameFunctionalGroupsSequence", [None] * (frame + 1))[frame],
        ds.get("SharedFunctionalGroupsSequence", [None])[0],
    ):
        if groups is not None and "PixelValueTransformationSequence" in groups:
            t = groups.PixelValueTransformationSequence[0]
            return float(t.get("RescaleSlope", 1) or 1), float(t.get("RescaleIntercept", 0) or 0)
    return 1.0, 0.0


def _resample_along(array: np.ndarray, series: DicomSeries) -> np.ndarray:
    """Linear interpolation of uneven slices onto the even grid of ``series.geometry``."""
    along = series.normal_positions
    target = along[0] + np.arange(series.geometry.shape[0]) * series.geometry.spacing[0]
    hi = np.clip(np.searchsorted(along, target, side="right"), 1, len(along) - 1)
    lo = hi - 1
    w = ((target - along[lo]) / (along[hi] - along[lo])).clip(0, 1)[:, None, None]
    out = array[lo].astype(np.float32) * (1 - w) + array[hi].astype(np.float32) * w
    if np.issubdtype(array.dtype, np.integer):
        return np.rint(out).astype(array.dtype)
    return out.astype(np.float32)


def scan_headers(
    files: Iterable[str | os.PathLike[str]],
) -> tuple[list[DicomHeader], dict[str, str]]:
    """Headers of the DICOM files among ``files`` and ``{path: reason}`` for the others."""
    headers, problems = [], {}
    for f in files:
        try:
            headers.append(read_header(f))
        except VoxsegError as exc:
            problems[str(f)] = str(exc)
    return headers, problems


def has_dicom_preamble(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` carries the DICOM part 10 marker (``DICM`` after the 128-byte
    preamble), whatever its name; False for other files and unreadable ones."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def candidate_files(folder: Path) -> list[Path]:
    """Files under ``folder`` that may be DICOM: any name, none hidden, no known non-DICOM
    ending (JSON, CSV, text, images, NIfTI)."""
    skip = (".json", ".csv", ".txt", ".md", ".nii", ".gz", ".png", ".jpg", ".xml", ".npz", ".zip")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and not p.name.lower().endswith(skip)
        and p.name.upper() != "DICOMDIR"
    )


def group_series(headers: Iterable[DicomHeader]) -> dict[str, list[DicomHeader]]:
    """Image headers by SeriesInstanceUID (non-image objects left out), largest series
    first."""
    out: dict[str, list[DicomHeader]] = {}
    for h in headers:
        if h.is_image:
            out.setdefault(h.series_uid, []).append(h)
    return dict(sorted(out.items(), key=lambda kv: -_num_slices(kv[1])))


def folder_groups(folder: str | os.PathLike[str]) -> dict[str, list[DicomHeader]]:
    """The image headers under ``folder`` by series (see :func:`group_series`);
    :class:`VoxsegError` if there are none."""
    folder = Path(folder)
    headers, _ = scan_headers(candidate_files(folder))
    groups = group_series(headers)
    if not groups:
        raise VoxsegError(
            f"{folder}: no DICOM series found in this folder or below; point to the folder "
            "that holds the .dcm files, or convert the scan to .nii.gz"
        )
    return groups


def _num_slices(headers: Sequence[DicomHeader]) -> int:
    return sum(len(h.positions) for h in headers)


def describe_series(headers: Sequence[DicomHeader]) -> str:
    """``CT #3 'Abdomen 1.0' (150 slices, 1.2.3…)``: how messages name a series."""
    h = headers[0]
    num = "" if h.series_number is None else f" #{h.series_number}"
    desc = f" {h.series_description!r}" if h.series_description else ""
    return f"{h.modality}{num}{desc} ({_num_slices(headers)} slices, {h.series_uid})"


def series_matches(selector: str, header: DicomHeader) -> bool:
    """Whether the series of ``header`` is the one ``selector`` names.

    ``uid:1.2.3`` (SeriesInstanceUID), ``number:3`` (SeriesNumber), ``desc:*abdomen*``
    (SeriesDescription), ``seq:*tse*`` (sequence name), ``modality:MR``; globs are
    case-insensitive. A bare selector matches the UID, the SeriesNumber or the description.
    """
    from fnmatch import fnmatch

    key, sep, value = selector.partition(":")
    if not sep:
        text = selector.strip()
        return text in (header.series_uid, str(header.series_number)) or fnmatch(
            header.series_description.lower(), text.lower()
        )
    fields = {
        "uid": header.series_uid,
        "number": str(header.series_number),
        "desc": header.series_description,
        "seq": header.sequence_name,
        "modality": header.modality,
    }
    if key.strip().lower() not in fields:
        raise VoxsegError(
            f"series selector {selector!r}: unknown key {key!r}; use uid:, number:, desc:, "
            "seq: or modality:"
        )
    return fnmatch(fields[key.strip().lower()].lower(), value.strip().lower())


def list_series(groups: Iterable[Sequence[DicomHeader]], limit: int = 20) -> str:
    """One indented line per series (see :func:`describe_series`), for messages."""
    groups = list(groups)
    lines = [f"  {describe_series(hs)}" for hs in groups[:limit]]
    if len(groups) > limit:
        lines.append(f"  … and {len(groups) - limit} more")
    return "\n".join(lines)


def choose_series(
    groups: dict[str, list[DicomHeader]], selector: str | None, source: str
) -> list[DicomHeader]:
    """The headers of the one series in ``groups`` that ``selector`` names (see
    :func:`series_matches`). Without a selector there must be one series: several are an
    error listing them (modality, number, description, slices, UID), never a silent pick."""
    if selector is None:
        if len(groups) == 1:
            return next(iter(groups.values()))
        raise VoxsegError(
            f"{source}: holds {len(groups)} image series; choose one with --series-uid UID "
            f"(or --series desc:PATTERN):\n{list_series(groups.values())}"
        )
    chosen = [hs for hs in groups.values() if series_matches(selector, hs[0])]
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise VoxsegError(
            f"{source}: no series matches {selector!r}; it holds:\n{list_series(groups.values())}"
        )
    raise VoxsegError(
        f"{source}: {len(chosen)} series match {selector!r}; choose one by its UID:\n"
        f"{list_series(chosen)}"
    )


def read_dicom_folder(
    folder: str | os.PathLike[str],
    *,
    series: str | None = None,
    resample_uneven: bool = False,
) -> tuple[Image, DicomSeries]:
    """Read the image series under ``folder``: its only one, or the one ``series`` selects
    (see :func:`series_matches`)."""
    headers = choose_series(folder_groups(folder), series, str(folder))
    chosen = assemble_series(headers, resample_uneven=resample_uneven, source=str(folder))
    return read_series_pixels(chosen), chosen


def source_datasets(series: DicomSeries) -> list[Any]:
    """The pydicom headers (no pixels) of the files of ``series`` in slice order, for
    writers that reference the source images."""
    import pydicom

    return [pydicom.dcmread(p, stop_before_pixels=True) for p in series.files]


# --------------------------------------------------------------------------- writing

_SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "PT": "1.2.840.10008.5.1.4.1.1.128",
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def stored_pixels(array: np.ndarray, source: str) -> tuple[np.ndarray, float, float]:
    """16-bit stored values and (RescaleSlope, RescaleIntercept) reproducing ``array``.

    Integers that fit are kept (int16/uint16, slope 1); values that are multiples of a power
    of two ≥ 1/256 (e.g. slope 0.5) are stored exactly; other floats are quantised linearly
    over their range (error ≤ range / 131070).
    """
    arr = np.asarray(array)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.size and not np.all(np.isfinite(arr)):
        raise VoxsegError(f"{source}: DICOM cannot store NaN or infinite pixel values")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    for k in range(0, 9):
        step = 2.0**-k
        scaled = arr.astype(np.float64) / step
        if np.all(scaled == np.round(scaled)):
            for dtype in (np.int16, np.uint16):
                info = np.iinfo(dtype)
                if info.min <= lo / step and hi / step <= info.max:
                    return scaled.astype(dtype), step, 0.0
            break
        if np.issubdtype(arr.dtype, np.integer):
            break
    slope = (hi - lo) / 65535.0 or 1.0
    intercept = lo + 32768.0 * slope
    stored = np.clip(np.rint((arr.astype(np.float64) - intercept) / slope), -32768, 32767)
    return stored.astype(np.int16), slope, intercept


def new_dataset(sop_class: str) -> Any:
    """An empty ``pydicom.Dataset`` of ``sop_class`` with a new SOP instance UID and its file
    meta (explicit VR little endian): the start of every DICOM file voxseg writes."""
    import pydicom  # pydicom is imported where DICOM is written: start-up stays fast
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    return ds


def image_slice_datasets(
    stored: np.ndarray,
    geometry: Geometry,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "CT",
    description: str = "",
    series_number: int = 1,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> list[Any]:
    """One pydicom dataset per slice of the stored values ``stored`` ``[z, y, x]``
    (``int16``/``uint16``), laid out by ``geometry``: slice ``k`` at ``origin + k ·
    spacing[0] · normal``, ImageOrientationPatient (row, column direction), PixelSpacing
    (spacing[1], spacing[2]), one FrameOfReferenceUID, RescaleSlope/Intercept.

    ``attributes`` sets further top-level elements on every slice (PatientID, PatientName,
    StudyDate, Manufacturer, ImageType …) over the defaults (empty patient and study
    fields, Manufacturer ``voxseg``, ImageType DERIVED/SECONDARY). The one writer of image
    slices: :func:`write_dicom_series` and :mod:`voxseg.synth.dicom` build on it.
    """
    from pydicom.uid import generate_uid

    modality = modality.upper()
    d = geometry.direction_matrix
    row, col, along = d[:, 2], d[:, 1], d[:, 0]
    sop_class = _SOP_CLASSES.get(modality, _SECONDARY_CAPTURE)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    defaults: dict[str, Any] = {
        "PatientName": "",
        "PatientID": "",
        "PatientBirthDate": "",
        "PatientSex": "",
        "StudyID": "",
        "AccessionNumber": "",
        "ReferringPhysicianName": "",
        "StudyDate": "",
        "StudyTime": "",
        "Manufacturer": "voxseg",
        "ImageType": ["DERIVED", "SECONDARY"],
        **(attributes or {}),
    }
    orientation = [decimal_string(v) for v in (*row, *col)]
    spacing = [decimal_string(geometry.spacing[1]), decimal_string(geometry.spacing[2])]
    out = []
    for k in range(stored.shape[0]):
        ds = new_dataset(sop_class)
        ds.Modality = modality
        for key, value in defaults.items():
            setattr(ds, key, value)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = orientation
        position = np.asarray(geometry.origin) + k * geometry.spacing[0] * along
        ds.ImagePositionPatient = [decimal_string(v) for v in position]
        ds.PixelSpacing = spacing
        ds.SliceThickness = decimal_string(geometry.spacing[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1 if stored.dtype == np.int16 else 0
        ds.RescaleSlope = decimal_string(slope)
        ds.RescaleIntercept = decimal_string(intercept)
        ds.RescaleType = "HU" if modality == "CT" else "US"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        out.append(ds)
    return out


def write_dicom_series(
    image: Image,
    folder: str | os.PathLike[str],
    modality: str = "CT",
    description: str = "",
    *,
    patient_id: str = "voxseg",
    patient_name: str = "voxseg^export",
) -> Path:
    """Write a 3D image as a DICOM series with pydicom, one file per slice (``IM0000.dcm`` …).

    Every slice carries ImagePositionPatient, ImageOrientationPatient, PixelSpacing, a shared
    FrameOfReferenceUID and RescaleSlope/Intercept (see :func:`stored_pixels`), so a read-back
    reproduces geometry and values. DICOM orders slices along the normal of the in-plane
    axes, so a left-handed image comes back with its z axis reversed (same physical image).
    Label maps on a DICOM scan are written with :func:`voxseg.io.dicom_seg.write_dicom_seg`
    or :func:`voxseg.io.rtstruct.write_rtstruct` instead.
    """
    from voxseg.io.formats import _atomic_dir

    folder = Path(folder)
    modality = modality.upper()
    if modality in ("SEG", "RTSTRUCT"):
        raise VoxsegError(
            f"{folder}: a {modality} is not an image series; write label maps on a DICOM scan "
            "with voxseg.io.dicom_seg.write_dicom_seg or voxseg.io.rtstruct.write_rtstruct "
            "(voxseg predict --output-type dicom-seg/rtstruct)"
        )
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise VoxsegError(f"{folder}: exists and is not an empty folder; choose a new folder")
    if image.array.ndim != 3:
        raise VoxsegError(f"{folder}: DICOM export takes one channel; got {image.array.shape}")
    stored, slope, intercept = stored_pixels(image.array, str(folder))
    datasets = image_slice_datasets(
        stored,
        image.geometry,
        slope=slope,
        intercept=intercept,
        modality=modality,
        description=description,
        attributes={"PatientID": patient_id, "PatientName": patient_name},
    )
    with _atomic_dir(folder, is_folder=True) as tmp:
        for k, ds in enumerate(datasets):
            ds.save_as(tmp / f"IM{k:04d}.dcm", enforce_file_format=True)
    return folder


def decimal_string(value: float, digits: int = 16) -> str:
    """A DICOM decimal string (at most 16 characters) with at most ``digits`` significant
    digits, as precise as that allows."""
    for n in range(digits, 0, -1):
        text = f"{value:.{n}g}"
        if len(text) <= 16:
            return text
    return f"{value:.1e}"
