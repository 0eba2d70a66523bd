"""Synthetic DICOM objects written straight with pydicom, for tests and benchmarks.

Independent of :mod:`voxseg.io.dicom` (which reads them): a CT/MR series is laid out from an
explicit orientation — ``"HFS"``, ``"FFS"``, ``"HFP"`` (prone) or any 3×3 rotation — and an
RT Structure Set holds the given polygons exactly as a planning system would write them.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Patient orientations → (row direction, column direction) of ImageOrientationPatient.
ORIENTATIONS = {
    "HFS": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "FFS": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "HFP": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "FFP": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
}
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


def orientation_axes(orientation: str | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, column, normal) unit vectors of a named orientation or of a rotation matrix
    (its first column is the row direction, its second the column direction)."""
    if isinstance(orientation, str):
        row, col = (np.asarray(v) for v in ORIENTATIONS[orientation])
    else:
        rot = np.asarray(orientation, dtype=float)
        row, col = rot[:, 0], rot[:, 1]
    return row, col, np.cross(row, col)


def series_datasets(
    values: np.ndarray,
    *,
    spacing: tuple[float, float, float],
    first_position: Sequence[float],
    orientation: str | np.ndarray = "HFS",
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = 0.0,
    patient_id: str = "PAT001",
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    description: str = "",
) -> list[Any]:
    """One dataset per slice of ``values`` ``[z, y, x]`` (pixel values after rescale).

    Slice ``k`` lies at ``first_position + k * spacing[0] * normal``; PixelSpacing is
    ``(spacing[1], spacing[2])`` (row spacing = along the column direction).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    row, col, normal = orientation_axes(orientation)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    stored = np.rint((np.asarray(values, dtype=float) - intercept) / slope).astype(np.int16)
    out = []
    for k, plane in enumerate(stored):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientName = f"Test^{patient_id}"
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = "20240101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = "synthetic"
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row, *col)]
        position = np.asarray(first_position, dtype=float) + k * spacing[0] * normal
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[2])]
        ds.SliceThickness = _ds(spacing[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = plane.shape
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleType = "HU" if modality == "CT" else "US"
        ds.PixelData = np.ascontiguousarray(plane).tobytes()
        out.append(ds)
    return out


def rtstruct_dataset(
    series: Sequence[Any],
    rois: Mapping[str, Sequence[np.ndarray]],
    *,
    image_references: bool = True,
    leave_out_empty: bool = True,
    label: str = "synthetic",
) -> Any:
    """An RT Structure Set on ``series`` with closed planar contours (``(N, 3)`` LPS mm).

    ROIs without contours are left out of ROIContourSequence when ``leave_out_empty`` (as
    some planning systems do), and their ROINumbers are not 1..N in order, so a reader
    must match by ReferencedROINumber. Each contour names the slice nearest to it when
    ``image_references``.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    first = series[0]
    _, _, normal = orientation_axes(
        np.column_stack(
            [
                [float(v) for v in first.ImageOrientationPatient[:3]],
                [float(v) for v in first.ImageOrientationPatient[3:]],
                [0.0, 0.0, 0.0],
            ]
        )
    )
    along = {float(np.dot([float(v) for v in s.ImagePositionPatient], normal)): s for s in series}
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID"):
        setattr(ds, key, first[key].value)
    for key in ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, key, first.get(key, ""))
    ds.SOPClassUID = RTSTRUCT_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.Manufacturer = "synthetic"
    ds.StructureSetLabel = label
    ds.StructureSetDate = datetime.date.today().strftime("%Y%m%d")
    ds.StructureSetTime = "120000"
    rt_series = pydicom.Dataset()
    rt_series.SeriesInstanceUID = first.SeriesInstanceUID
    rt_series.ContourImageSequence = Seq([_ref(s) for s in series])
    rt_study = pydicom.Dataset()
    rt_study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    rt_study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    rt_study.RTReferencedSeriesSequence = Seq([rt_series])
    frame = pydicom.Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = Seq([rt_study])
    ds.ReferencedFrameOfReferenceSequence = Seq([frame])
    set_rois, contours_seq = Seq(), Seq()
    for i, (name, contours) in enumerate(rois.items()):
        number = 10 * (len(rois) - i)  # not 1..N, not in ROIContourSequence order
        roi = pydicom.Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = name
        roi.ROIGenerationAlgorithm = "MANUAL"
        set_rois.append(roi)
        if not contours and leave_out_empty:
            continue
        item = pydicom.Dataset()
        item.ReferencedROINumber = number
        item.ROIDisplayColor = [255, 0, 0]
        seq = Seq()
        for points in contours:
            points = np.asarray(points, dtype=float).reshape(-1, 3)
            c = pydicom.Dataset()
            if image_references:
                key = min(along, key=lambda a: abs(a - float(points[:, :3].mean(0) @ normal)))
                c.ContourImageSequence = Seq([_ref(along[key])])
            c.ContourGeometricType = "CLOSED_PLANAR" if len(points) > 1 else "POINT"
            c.NumberOfContourPoints = len(points)
            c.ContourData = [_ds(v) for v in points.reshape(-1)]
            seq.append(c)
        item.ContourSequence = seq
        contours_seq.insert(0, item)
    ds.StructureSetROISequence = set_rois
    ds.ROIContourSequence = contours_seq
    return ds


def write_datasets(
    datasets: Sequence[Any], folder: str | os.PathLike[str], *, shuffled_names: bool = True
) -> list[Path]:
    """Save each dataset under ``folder``; names are random digits (as PACS exports often
    are) when ``shuffled_names``, else ``IM0001.dcm`` …"""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(datasets))
    paths = []
    for i, ds in enumerate(datasets):
        name = f"{rng.integers(10**8, 10**9)}{i:03d}" if shuffled_names else f"IM{i + 1:04d}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ref(ds: Any) -> Any:
    import pydicom

    ref = pydicom.Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return ref


def _ds(value: float) -> str:
    for digits in range(12, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.1e}"
