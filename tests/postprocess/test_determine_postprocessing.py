"""determine_postprocessing keeps a step only when mean Dice improves by at least
``MIN_GAIN`` and no label gets worse (``min_gain=0``: nnU-Net's rule, any gain)."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.io import Image, read_image, write_image
from voxseg.postprocess import apply_postprocessing, determine_postprocessing, load_postprocessing

SPACING = (2.0, 1.0, 1.0)
#: the label-1 speck of ``_cases`` (``speck`` × (``speck`` + 2) voxels) in mm³: the largest
#: component a kept step removes on those cases
SPECK_MM3 = {3: 3 * 5 * 2.0, 1: 1 * 3 * 2.0}
runner = CliRunner()


def _write(folder, name, arr):
    write_image(Image(arr, spacing=SPACING), folder / f"{name}.nii.gz")


def _reference(i: int, touching: bool) -> np.ndarray:
    seg = np.zeros((10, 24, 24), np.uint8)
    seg[2:7, 3 + i : 11 + i, 3:11] = 1
    if touching:
        seg[2:7, 3 + i : 11 + i, 11:15] = 2  # label 2 touches label 1 (organ + lesion)
    else:
        seg[3:6, 15:21, 14:20] = 2  # label 2 apart from label 1
    return seg


def _cases(tmp_path, touching: bool, spurious: bool, second_true: bool = False, speck: int = 3):
    pred_dir, ref_dir = tmp_path / "cv", tmp_path / "ref"
    rng = np.random.default_rng(0)
    for i in range(4):
        ref = _reference(i, touching)
        if second_true:
            ref[7:9, 18:22, 2:6] = 1  # a true second component (e.g. the other kidney)
        pred = ref.copy()
        pred[2:7, 3 + i, 3:11] = 0  # imperfect but overlapping
        if spurious:
            z, y = int(rng.integers(0, 2)), int(rng.integers(18, 21))
            pred[z, y : y + speck, 20 - speck : 22] = 1  # false-positive specks far away
            pred[9, 1 : 1 + speck, y - 2] = 2
        _write(ref_dir, f"case_{i}", ref)
        _write(pred_dir, f"case_{i}", pred)
    return pred_dir, ref_dir


def test_keeps_per_class_largest_for_spurious_blobs(tmp_path):
    pred_dir, ref_dir = _cases(tmp_path, touching=False, spurious=True)
    steps = determine_postprocessing(pred_dir, ref_dir, {"a": 1, "b": 2}, output_dir=tmp_path)
    # all-foreground would delete the separate label 2: rejected; per label: kept for both
    assert steps == [
        {
            "name": "keep_largest_component",
            "labels": [1, 2],
            "per_class": True,
            "max_removed_mm3": SPECK_MM3[3],
        }
    ]
    assert load_postprocessing(tmp_path / "postprocessing.json") == steps
    report = json.loads((tmp_path / "postprocessing_report.json").read_text())
    first = report["candidates"][0]
    assert not first["accepted"] and "b" in first["reason"]
    assert all(c["accepted"] for c in report["candidates"][1:])


def test_a_gain_below_the_minimum_keeps_nothing_unless_asked(tmp_path):
    """Specks of 1-3 voxels: removing them gains under MIN_GAIN of mean Dice, so the default
    keeps no step and says why; nnU-Net's rule (any gain) keeps both per-label steps."""
    from voxseg.postprocess.determine import MIN_GAIN

    pred_dir, ref_dir = _cases(tmp_path, touching=False, spurious=True, speck=1)
    assert determine_postprocessing(pred_dir, ref_dir, {"a": 1, "b": 2}, output_dir=tmp_path) == []
    report = json.loads((tmp_path / "postprocessing_report.json").read_text())
    assert report["min_gain"] == MIN_GAIN == 0.005
    for c in report["candidates"][1:]:
        gain = c["foreground_dice_after"] - c["foreground_dice_before"]
        assert 0 < gain < MIN_GAIN and "less than 0.005" in c["reason"]
    steps = determine_postprocessing(pred_dir, ref_dir, {"a": 1, "b": 2}, min_gain=0)
    assert [(s["labels"], s["per_class"], s["max_removed_mm3"]) for s in steps] == [
        ([1, 2], True, SPECK_MM3[1])
    ]


def test_keeps_all_foreground_when_labels_touch(tmp_path):
    pred_dir, ref_dir = _cases(tmp_path, touching=True, spurious=True)
    steps = determine_postprocessing(pred_dir, ref_dir, {"a": 1, "b": 2})
    assert steps == [
        {
            "name": "keep_largest_component",
            "labels": None,
            "per_class": False,
            "max_removed_mm3": SPECK_MM3[3],
        }
    ]
    pred = read_image(pred_dir / "case_0.nii.gz")
    ref = read_image(ref_dir / "case_0.nii.gz").array
    out = apply_postprocessing(pred.array, pred.spacing, steps)
    assert not (out.astype(bool) & ~ref.astype(bool)).any()  # every false positive removed


def test_a_kept_step_keeps_components_larger_than_any_it_removed_on_validation(tmp_path):
    """Chosen on cases whose only stray components are specks, the step still removes a
    speck on a new case but keeps a second structure larger than any speck (the nnU-Net
    step, unbounded, deletes it)."""
    from voxseg.postprocess.steps import KeepLargestComponent

    pred_dir, ref_dir = _cases(tmp_path, touching=True, spurious=True)
    steps = determine_postprocessing(pred_dir, ref_dir, {"a": 1, "b": 2})
    new = _reference(0, touching=True)
    new[7:10, 14:22, 14:22] = 1  # a true second structure: 192 voxels, 384 mm³
    new[0, 20:22, 1:3] = 2  # a speck: 4 voxels, 8 mm³
    out = apply_postprocessing(new, SPACING, steps)
    assert (out[7:10, 14:22, 14:22] == 1).all()
    assert not out[0, 20:22, 1:3].any()
    unbounded = KeepLargestComponent(per_class=False)(new, SPACING)
    assert not unbounded[7:10, 14:22, 14:22].any()


def test_rejects_when_a_true_second_component_would_go(tmp_path):
    pred_dir, ref_dir = _cases(tmp_path, touching=False, spurious=False, second_true=True)
    assert determine_postprocessing(pred_dir, ref_dir, {"a": 1, "b": 2}) == []


def test_cli_determine_then_apply(tmp_path):
    pred_dir, ref_dir = _cases(tmp_path, touching=False, spurious=True)
    model = tmp_path / "model"
    result = runner.invoke(
        app,
        ["postprocess", "determine", "--pred", str(pred_dir), "--ref", str(ref_dir),
         "-o", str(model)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "post"
    result = runner.invoke(
        app,
        ["postprocess", "apply", str(pred_dir), str(out), "--config",
         str(model / "postprocessing.json")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    done = read_image(out / "case_1.nii.gz")
    original = read_image(pred_dir / "case_1.nii.gz")
    assert done.geometry.is_close(original.geometry)
    ref = read_image(ref_dir / "case_1.nii.gz").array
    assert not (done.array.astype(bool) & ~ref.astype(bool)).any()


def test_largest_false_removal_ignores_the_true_components_it_would_remove():
    from voxseg.postprocess.steps import keep_largest_measured

    def largest_false_removal(seg, spacing, group, truth):
        return keep_largest_measured(seg, spacing, group, truth)[1]

    seg = np.zeros((1, 40, 40), np.uint8)
    seg[0, 0:10, 0:10] = 1  # the largest: 100 px
    seg[0, 20:25, 20:30] = 1  # true second structure: 50 px, all in the reference
    seg[0, 30:32, 0:5] = 1  # false: 10 px, none in the reference
    seg[0, 35:38, 30:34] = 1  # 12 px, exactly half in the reference: counts as true
    truth = np.zeros_like(seg, bool)
    truth[0, 0:10, 0:10] = truth[0, 20:25, 20:30] = True
    truth[0, 35:38, 30:32] = True  # 6 of the 12
    spacing = (3.0, 0.5, 0.5)  # a 2D slice: pixel area 0.25 mm²
    assert largest_false_removal(seg, spacing, [1], truth) == 10 * 0.25
    assert largest_false_removal(seg, spacing, [1], np.zeros_like(truth)) == 50 * 0.25
    assert largest_false_removal(seg[:, :12, :12], spacing, [1], truth[:, :12, :12]) == 0.0
