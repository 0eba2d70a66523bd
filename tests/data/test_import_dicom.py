"""``dataset import dicom``: a PACS/TPS-like archive (several patients, shuffled names,
nesting, distractor objects, broken files) → raw dataset; masks against analytic shapes."""

from __future__ import annotations

import csv
import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from scipy.spatial.transform import Rotation
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data.importers import import_dicom
from voxseg.data.importers.dicom import parse_roi_rules
from voxseg.errors import VoxsegError
from voxseg.io import read_image
from voxseg.synth.dicom import orientation_axes, rtstruct_dataset, series_datasets, write_datasets

SHAPE = (8, 24, 28)
SPACING = (2.0, 1.2, 0.9)
FIRST = (-12.0, -15.0, 30.0)
OBLIQUE = Rotation.from_euler("xyz", [15.0, 10.0, 25.0], degrees=True).as_matrix()


def _centres(orientation):
    row, col, normal = orientation_axes(orientation)
    k, j, i = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    return (k * SPACING[0]), (j * SPACING[1]), (i * SPACING[2]), (row, col, normal)


def _ellipse(orientation, cu, cv, ru, rv, slices):
    """Analytic mask (voxel centre inside the ellipse) and its contours (96-gons)."""
    w, v, u, (row, col, normal) = _centres(orientation)
    inside = ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 < 1
    k = np.arange(SHAPE[0])[:, None, None]
    mask = inside & (k >= slices[0]) & (k < slices[1])
    t = np.linspace(0, 2 * np.pi, 97)[:-1]
    contours = [
        np.asarray(FIRST)
        + np.outer(cu + ru * np.cos(t), row)
        + np.outer(cv + rv * np.sin(t), col)
        + s * SPACING[0] * normal
        for s in range(*slices)
    ]
    return mask, contours


def _patient(root, pid, orientation, rng, rois, *, rtstruct=True, extra=()):
    datasets = series_datasets(
        rng.integers(-200, 200, size=SHAPE),
        spacing=SPACING,
        first_position=FIRST,
        orientation=orientation,
        patient_id=pid,
        intercept=-1024,
    )
    write_datasets(datasets, root / pid / "study" / "CT")
    masks = {}
    contours = {}
    for name, (shape, keep) in rois.items():
        mask, cs = _ellipse(orientation, *shape)
        masks[name] = mask
        contours[name] = cs if keep else []
    if rtstruct:
        rtstruct_dataset(datasets, contours).save_as(
            root / pid / "RS.dcm", enforce_file_format=True
        )
    return datasets, masks


def _dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _archive(tmp_path, rng):
    root = tmp_path / "archive"
    liver = ((14.0, 13.0, 8.5, 7.0, (1, 7)), True)
    gtv = ((15.0, 12.0, 3.1, 2.6, (3, 5)), True)
    body = ((12.0, 14.0, 11.0, 12.5, (0, 8)), True)
    a = _patient(root, "PAT_A", "HFS", rng, {"Liver": liver, "GTV_1": gtv, "BODY": body})
    b = _patient(
        root, "PAT_B", "FFS", rng, {"LIVER_auto": liver, "gtv": gtv, "empty": (liver[0], False)}
    )
    c = _patient(root, "PAT_C", OBLIQUE, rng, {"leber": liver})  # no tumour: missing
    d = _patient(root, "PAT_D", "HFP", rng, {"Liver": liver, "GTV": gtv})
    # distractors: a plan-like object, JSON, text without ending, a truncated slice
    plan = pydicom.dcmread(next((root / "PAT_A" / "study" / "CT").iterdir()))
    plan.Modality = "RTPLAN"
    plan.SOPInstanceUID = pydicom.uid.generate_uid()
    del plan.PixelData
    plan.save_as(root / "PAT_A" / "plan")
    (root / "PAT_A" / "labels.json").write_text("{}")
    (root / "PAT_A" / "NOTES").write_text("not dicom")
    return root, {"A": a, "B": b, "C": c, "D": d}


def test_archive_imports_with_patterns_and_reports_everything(tmp_path, rng):
    root, pats = _archive(tmp_path, rng)
    # an RTSTRUCT whose series is not in the archive
    orphan = series_datasets(np.zeros((2, 4, 4)), spacing=(1, 1, 1), first_position=(0, 0, 0))
    rtstruct_dataset(orphan, {"Liver": []}).save_as(root / "orphan_rs", enforce_file_format=True)
    # a damaged file (DICOM preamble, cut header)
    good = next((root / "PAT_B" / "study" / "CT").iterdir()).read_bytes()
    (root / "PAT_B" / "broken").write_bytes(good[:300])
    out = tmp_path / "raw"
    report = import_dicom(
        root, out, ["liver=Liver|LIVER_*|re:leber", "tumour=GTV*"], num_processes=1
    )
    assert [c["patient"] for c in report.cases] == ["PAT_A", "PAT_B", "PAT_D"]
    assert [s["patient"] for s in report.skipped] == ["PAT_C"]  # no tumour
    assert "tumour" in report.skipped[0]["reason"]
    failed = "\n".join(f"{d['item']}: {d['reason']}" for d in report.failed)
    assert "orphan_rs" in failed and "not in the source" in failed
    assert "broken" in failed
    assert report.unmatched_rois == {"BODY": 1, "empty": 1}
    assert report.ignored_files == 1  # NOTES (labels.json is never read)
    for i, key in enumerate("ABD"):
        _, masks = pats[key]
        lab = read_image(out / "labelsTr" / f"case_{i:04d}.nii.gz").array
        liver = next(m for n, m in masks.items() if n.lower().startswith("liver"))
        gtv = next(m for n, m in masks.items() if n.lower().startswith("gtv"))
        assert _dice(lab == 2, gtv) >= 0.99
        assert _dice(lab == 1, liver & ~gtv) >= 0.99  # the later label is painted over
        img = read_image(out / "imagesTr" / f"case_{i:04d}_0000.nii.gz")
        assert img.array.dtype == np.int16 and img.shape == SHAPE
    info = json.loads((out / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "liver": 1, "tumour": 2}
    assert info["channel_names"] == {"0": "CT"}
    assert "PAT_" not in (out / "dataset.json").read_text()
    rows = list(csv.reader((out / "case_map.csv").open()))
    assert [r[1] for r in rows[1:]] == ["PAT_A", "PAT_B", "PAT_D"]
    saved = json.loads((out / "import_report.json").read_text())
    assert saved["cases"][0]["rois"] == {"liver": ["Liver"], "tumour": ["GTV_1"]}
    assert not report.ok  # failures make the CLI exit non-zero


def test_allow_missing_overlap_error_and_index_cache(tmp_path, rng, monkeypatch):
    root, _ = _archive(tmp_path, rng)
    out = tmp_path / "raw"
    report = import_dicom(
        root, out, ["liver=Liver|LIVER_*|leber", "tumour=GTV*"], allow_missing=True, num_processes=1
    )
    assert len(report.cases) == 4 and report.ok
    c = next(e for e in report.cases if e["patient"] == "PAT_C")
    assert c["missing"] == ["tumour"]
    index = json.loads((out / "dicom_index.json").read_text())
    assert len(index["files"]) > 30

    import voxseg.data.importers.dicom as module

    calls = []
    monkeypatch.setattr(module, "read_header", lambda p: calls.append(p))
    with pytest.raises(VoxsegError, match="tumour overlaps liver in 46 voxels"):
        import_dicom(
            root,
            out,
            ["liver=Liver|LIVER_*|leber", "tumour=GTV*"],
            overlap="error",
            overwrite=True,
            num_processes=1,
        )
    assert calls == []  # every header came from the index


def test_seg_as_label_source(tmp_path, rng):
    root = tmp_path / "archive"
    datasets, masks = _patient(
        root, "PAT_S", OBLIQUE, rng, {"x": ((14.0, 13.0, 8.5, 7.0, (1, 7)), True)}, rtstruct=False
    )
    descs = [
        hd.seg.SegmentDescription(
            segment_number=1,
            segment_label="Liver",
            segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver,
            algorithm_type="MANUAL",
        )
    ]
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=masks["x"].astype(np.uint8),
        segmentation_type="BINARY",
        segment_descriptions=descs,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=3,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="1",
        device_serial_number="1",
    )
    seg.save_as(root / "PAT_S" / "seg")
    out = tmp_path / "raw"
    report = import_dicom(root, out, ["liver"], num_processes=1)
    assert report.ok and len(report.cases) == 1
    lab = read_image(out / "labelsTr" / "case_0000.nii.gz").array
    np.testing.assert_array_equal(lab == 1, masks["x"])


def test_cli_imports_and_checks(tmp_path, rng):
    root = tmp_path / "archive"
    _patient(root, "P1", "HFS", rng, {"Liver": ((14.0, 13.0, 8.5, 7.0, (1, 7)), True)})
    _patient(root, "P2", "FFS", rng, {"LIVER": ((14.0, 13.0, 8.5, 7.0, (1, 7)), True)})
    out = tmp_path / "raw"
    result = CliRunner().invoke(
        app, ["dataset", "import", "dicom", str(root), str(out), "--roi", "liver=liver"]
    )
    assert result.exit_code == 0, result.output
    assert "imported 2 case(s)" in result.output
    (root / "P1" / "RS.dcm").unlink()
    result = CliRunner().invoke(
        app, ["dataset", "import", "dicom", str(root), str(out), "--roi", "liver", "--overwrite"]
    )
    assert result.exit_code == 0, result.output
    assert "skipped" in result.output and "no RTSTRUCT or SEG" in result.output


def test_roi_rules():
    rules = parse_roi_rules(["liver=Liver|LIVER_*|re:le+ber", "gtv"])
    assert [r.label for r in rules] == ["liver", "gtv"]
    assert rules[0].matches("liver") and rules[0].matches("LIVER_2") and rules[0].matches("Leeber")
    assert not rules[0].matches("liver ptv") and rules[1].matches("GTV")
    with pytest.raises(VoxsegError, match="given twice"):
        parse_roi_rules(["a=x", "a=y"])
    with pytest.raises(VoxsegError, match="regular expression"):
        parse_roi_rules(["a=re:("])


def test_second_channel_is_resampled_onto_the_first(tmp_path, rng):
    """MR T1 (labelled) + T2 on a coarser grid of the same frame of reference."""
    root = tmp_path / "archive"
    t1 = series_datasets(
        rng.integers(0, 500, size=SHAPE), spacing=SPACING, first_position=FIRST,
        modality="MR", description="T1 axial", patient_id="MR1",
    )  # fmt: skip
    write_datasets(t1, root / "MR1" / "t1")
    # T2: a linear ramp along x in mm, sampled at twice the in-plane spacing
    coarse = (SHAPE[0], SHAPE[1] // 2, SHAPE[2] // 2)
    xs = np.arange(coarse[2]) * SPACING[2] * 2
    t2 = series_datasets(
        np.broadcast_to(np.rint(10 * xs), coarse),
        spacing=(SPACING[0], SPACING[1] * 2, SPACING[2] * 2),
        first_position=FIRST, modality="MR", description="T2 tse", patient_id="MR1",
        study_uid=t1[0].StudyInstanceUID, frame_of_reference_uid=t1[0].FrameOfReferenceUID,
    )  # fmt: skip
    write_datasets(t2, root / "MR1" / "t2")
    mask, contours = _ellipse("HFS", 14.0, 13.0, 8.5, 7.0, (1, 7))
    rtstruct_dataset(t1, {"Prostate": contours}).save_as(
        root / "MR1" / "rs", enforce_file_format=True
    )
    out = tmp_path / "raw"
    report = import_dicom(
        root, out, ["prostate"], channels=["T1=desc:*t1*", "T2=desc:*t2*"], num_processes=1
    )
    assert report.ok and len(report.cases) == 1
    info = json.loads((out / "dataset.json").read_text())
    assert info["channel_names"] == {"0": "T1", "1": "T2"}
    c1 = read_image(out / "imagesTr" / "case_0000_0001.nii.gz")
    assert c1.shape == SHAPE
    x_mm = np.arange(SHAPE[2]) * SPACING[2]
    inside = x_mm <= xs[-1]  # beyond the last T2 sample the resampler pads with 0
    np.testing.assert_allclose(c1.array[2, 5, inside], 10 * x_mm[inside], atol=0.6)
    np.testing.assert_array_equal(
        read_image(out / "labelsTr" / "case_0000.nii.gz").array == 1, mask
    )


def test_series_uid_chooses_among_series_of_one_frame(tmp_path, rng):
    """An RTSTRUCT that names no series (only its frame of reference) beside two CT series
    of that frame: the failure lists both, ``--series-uid`` picks the labelled one."""
    root = tmp_path / "archive"
    liver = ((14.0, 13.0, 8.5, 7.0, (1, 7)), True)
    scan, masks = _patient(root, "PAT_A", "HFS", rng, {"Liver": liver}, rtstruct=False)
    thick = series_datasets(
        rng.integers(-200, 200, size=(4, *SHAPE[1:])),
        spacing=(4.0, *SPACING[1:]),
        first_position=FIRST,
        patient_id="PAT_A",
        study_uid=scan[0].StudyInstanceUID,
        frame_of_reference_uid=scan[0].FrameOfReferenceUID,
        series_number=5,
        description="thick 4mm",
    )
    write_datasets(thick, root / "PAT_A" / "study" / "CT4")
    _, contours = _ellipse("HFS", *liver[0])
    rs = rtstruct_dataset(scan, {"Liver": contours}, image_references=False)
    del rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence
    rs.save_as(root / "PAT_A" / "RS.dcm", enforce_file_format=True)
    other, _ = _patient(root, "PAT_B", "FFS", rng, {"Liver": liver})  # refers to its series
    out = tmp_path / "raw"
    cmd = ["dataset", "import", "dicom", str(root), str(out), "--roi", "liver", "-p", "1"]
    result = CliRunner().invoke(app, cmd)
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert "RS.dcm" in text and "holds 2 image series; choose one with --series-uid" in text
    assert f"CT #1 ({SHAPE[0]} slices, {scan[0].SeriesInstanceUID})" in text
    assert f"CT #5 'thick 4mm' (4 slices, {thick[0].SeriesInstanceUID})" in text
    result = CliRunner().invoke(
        app, [*cmd, "--overwrite", "--series-uid", scan[0].SeriesInstanceUID]
    )
    assert result.exit_code == 0, result.output
    assert "imported 1 case(s)" in result.output
    rows = list(csv.reader((out / "case_map.csv").open()))
    assert rows[1][1:] == ["PAT_A", scan[0].StudyInstanceUID, scan[0].SeriesInstanceUID]
    lab = read_image(out / "labelsTr" / "case_0000.nii.gz").array
    assert _dice(lab == 1, masks["Liver"]) >= 0.99
    report = json.loads((out / "import_report.json").read_text())
    assert [s["patient"] for s in report["skipped"]] == ["PAT_B"]
    assert "not among --series-uid" in report["skipped"][0]["reason"]
    with pytest.raises(VoxsegError, match="--series-uid 1.2.3: no such CT image series") as err:
        import_dicom(root, out, ["liver"], series_uids=["1.2.3"], overwrite=True, num_processes=1)
    assert other[0].SeriesInstanceUID in str(err.value)
