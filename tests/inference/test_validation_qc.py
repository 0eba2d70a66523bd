"""A fold's final validation writes the quality control of ``voxseg predict --qc`` for its
cases when it predicts with test-time flips: the same records predict writes for the same
case and fold, volumes as SimpleITK counts them; none without flips."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from voxseg.config import apply_overrides
from voxseg.evaluation.qc import read_qc
from voxseg.training import ModelConfig, train_fold

TRAIN = [
    "training.epochs=1",
    "training.iterations_per_epoch=2",
    "training.val_iterations=0",
    "training.batch_size=2",
    "training.num_workers=0",
    "training.device=cpu",
    "logging.snapshots=false",
]


def test_validation_writes_the_flips_agreement_as_predict_does(tiny_home, tmp_path):
    from voxseg.cli import app

    # the phantom's plan mirrors no axis: flips along y and x make 4 members
    cfg = apply_overrides(ModelConfig(dataset="Organs"), [*TRAIN, "augmentation.mirror.axes=[1,2]"])
    fold_dir = train_fold(cfg, 0)
    val = fold_dir / "validation"
    cases = sorted(p.name.removesuffix(".nii.gz") for p in val.glob("*.nii.gz"))
    records = {r.case_id: r for r in read_qc(val)}
    assert cases and sorted(records) == cases
    rows = {r["case"]: r for r in csv.DictReader((val / "qc.csv").open())}
    assert sorted(rows) == cases
    summary = json.loads((val / "summary.json").read_text())
    assert sorted(c["case"] for c in summary["metric_per_case"]) == cases  # qc/ is no case
    case = cases[0]
    record = records[case]
    assert record.members == 4
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(val / f"{case}.nii.gz")))
    voxel_ml = float(np.prod(sitk.ReadImage(str(val / f"{case}.nii.gz")).GetSpacing())) / 1000
    for name, value in (("liver", 1), ("kidney", 2), ("spleen", 3)):
        assert record.labels[name].volume_ml == pytest.approx(
            np.count_nonzero(seg == value) * voxel_ml, rel=1e-6
        )
    # voxseg predict --qc with the same fold gives the same record
    image = tiny_home / "raw" / "Dataset001_Organs" / "imagesTr" / f"{case}_0000.nii.gz"
    out = tmp_path / "predicted"
    args = ["predict", "-i", str(image), "-o", str(out), "-m", str(fold_dir.parent), "--qc"]
    result = CliRunner().invoke(app, [*args, "--folds", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    predicted = read_qc(out)[0]
    assert predicted.members == record.members
    for name, q in record.labels.items():
        other = predicted.labels[name]
        assert q.volume_ml == pytest.approx(other.volume_ml)
        np.testing.assert_allclose(q.agreement, other.agreement, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(
        record.split_fraction, predicted.split_fraction, rtol=1e-6, equal_nan=True
    )


def test_validation_without_flips_writes_no_qc(tiny_home):
    cfg = apply_overrides(ModelConfig(dataset="Organs"), [*TRAIN, "prediction.tta=false"])
    val = train_fold(cfg, 1) / "validation"
    assert (val / "summary.json").is_file()
    assert not (val / "qc").exists() and not (val / "qc.csv").exists()
