"""DICOM Segmentation objects (DICOM-SEG) through highdicom: write label maps or class
probabilities on a source series, read segments back onto an image series' grid.

A written SEG has one segment per label (its name as SegmentLabel, a SNOMED-CT code for the
common organs in :data:`ORGAN_CODES`, else the generic "Tissue"), algorithm identification
(voxseg, its version, the model name and plan), references to every source image, and the
Frame of Reference, Study and Patient of the source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.errors import VoxsegError
from voxseg.io.dicom import DicomSeries, source_datasets
from voxseg.io.image import Geometry, Image

#: Label names (lower case, ``_``/``-`` read as spaces) → SNOMED-CT code and meaning.
ORGAN_CODES: dict[str, tuple[str, str]] = {
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "kidney": ("64033007", "Kidney"),
    "kidneys": ("64033007", "Kidney"),
    "left kidney": ("18639004", "Left kidney"),
    "right kidney": ("9846003", "Right kidney"),
    "pancreas": ("15776009", "Pancreas"),
    "lung": ("39607008", "Lung"),
    "left lung": ("44029006", "Left lung"),
    "right lung": ("3341006", "Right lung"),
    "heart": ("80891009", "Heart"),
    "brain": ("12738006", "Brain"),
    "stomach": ("69695003", "Stomach"),
    "gallbladder": ("28231008", "Gallbladder"),
    "aorta": ("15825003", "Aorta"),
    "esophagus": ("32849002", "Esophagus"),
    "oesophagus": ("32849002", "Esophagus"),
    "spinal cord": ("2748008", "Spinal cord"),
    "bladder": ("89837001", "Urinary bladder"),
    "urinary bladder": ("89837001", "Urinary bladder"),
    "prostate": ("41216001", "Prostate"),
    "rectum": ("34402009", "Rectum"),
}
_ANATOMY = ("123037004", "Anatomical Structure")
_TISSUE = ("85756007", "Tissue")


def segment_codes(name: str) -> tuple[Any, Any]:
    """(category, type) codes of a label name: an organ from :data:`ORGAN_CODES`, else Tissue."""
    from pydicom.sr.coding import Code

    key = re.sub(r"[_\-\s]+", " ", name.strip().lower())
    if key in ORGAN_CODES:
        code, meaning = ORGAN_CODES[key]
        return Code(_ANATOMY[0], "SCT", _ANATOMY[1]), Code(code, "SCT", meaning)
    return Code(_TISSUE[0], "SCT", _TISSUE[1]), Code(_TISSUE[0], "SCT", _TISSUE[1])


def write_dicom_seg(
    segmentation: np.ndarray,
    series: DicomSeries,
    labels: dict[str, int],
    path: str | os.PathLike[str],
    *,
    fractional: bool = False,
    model_name: str = "",
    plan: str = "",
    description: str = "voxseg segmentation",
    sources: Sequence[Any] | None = None,
) -> Path:
    """Write a DICOM-SEG on ``series``, atomically.

    ``segmentation`` is a label map ``[z, y, x]`` (binary segments), or with ``fractional``
    the class probabilities ``[C, z, y, x]`` with channel ``v`` holding label value ``v``
    (a PROBABILITY SEG, 8-bit). ``sources``: the series' headers as
    :func:`voxseg.io.dicom.source_datasets` reads them, when the caller has them already.
    A binary SEG goes to highdicom as one 8/16-bit map of segment numbers (highdicom's
    label-map input), not as a stack of one boolean volume per segment: no copy per segment
    and no overlap check over the stack.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    path = Path(path)
    if series.resampled:
        raise VoxsegError(f"{path}: the source series was resampled; a SEG must use its grid")
    spatial = segmentation.shape[-3:]
    if tuple(spatial) != series.geometry.shape:
        raise VoxsegError(
            f"{path}: segmentation shape {spatial} differs from the source series "
            f"{series.geometry.shape}"
        )
    foreground = [(n, int(v)) for n, v in labels.items() if int(v) != 0]
    if not foreground:
        raise VoxsegError(f"{path}: no foreground labels to write")
    version = _version()
    algorithm = hd.AlgorithmIdentificationSequence(
        name="voxseg",
        family=codes.cid7162.ArtificialIntelligence,
        version=version,
        parameters={k: v for k, v in (("model", model_name), ("plan", plan)) if v} or None,
    )
    descriptions = []
    for number, (name, _) in enumerate(foreground, start=1):
        category, kind = segment_codes(name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=name[:64],
                segmented_property_category=category,
                segmented_property_type=kind,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
            )
        )
    if fractional:
        if segmentation.ndim != 4:
            raise VoxsegError(f"{path}: a fractional SEG needs probabilities [C, z, y, x]")
        pixels = np.stack([segmentation[v] for _, v in foreground], axis=-1).astype(np.float32)
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
    else:
        if segmentation.ndim != 3:
            raise VoxsegError(f"{path}: a binary SEG needs a label map [z, y, x]")
        pixels = segment_numbers(segmentation, [v for _, v in foreground])
        kind = hd.seg.SegmentationTypeValues.BINARY
    if sources is None:
        sources = source_datasets(series)
    if len(sources) != len(series.slices):  # an enhanced multi-frame source: one dataset
        sources = sources[:1]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=9002,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="voxseg",
        manufacturer_model_name=(model_name or "voxseg")[:64],
        software_versions=version,
        device_serial_number="0",
        content_description=description[:64],
        content_label="VOXSEG",
        omit_empty_frames=bool(pixels.any()),  # an empty result keeps its frames
    )
    if description:
        seg.SeriesDescription = description[:64]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        seg.save_as(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def warm_up() -> None:
    """Pay highdicom's one-off costs of a process now — its import, the DICOM standard tables
    it loads on first use, pydicom's writer: about 2 CPU s — by writing a 2×4×4 SEG into a
    temporary folder. ``voxseg predict`` runs it on a worker thread while the network runs."""
    import tempfile

    from voxseg.io.dicom import assemble_series, header_from_dataset, image_slice_datasets

    geometry = Geometry(shape=(2, 4, 4), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0))
    datasets = image_slice_datasets(np.zeros(geometry.shape, np.int16), geometry)
    series = assemble_series(
        [header_from_dataset(ds, f"slice{k}") for k, ds in enumerate(datasets)]
    )
    mask = np.zeros(geometry.shape, np.uint8)
    mask[0, 1:3, 1:3] = 1
    with tempfile.TemporaryDirectory(prefix="voxseg-seg-") as tmp:
        write_dicom_seg(mask, series, {"liver": 1}, Path(tmp) / "warm.dcm", sources=datasets)


def segment_numbers(label_map: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """``label_map`` with label ``values[i]`` as segment number ``i + 1`` and every other
    value as 0, in the smallest unsigned type (the map itself when it already is that)."""
    dtype = np.uint8 if len(values) < 256 else np.uint16
    lo, hi = (int(label_map.min()), int(label_map.max())) if label_map.size else (0, 0)
    consecutive = list(values) == list(range(1, len(values) + 1))
    if label_map.dtype == dtype and consecutive and hi <= len(values):
        return label_map
    table = np.zeros(hi - lo + 1, dtype)
    for number, v in enumerate(values, start=1):
        if lo <= v <= hi:
            table[v - lo] = number
    return table[label_map] if lo == 0 else table[label_map - lo]


@dataclass
class Segment:
    """One segment of a SEG on an image grid: ``mask`` is bool, or float in 0..1 for a
    fractional SEG."""

    number: int
    label: str
    mask: np.ndarray


def read_dicom_seg(path: str | os.PathLike[str], series: DicomSeries) -> list[Segment]:
    """Every segment of the SEG at ``path`` on the grid of ``series``.

    Frames are matched to the series' SOP instances when the SEG references them, else
    placed by geometry (the SEG's volume resampled nearest-neighbour onto the grid).
    """
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except (OSError, ValueError, AttributeError, KeyError) as exc:
        raise VoxsegError(f"{path}: not a readable DICOM-SEG ({exc})") from exc
    numbers = list(seg.get_segment_numbers())
    fractional = str(seg.SegmentationType) == "FRACTIONAL"
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    uids = series.sop_instance_uids
    if referenced and referenced <= set(uids) and len(set(uids)) == len(uids):
        try:
            pixels = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=uids,
                segment_numbers=numbers,
                assert_missing_frames_are_empty=True,
                rescale_fractional=True,
                skip_overlap_checks=True,
            )
        except (ValueError, RuntimeError) as exc:
            raise VoxsegError(
                f"{path}: cannot place the SEG frames on their series ({exc})"
            ) from exc
    else:
        pixels = _by_geometry(seg, path, series.geometry, numbers)
    out = []
    for i, number in enumerate(numbers):
        desc = seg.get_segment_description(number)
        mask = pixels[..., i]
        mask = mask.astype(np.float32) if fractional else mask > 0
        out.append(Segment(int(number), str(desc.segment_label), mask))
    return out


def _by_geometry(seg: Any, path: Path, geometry: Geometry, numbers: list[int]) -> np.ndarray:
    """Segments ``[z, y, x, s]`` resampled from the SEG's own volume onto ``geometry``."""
    import SimpleITK as sitk

    from voxseg.io.image import to_sitk

    if str(seg.get("FrameOfReferenceUID", "")) == "":
        raise VoxsegError(f"{path}: SEG has neither source references nor a FrameOfReference")
    try:
        volume = seg.get_volume(segment_numbers=numbers, combine_segments=False)
    except (ValueError, RuntimeError) as exc:
        raise VoxsegError(f"{path}: SEG frames do not form a regular volume ({exc})") from exc
    affine = np.asarray(volume.affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    src_geometry = Geometry(
        volume.spatial_shape, tuple(spacing), tuple(affine[:3, 3]), affine[:3, :3] / spacing
    )
    target = to_sitk(Image.from_geometry(np.zeros(geometry.shape, np.uint8), geometry))
    out = np.zeros((*geometry.shape, len(numbers)), dtype=np.float32)
    for i in range(len(numbers)):
        arr = np.asarray(volume.array[..., i], dtype=np.float32)
        moving = to_sitk(Image.from_geometry(arr, src_geometry))
        res = sitk.Resample(moving, target, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
        out[..., i] = sitk.GetArrayFromImage(res)
    return out


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("voxseg")
    except PackageNotFoundError:
        return "unknown"
