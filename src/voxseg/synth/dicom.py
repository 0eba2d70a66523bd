"""Synthetic DICOM objects for tests and benchmarks.

A CT/MR series is laid out from an explicit orientation — ``"HFS"``, ``"FFS"``, ``"HFP"``
(prone) or any 3×3 rotation — by voxseg's one image-slice writer
(:func:`voxseg.io.dicom.image_slice_datasets`); tests check what the reader makes of it
against the orientation and values asked for here and against independent readers. An RT
Structure Set holds the given polygons exactly as a planning system would write them.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.io.dicom import decimal_string, image_slice_datasets, new_dataset
from voxseg.io.image import Geometry

#: Patient orientations → (row direction, column direction) of ImageOrientationPatient.
ORIENTATIONS = {
    "HFS": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "FFS": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "HFP": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "FFP": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
}
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
    ``(spacing[1], spacing[2])`` (row spacing = along the column direction). The slices are
    laid out by :func:`voxseg.io.dicom.image_slice_datasets` with a test patient's fields.
    """
    row, col, normal = orientation_axes(orientation)
    stored = np.rint((np.asarray(values, dtype=float) - intercept) / slope).astype(np.int16)
    geometry = Geometry(
        shape=stored.shape,
        spacing=spacing,
        origin=tuple(first_position),
        direction=np.column_stack([normal, col, row]),
    )
    return image_slice_datasets(
        stored,
        geometry,
        slope=slope,
        intercept=intercept,
        modality=modality if modality == "CT" else "MR",
        description=description,
        series_number=series_number,
        study_uid=study_uid,
        series_uid=series_uid,
        frame_of_reference_uid=frame_of_reference_uid,
        attributes={
            "PatientName": f"Test^{patient_id}",
            "PatientID": patient_id,
            "PatientBirthDate": "19700101",
            "PatientSex": "O",
            "StudyDate": "20240101",
            "StudyTime": "120000",
            "StudyID": "1",
            "Manufacturer": "synthetic",
            "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        },
    )


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
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import generate_uid

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
    ds = new_dataset(RTSTRUCT_STORAGE)
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID"):
        setattr(ds, key, first[key].value)
    for key in ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, key, first.get(key, ""))
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
            c.ContourData = [decimal_string(v) for v in points.reshape(-1)]
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
