"""``voxseg predict`` on DICOM: cases found beside JSON files, one case per series, and
DICOM-SEG/RTSTRUCT outputs equal to the NIfTI prediction when read back independently."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.errors import VoxsegError
from voxseg.inference.files import discover_inputs
from voxseg.io import read_image
from voxseg.io.dicom import read_dicom_folder
from voxseg.io.rtstruct import read_rtstruct, roi_mask
from voxseg.synth.dicom import series_datasets, write_datasets


@pytest.fixture
def raw_dir(tiny_model):
    return tiny_model.parents[3] / "raw" / "Dataset001_Organs"


def _dicom_case(raw_dir, folder, orientation="HFS", series_number=1):
    """A test image of the tiny dataset written as a CT series (values as int16 HU)."""
    image = read_image(sorted((raw_dir / "imagesTs").iterdir())[0])
    values = np.rint(image.array).astype(np.int16)
    datasets = series_datasets(
        values,
        spacing=image.spacing,
        first_position=(-20.0, -30.0, 15.0),
        orientation=orientation,
        series_number=series_number,
        intercept=-1024,
    )
    write_datasets(datasets, folder)
    return datasets


def test_discovery_skips_json_and_splits_series(tmp_path, rng):
    root = tmp_path / "in"
    a = series_datasets(np.zeros((3, 4, 5)), spacing=(1, 1, 1), first_position=(0, 0, 0))
    b = series_datasets(
        np.zeros((2, 4, 5)), spacing=(1, 1, 1), first_position=(0, 0, 0), series_number=7
    )
    write_datasets(a, root / "p1")
    write_datasets(b, root / "p2")
    write_datasets(
        series_datasets(np.zeros((4, 4, 5)), spacing=(1, 1, 1), first_position=(0, 0, 0)),
        root / "p2",
        shuffled_names=False,
    )
    (root / "labels.json").write_text("{}")
    (root / "manifest.json").write_text("{}")
    (root / "p1" / "notes.json").write_text("{}")
    # p2 holds two series: no silent choice, the error lists them
    with pytest.raises(VoxsegError, match="p2: holds 2 image series") as err:
        discover_inputs(root)
    assert "CT #7 (2 slices" in str(err.value) and "CT #1 (4 slices" in str(err.value)
    assert "--series all" in str(err.value)
    cases = discover_inputs(root, ["all"])
    assert [c.case_id for c in cases] == ["p1", "p2_S1", "p2_S7"]
    assert [c.read().shape[0] for c in cases] == [3, 4, 2]
    only = discover_inputs(root, [f"uid:{b[0].SeriesInstanceUID}"])
    assert [(c.case_id, c.read().shape[0]) for c in only] == [("p2_S7", 2)]
    assert [c.case_id for c in discover_inputs(root, ["number:1"])] == ["p1", "p2_S1"]
    with pytest.raises(VoxsegError, match="no DICOM series matches 'uid:1.2.3'") as err:
        discover_inputs(root, ["uid:1.2.3"])
    assert "CT #7 (2 slices" in str(err.value)
    # PACS-style nesting: patient/study/{CT,RS}; the RTSTRUCT folder is no case
    from voxseg.synth.dicom import rtstruct_dataset

    nested = tmp_path / "nested"
    write_datasets(a, nested / "pat" / "study" / "CT")
    (nested / "pat" / "study" / "RS").mkdir()
    rtstruct_dataset(a, {"x": []}).save_as(
        nested / "pat" / "study" / "RS" / "rs", enforce_file_format=True
    )
    (nested / "manifest.json").write_text("{}")
    assert [c.case_id for c in discover_inputs(nested)] == ["pat"]
    assert [c.case_id for c in discover_inputs(nested / "pat")] == ["study"]


def test_output_types_need_dicom_input(tiny_model, raw_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "-i",
            str(raw_dir / "imagesTs"),
            "-o",
            str(tmp_path / "o"),
            "-m",
            str(tiny_model),
            "--device",
            "cpu",
            "--no-tta",
            "--output-type",
            "rtstruct",
        ],
    )
    assert result.exit_code != 0
    assert "is not a DICOM series" in result.output


def test_predict_writes_seg_and_rtstruct_equal_to_the_nifti(tiny_model, raw_dir, tmp_path):
    inputs = tmp_path / "in"
    datasets = _dicom_case(raw_dir, inputs / "patient", orientation="FFS")
    (inputs / "labels.json").write_text(json.dumps({"x": 1}))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "-i",
            str(inputs),
            "-o",
            str(out),
            "-m",
            str(tiny_model),
            "--device",
            "cpu",
            "--no-tta",
            "--output-type",
            "rtstruct",
            "dicom-seg",
        ],
    )
    assert result.exit_code == 0, result.output
    nifti = read_image(out / "patient.nii.gz").array
    _, series = read_dicom_folder(inputs / "patient")
    labels = {
        k: v for k, v in json.loads((tiny_model / "dataset.json").read_text())["labels"].items()
    }
    seg = hd.seg.segread(out / "patient_SEG.dcm")
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    pixels = seg.get_pixels_by_source_instance(
        series.sop_instance_uids, assert_missing_frames_are_empty=True
    )
    structure = read_rtstruct(out / "patient_RTSTRUCT.dcm")
    assert pydicom.dcmread(out / "patient_RTSTRUCT.dcm").PatientID == datasets[0].PatientID
    for number, (name, value) in enumerate((k, v) for k, v in labels.items() if v != 0):
        assert seg.get_segment_description(number + 1).segment_label == name
        np.testing.assert_array_equal(pixels[..., number] > 0, nifti == value)
        mask, report = roi_mask(structure.roi(name), series)
        np.testing.assert_array_equal(mask, nifti == value)
    # a second run finds every output and skips the case
    again = CliRunner().invoke(
        app,
        [
            "predict",
            "-i",
            str(inputs),
            "-o",
            str(out),
            "-m",
            str(tiny_model),
            "--device",
            "cpu",
            "--output-type",
            "rtstruct",
            "--output-type",
            "dicom-seg",
        ],
    )
    assert again.exit_code == 0 and "skipped 1" in again.output


def test_predict_chooses_a_series_by_uid(tiny_model, raw_dir, tmp_path):
    inputs = tmp_path / "in"
    scan = _dicom_case(raw_dir, inputs / "patient", series_number=3)
    scout = series_datasets(
        np.zeros((2, 16, 16)), spacing=(5, 1, 1), first_position=(0, 0, 0), description="Scout"
    )
    write_datasets(scout, inputs / "patient" / "scout")
    args = ["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(tiny_model)]
    args += ["--device", "cpu", "--no-tta"]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code != 0
    assert "holds 2 image series" in refused.output and "'Scout' (2 slices" in refused.output
    chosen = CliRunner().invoke(app, [*args, "--series-uid", scan[0].SeriesInstanceUID])
    assert chosen.exit_code == 0, chosen.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["patient_S3.nii.gz"]
    expected = read_image(sorted((raw_dir / "imagesTs").iterdir())[0]).shape
    assert read_image(tmp_path / "out" / "patient_S3.nii.gz").shape == expected


def test_a_failed_dicom_output_fails_its_case_and_a_rerun_redoes_it(
    tiny_model, raw_dir, tmp_path, monkeypatch
):
    # the DICOM objects are written on a worker thread: its failure still reaches the report
    import voxseg.io.rtstruct

    inputs = tmp_path / "in"
    _dicom_case(raw_dir, inputs / "a")
    _dicom_case(raw_dir, inputs / "b", orientation="FFS")
    out = tmp_path / "out"
    args = ["predict", "-i", str(inputs), "-o", str(out), "-m", str(tiny_model)]
    args += ["--device", "cpu", "--no-tta", "--output-type", "rtstruct", "dicom-seg"]
    real = voxseg.io.rtstruct.write_rtstruct

    def refuse_b(label_map, series, labels, path, **kwargs):
        if path.name.startswith("b_"):
            raise VoxsegError(f"{path}: disk quota exceeded")
        return real(label_map, series, labels, path, **kwargs)

    monkeypatch.setattr(voxseg.io.rtstruct, "write_rtstruct", refuse_b)
    failed = CliRunner().invoke(app, args)
    assert failed.exit_code != 0
    assert "predicted 1" in failed.output and "failed 1" in failed.output
    assert "disk quota exceeded" in failed.output
    assert (out / "a_RTSTRUCT.dcm").is_file() and (out / "a_SEG.dcm").is_file()
    assert not (out / "b_RTSTRUCT.dcm").exists()
    monkeypatch.setattr(voxseg.io.rtstruct, "write_rtstruct", real)
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "predicted 1, skipped 1" in again.output
    assert (out / "b_RTSTRUCT.dcm").is_file()
    mask, _ = roi_mask(
        read_rtstruct(out / "b_RTSTRUCT.dcm").rois[0], read_dicom_folder(inputs / "b")[1]
    )
    first = next(
        k
        for k, v in json.loads((tiny_model / "dataset.json").read_text())["labels"].items()
        if v == 1
    )
    assert read_rtstruct(out / "b_RTSTRUCT.dcm").rois[0].name == first
    np.testing.assert_array_equal(mask, read_image(out / "b.nii.gz").array == 1)


def test_the_dicom_worker_does_not_hold_up_an_interrupted_exit():
    """A stopped ``predict`` exits at once, not after the DICOM object being written (the
    worker is a daemon thread; a ThreadPoolExecutor's would be joined at exit)."""
    import subprocess
    import sys
    import time

    code = (
        "import threading, time\n"
        "from voxseg.inference.dicom_outputs import _Worker\n"
        "w = _Worker('t'); started = threading.Event()\n"
        "w.submit(lambda: (started.set(), time.sleep(60)))\n"
        "started.wait(10)\n"
        "raise SystemExit(3)\n"
    )
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], timeout=50, capture_output=True)
    assert proc.returncode == 3, proc.stderr.decode()
    assert time.monotonic() - t0 < 30


def test_the_dicom_worker_runs_calls_in_order_and_passes_errors_back():
    from voxseg.inference.dicom_outputs import _Worker

    w = _Worker("t")
    seen: list[int] = []
    futures = [w.submit(seen.append, i) for i in range(5)]
    failed = w.submit(int, "not a number")
    w.close()
    assert [f.result(timeout=10) for f in futures] == [None] * 5
    assert seen == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        failed.result(timeout=10)
