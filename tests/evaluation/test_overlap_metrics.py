"""Dice, IoU, precision, recall, volumes and counts against hand counts; empty-mask rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voxseg.evaluation.metrics import ALL_METRICS, binary_metrics, overlap_metrics


def test_hand_counts():
    ref = np.zeros((4, 5, 6), bool)
    pred = np.zeros_like(ref)
    ref[1:3, 1:4, 1:4] = True  # 18 voxels
    pred[1:3, 2:5, 1:4] = True  # 18 voxels, 12 shared
    m = overlap_metrics(pred, ref, (2.0, 0.5, 0.5))
    assert (m["tp"], m["fp"], m["fn"], m["n_pred"], m["n_ref"]) == (12, 6, 6, 18, 18)
    assert m["dice"] == pytest.approx(24 / 36)
    assert m["iou"] == pytest.approx(12 / 24)
    assert m["precision"] == pytest.approx(12 / 18)
    assert m["recall"] == pytest.approx(12 / 18)
    assert m["volume_pred"] == pytest.approx(18 * 0.5)
    assert m["volume_diff"] == 0.0 and m["volume_diff_rel"] == 0.0


def test_volumes_of_2d_images_are_areas():
    ref = np.zeros((1, 8, 8), bool)
    ref[0, 2:4, 2:5] = True
    pred = ref.copy()
    pred[0, 6, 6] = True
    m = overlap_metrics(pred, ref, (999.0, 0.5, 2.0))
    assert m["volume_ref"] == pytest.approx(6 * 1.0)
    assert m["volume_diff_rel"] == pytest.approx(1 / 6)


def test_empty_rules():
    empty = np.zeros((6, 6, 6), bool)
    some = empty.copy()
    some[2:4, 2:4, 2:4] = True
    spacing = (1.0, 1.0, 1.0)
    both = binary_metrics(empty, empty, spacing)
    assert list(both) == list(ALL_METRICS)
    for key in ("dice", "iou", "precision", "recall", "hd95", "hd", "assd", "nsd"):
        assert math.isnan(both[key]), key
    assert math.isnan(both["volume_diff_rel"]) and both["volume_diff"] == 0

    ref_empty = binary_metrics(some, empty, spacing)  # prediction only
    assert ref_empty["dice"] == 0 and ref_empty["iou"] == 0 and ref_empty["precision"] == 0
    assert math.isnan(ref_empty["recall"]) and math.isnan(ref_empty["volume_diff_rel"])
    assert ref_empty["hd95"] == math.inf and ref_empty["assd"] == math.inf
    assert ref_empty["nsd"] == 0

    pred_empty = binary_metrics(empty, some, spacing)
    assert pred_empty["dice"] == 0 and pred_empty["recall"] == 0
    assert math.isnan(pred_empty["precision"])
    assert pred_empty["volume_diff_rel"] == -1
    assert pred_empty["hd95"] == math.inf and pred_empty["nsd"] == 0


def test_dice_matches_surface_distance_dice(rng):
    import surface_distance as sd

    ref = rng.random((8, 9, 10)) > 0.5
    pred = rng.random((8, 9, 10)) > 0.4
    m = binary_metrics(pred, ref, (1.0, 1.0, 1.0), surface=False)
    assert m["dice"] == pytest.approx(sd.compute_dice_coefficient(ref, pred))
    assert "hd95" not in m
