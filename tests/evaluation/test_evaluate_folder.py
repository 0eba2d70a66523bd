"""evaluate_case (regions, ignore label, geometry) and evaluate_folder / ``voxseg evaluate``."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data.dataset import write_dataset_json
from voxseg.errors import VoxsegError
from voxseg.evaluation import evaluate_case, evaluate_folder
from voxseg.evaluation.metrics import binary_metrics
from voxseg.io import Image, write_image

SPACING = (2.0, 0.8, 0.9)
runner = CliRunner()


def _seg(rng, shape=(8, 16, 16)) -> np.ndarray:
    seg = np.zeros(shape, np.uint8)
    z, y, x = (int(v) for v in rng.integers(1, 4, 3))
    seg[z : z + 4, y : y + 8, x : x + 8] = 1
    seg[z + 1 : z + 3, y + 2 : y + 5, x + 2 : x + 6] = 2
    return seg


def _image(arr, spacing=SPACING) -> Image:
    return Image(arr, spacing=spacing, origin=(1.0, 2.0, 3.0))


def test_regions_and_ignore_label(rng):
    ref = _seg(rng)
    pred = np.roll(ref, 1, axis=2)
    ref_ig = ref.copy()
    ref_ig[:, :, :3] = 3  # ignore
    labels = {"a": 1, "b": 2, "ab": [1, 2]}
    out = evaluate_case(_image(pred), _image(ref_ig), labels, ignore_label=3)
    valid = ref_ig != 3
    for name, values in (("a", [1]), ("b", [2]), ("ab", [1, 2])):
        expect = binary_metrics(
            np.isin(pred, values) & valid, np.isin(ref_ig, values) & valid, SPACING
        )
        assert out[name] == pytest.approx(expect, nan_ok=True)
    # predicted voxels inside the ignored region count nowhere
    assert out["ab"]["fp"] == int((np.isin(pred, [1, 2]) & ~np.isin(ref_ig, [1, 2]) & valid).sum())


def test_geometry_mismatch_is_an_error(rng):
    ref = _seg(rng)
    with pytest.raises(VoxsegError, match="spacing"):
        evaluate_case(_image(ref, (2.0, 0.8, 1.0)), _image(ref), {"a": 1})


def _write_cases(tmp_path, rng, n=3, dataset=True):
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "raw" / "labelsTr"
    truth = {}
    for i in range(n):
        ref = _seg(rng)
        pred = np.roll(ref, int(rng.integers(0, 3)), axis=1)
        if i == 0:
            pred[pred == 2] = 0  # label 2 missed in one case
        write_image(_image(ref), ref_dir / f"case_{i:03d}.nii.gz")
        write_image(_image(pred), pred_dir / f"case_{i:03d}.nii.gz")
        truth[f"case_{i:03d}"] = (pred, ref)
    write_image(_image(_seg(rng)), ref_dir / "case_999.nii.gz")  # reference without prediction
    if dataset:
        write_dataset_json(
            tmp_path / "raw", {0: "CT"}, {"background": 0, "liver": 1, "tumour": 2}, n + 1
        )
    return pred_dir, ref_dir, truth


def test_evaluate_folder_with_dataset_json(tmp_path, rng):
    pred_dir, ref_dir, truth = _write_cases(tmp_path, rng)
    summary = evaluate_folder(pred_dir, ref_dir)
    assert summary["labels"] == {"liver": 1, "tumour": 2}
    assert summary["references_without_prediction"] == ["case_999"]
    per_case = {c["case"]: c["metrics"] for c in summary["metric_per_case"]}
    for case, (pred, ref) in truth.items():
        expect = binary_metrics(pred == 2, ref == 2, SPACING)
        assert per_case[case]["tumour"] == pytest.approx(expect, nan_ok=True)
    for name in ("liver", "tumour"):
        for metric in ("dice", "hd95"):
            values = [per_case[c][name][metric] for c in truth]
            assert summary["mean"][name][metric] == pytest.approx(np.mean(values))
            assert summary["median"][name][metric] == pytest.approx(np.median(values))
    assert summary["foreground_mean"]["dice"] == pytest.approx(
        np.mean([summary["mean"]["liver"]["dice"], summary["mean"]["tumour"]["dice"]])
    )
    assert math.isinf(summary["mean"]["tumour"]["hd95"])  # the missed case
    assert math.isfinite(summary["median"]["tumour"]["hd95"])
    on_disk = json.loads((pred_dir / "summary.json").read_text())
    assert on_disk["mean"]["liver"]["dice"] == pytest.approx(summary["mean"]["liver"]["dice"])
    rows = list(csv.DictReader((pred_dir / "metrics.csv").open()))
    assert len(rows) == 3 * 2
    row = next(r for r in rows if r["case"] == "case_001" and r["label"] == "liver")
    assert float(row["dice"]) == pytest.approx(per_case["case_001"]["liver"]["dice"])


def test_labels_found_when_no_dataset_json(tmp_path, rng):
    pred_dir, ref_dir, truth = _write_cases(tmp_path, rng, n=2, dataset=False)
    out = tmp_path / "out"
    summary = evaluate_folder(pred_dir, ref_dir, output_dir=out, num_processes=2)
    assert summary["labels"] == {"1": 1, "2": 2}
    assert (out / "summary.json").is_file()
    serial = evaluate_folder(pred_dir, ref_dir, output_dir=out)
    assert serial["mean"] == summary["mean"]


def test_errors_name_the_file(tmp_path, rng):
    pred_dir, ref_dir, _ = _write_cases(tmp_path, rng, n=2)
    write_image(_image(_seg(rng), (2.0, 0.8, 1.0)), pred_dir / "case_001.nii.gz")
    with pytest.raises(VoxsegError, match=r"case_001\.nii\.gz.*spacing"):
        evaluate_folder(pred_dir, ref_dir)
    write_image(_image(_seg(rng)), pred_dir / "orphan.nii.gz")
    with pytest.raises(VoxsegError, match="orphan"):
        evaluate_folder(pred_dir, ref_dir)


def test_cli(tmp_path, rng):
    pred_dir, ref_dir, _ = _write_cases(tmp_path, rng, n=2, dataset=False)
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        ["evaluate", str(pred_dir), str(ref_dir), "--labels", "liver=1", "--labels", "all=1,2",
         "--nsd-tolerance-mm", "2", "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "liver" in result.output and "foreground mean" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["labels"] == {"liver": 1, "all": [1, 2]}
    assert summary["nsd_tolerance_mm"] == 2.0
    bad = runner.invoke(app, ["evaluate", str(pred_dir), str(ref_dir), "--labels", "liver"])
    assert bad.exit_code == 1 and "name=VALUE" in bad.output


def _break_cases(tmp_path, rng):
    """Three cases; case_001 off its reference's grid, case_002 a truncated file, and a
    prediction without a reference."""
    pred_dir, ref_dir, truth = _write_cases(tmp_path, rng)
    write_image(_image(_seg(rng), (2.0, 0.8, 1.0)), pred_dir / "case_001.nii.gz")
    data = (pred_dir / "case_002.nii.gz").read_bytes()
    (pred_dir / "case_002.nii.gz").write_bytes(data[: len(data) // 2])
    write_image(_image(_seg(rng)), pred_dir / "orphan.nii.gz")
    return pred_dir, ref_dir, truth


@pytest.mark.parametrize("num_processes", [1, 2])
def test_continue_on_error_evaluates_the_others_and_lists_the_failed(tmp_path, rng, num_processes):
    pred_dir, ref_dir, truth = _break_cases(tmp_path, rng)
    with pytest.raises(VoxsegError, match=r"orphan\.nii\.gz"):  # stops by default
        evaluate_folder(pred_dir, ref_dir, num_processes=num_processes)
    summary = evaluate_folder(
        pred_dir, ref_dir, num_processes=num_processes, continue_on_error=True
    )
    failed = summary["failed"]
    assert sorted(failed) == ["case_001", "case_002", "orphan"]
    assert "case_001.nii.gz" in failed["case_001"] and "spacing" in failed["case_001"]
    assert "case_002.nii.gz" in failed["case_002"]
    assert "orphan.nii.gz" in failed["orphan"] and "no reference" in failed["orphan"]
    assert summary["num_cases"] == 1
    assert [c["case"] for c in summary["metric_per_case"]] == ["case_000"]
    pred, ref = truth["case_000"]
    expect = binary_metrics(pred == 1, ref == 1, SPACING)
    assert summary["mean"]["liver"] == pytest.approx(expect, nan_ok=True)
    on_disk = json.loads((pred_dir / "summary.json").read_text())
    assert on_disk["failed"] == failed
    rows = list(csv.DictReader((pred_dir / "metrics.csv").open()))
    assert {r["case"] for r in rows} == {"case_000"}


def test_continue_on_error_without_failures_lists_none(tmp_path, rng):
    pred_dir, ref_dir, _ = _write_cases(tmp_path, rng, n=2)
    strict = evaluate_folder(pred_dir, ref_dir)
    lenient = evaluate_folder(pred_dir, ref_dir, continue_on_error=True)
    assert lenient.pop("failed") == {}
    assert json.dumps(lenient, sort_keys=True) == json.dumps(strict, sort_keys=True)


def test_cli_continue_on_error(tmp_path, rng):
    pred_dir, ref_dir, _ = _break_cases(tmp_path, rng)
    out = tmp_path / "ev"
    args = ["evaluate", str(pred_dir), str(ref_dir), "-o", str(out)]
    stop = runner.invoke(app, args)
    assert stop.exit_code == 1 and not (out / "summary.json").exists()
    result = runner.invoke(app, [*args, "--continue-on-error"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    flat = " ".join(result.output.split())
    for case in ("case_001", "case_002", "orphan"):
        assert f"{case}: " in flat and f"{case}.nii.gz" in flat, result.output
    assert "3 case(s) failed (case_001, case_002, orphan); the other 1 were evaluated" in flat
    assert "liver" in result.output  # the table of the evaluated case
    assert sorted(json.loads((out / "summary.json").read_text())["failed"]) == [
        "case_001",
        "case_002",
        "orphan",
    ]
