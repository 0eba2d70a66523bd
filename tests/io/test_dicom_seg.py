"""DICOM-SEG written by voxseg, read back by highdicom and by dcmqi's segimage2itkimage;
SEGs written by highdicom (overlapping, fractional) read by voxseg."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.sr.codedict import codes
from scipy.spatial.transform import Rotation

from voxseg.io import from_sitk, to_sitk
from voxseg.io.dicom import read_dicom_folder
from voxseg.io.dicom_seg import read_dicom_seg, write_dicom_seg
from voxseg.synth.dicom import series_datasets, write_datasets

OBLIQUE = Rotation.from_euler("xyz", [10.0, 30.0, -20.0], degrees=True).as_matrix()
SHAPE = (5, 18, 23)
LABELS = {"background": 0, "liver": 1, "lesion": 2}


def _series(tmp_path, rng, orientation):
    datasets = series_datasets(
        rng.integers(-200, 300, size=SHAPE),
        spacing=(3.0, 0.9, 0.7),
        first_position=(11.0, -20.0, 35.0),
        orientation=orientation,
    )
    write_datasets(datasets, tmp_path / "series")
    return datasets, *read_dicom_folder(tmp_path / "series")


def _label_map(rng) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[1:4, 3:14, 4:19] = 1
    lab[2, 6:9, 8:12] = 2
    return lab


@pytest.mark.parametrize("orientation", ["FFS", OBLIQUE], ids=["FFS", "oblique"])
def test_binary_seg_reads_back_with_highdicom_and_voxseg(tmp_path, rng, orientation):
    datasets, image, series = _series(tmp_path, rng, orientation)
    lab = _label_map(rng)
    path = write_dicom_seg(lab, series, LABELS, tmp_path / "seg.dcm", model_name="m", plan="3d")
    seg = hd.seg.segread(path)
    assert seg.PatientID == datasets[0].PatientID
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {
        d.SOPInstanceUID for d in datasets
    }
    liver = seg.get_segment_description(1)
    assert liver.segment_label == "liver"
    assert liver.segmented_property_type.value == "10200004"  # SNOMED-CT liver
    assert seg.get_segment_description(2).segmented_property_type.meaning == "Tissue"
    # highdicom's own volume, placed by its affine: compare voxel by voxel in LPS.
    volume = seg.get_volume(combine_segments=False)
    idx = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), -1).reshape(-1, 3)
    lps = image.geometry.index_to_physical(idx)
    inv = np.linalg.inv(volume.affine)
    vidx = np.rint(lps @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    # the SEG holds only its non-empty frames: voxels outside its volume are background
    arr = np.asarray(volume.array)
    valid = np.all((vidx >= 0) & (vidx < np.array(arr.shape[:3])), axis=1)
    values = np.zeros((len(vidx), arr.shape[3]), arr.dtype)
    values[valid] = arr[vidx[valid, 0], vidx[valid, 1], vidx[valid, 2]]
    for v in (1, 2):
        np.testing.assert_array_equal(values[:, v - 1].reshape(SHAPE) > 0, lab == v)
    back = read_dicom_seg(path, series)
    assert [s.label for s in back] == ["liver", "lesion"]
    for s, v in zip(back, (1, 2), strict=True):
        np.testing.assert_array_equal(s.mask, lab == v)


def _dcmqi() -> str | None:
    exe = Path(sys.executable).parent / "segimage2itkimage"
    return str(exe) if exe.exists() else shutil.which("segimage2itkimage")


@pytest.mark.skipif(_dcmqi() is None, reason="dcmqi (pip install dcmqi) not installed")
def test_dcmqi_reads_the_seg_onto_the_source_geometry(tmp_path, rng):
    _, image, series = _series(tmp_path, rng, OBLIQUE)
    lab = _label_map(rng)
    path = write_dicom_seg(lab, series, LABELS, tmp_path / "seg.dcm")
    out = tmp_path / "dcmqi"
    out.mkdir()
    subprocess.run(
        [_dcmqi(), "--inputDICOM", str(path), "--outputDirectory", str(out), "-t", "nrrd"],
        check=True,
        capture_output=True,
    )
    files = sorted(out.glob("*.nrrd"), key=lambda f: int(f.stem.split("-")[-1]))
    assert len(files) == 2
    ref = to_sitk(image.with_array(np.zeros(SHAPE, np.uint8)))
    for f, v in zip(files, (1, 2), strict=True):
        moved = sitk.Resample(
            sitk.ReadImage(str(f)), ref, sitk.Transform(), sitk.sitkNearestNeighbor
        )
        arr = from_sitk(moved).array > 0
        dice = 2 * (arr & (lab == v)).sum() / (arr.sum() + (lab == v).sum())
        assert dice >= 0.99, (f.name, dice)


def test_overlapping_and_fractional_segs_from_highdicom(tmp_path, rng):
    datasets, image, series = _series(tmp_path, rng, "HFS")
    a = np.zeros((*SHAPE, 2), bool)
    a[1:4, 2:10, 2:10, 0] = True
    a[2:5, 6:15, 6:15, 1] = True  # overlaps segment 1
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name,
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, name in enumerate(["A", "B"])
    ]
    common = dict(
        source_images=datasets,
        segment_descriptions=descriptions,
        series_number=5,
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg = hd.seg.Segmentation(
        pixel_array=a,
        segmentation_type="BINARY",
        series_instance_uid=pydicom.uid.generate_uid(),
        sop_instance_uid=pydicom.uid.generate_uid(),
        **common,
    )
    seg.save_as(tmp_path / "overlap.dcm")
    back = read_dicom_seg(tmp_path / "overlap.dcm", series)
    for s, i in zip(back, (0, 1), strict=True):
        np.testing.assert_array_equal(s.mask, a[..., i])
    prob = np.clip(rng.random((*SHAPE, 1)), 0, 1).astype(np.float32)
    frac = hd.seg.Segmentation(
        pixel_array=prob,
        segmentation_type="FRACTIONAL",
        series_instance_uid=pydicom.uid.generate_uid(),
        sop_instance_uid=pydicom.uid.generate_uid(),
        **{**common, "segment_descriptions": descriptions[:1]},
    )
    frac.save_as(tmp_path / "frac.dcm")
    (s,) = read_dicom_seg(tmp_path / "frac.dcm", series)
    np.testing.assert_allclose(s.mask, prob[..., 0], atol=1 / 255 / 2 + 1e-6)


def test_fractional_seg_written_by_voxseg(tmp_path, rng):
    _, _, series = _series(tmp_path, rng, "HFS")
    p = rng.random((3, *SHAPE)).astype(np.float32)
    p /= p.sum(0, keepdims=True)
    path = write_dicom_seg(p, series, LABELS, tmp_path / "f.dcm", fractional=True)
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "FRACTIONAL"
    pixels = seg.get_pixels_by_source_instance(series.sop_instance_uids, rescale_fractional=True)
    np.testing.assert_allclose(np.moveaxis(pixels, -1, 0), p[1:], atol=1 / 255 / 2 + 1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.int16])
def test_segment_numbers_map_label_values_to_segments(rng, dtype):
    from voxseg.io.dicom_seg import segment_numbers

    lab = rng.integers(-2 if dtype == np.int16 else 0, 9, size=(4, 6, 7)).astype(dtype)
    for values in ([1, 2, 3], [2, 5, 7], [8], [3, 1]):
        numbers = segment_numbers(lab, values)
        assert numbers.dtype == np.uint8
        expected = np.zeros(lab.shape, np.uint8)
        for i, v in enumerate(values, start=1):
            expected[lab == v] = i
        np.testing.assert_array_equal(numbers, expected)


def test_seg_of_non_consecutive_labels_reads_back_per_label(tmp_path, rng):
    # label values 3 and 7 (and a value 5 with no name) become segments 1 and 2
    _, _, series = _series(tmp_path, rng, "HFS")
    lab = np.zeros(SHAPE, np.int64)
    lab[1:4, 3:14, 4:19] = 3
    lab[2, 6:9, 8:12] = 7
    lab[0, 0:2, 0:2] = 5
    labels = {"background": 0, "spleen": 3, "lesion": 7}
    path = write_dicom_seg(lab, series, labels, tmp_path / "seg.dcm")
    seg = hd.seg.segread(path)
    pixels = seg.get_pixels_by_source_instance(
        series.sop_instance_uids, assert_missing_frames_are_empty=True
    )
    for number, v in ((1, 3), (2, 7)):
        np.testing.assert_array_equal(pixels[..., number - 1] > 0, lab == v)
    assert [s.label for s in read_dicom_seg(path, series)] == ["spleen", "lesion"]


def test_warm_up_writes_nothing_that_stays(tmp_path, monkeypatch):
    import tempfile

    from voxseg.io.dicom_seg import warm_up

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    warm_up()
    assert list(tmp_path.iterdir()) == []
