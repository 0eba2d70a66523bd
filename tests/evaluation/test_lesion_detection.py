"""Lesion-wise detection: component matching rules, compared with ``scipy.ndimage.label``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from voxseg.evaluation.metrics import lesion_detection


def _cube(mask, corner, size):
    z, y, x = corner
    mask[z : z + size, y : y + size, x : x + size] = True


def _case():
    ref = np.zeros((20, 30, 30), bool)
    pred = np.zeros_like(ref)
    _cube(ref, (2, 2, 2), 4)  # found with a large overlap
    _cube(pred, (2, 2, 3), 4)
    _cube(ref, (10, 10, 10), 4)  # touched by one corner voxel only
    _cube(pred, (13, 13, 13), 3)
    _cube(ref, (2, 20, 20), 3)  # missed
    _cube(pred, (14, 2, 20), 2)  # false positive
    return pred, ref


def test_any_overlap():
    pred, ref = _case()
    d = lesion_detection(pred, ref, (1.0, 1.0, 1.0))
    assert (d.n_ref, d.n_pred, d.detected_ref, d.true_pred) == (3, 3, 2, 2)
    assert d.sensitivity == pytest.approx(2 / 3) and d.precision == pytest.approx(2 / 3)
    assert d.f1 == pytest.approx(2 / 3)
    # counts agree with scipy's 26-connected labelling
    structure = np.ones((3, 3, 3))
    assert ndimage.label(ref, structure)[1] == d.n_ref
    assert ndimage.label(pred, structure)[1] == d.n_pred


def test_iou_threshold():
    pred, ref = _case()
    d = lesion_detection(pred, ref, (1.0, 1.0, 1.0), overlap=0.5)
    # first pair: IoU 48 / 80 = 0.6 counts; the corner touch (1 / 90) does not
    assert (d.detected_ref, d.true_pred) == (1, 1)
    assert d.sensitivity == pytest.approx(1 / 3)


def test_min_volume_drops_small_lesions():
    pred, ref = _case()
    d = lesion_detection(pred, ref, (2.0, 1.0, 1.0), min_volume_mm3=17.0)
    # predicted 2³ cube is 16 mm³ (dropped); reference 3³ cube is 54 mm³ (kept)
    assert (d.n_ref, d.n_pred) == (3, 2)
    assert d.precision == 1.0


def test_empty():
    empty = np.zeros((5, 5, 5), bool)
    one = empty.copy()
    one[1:3, 1:3, 1:3] = True
    both = lesion_detection(empty, empty, (1, 1, 1))
    assert math.isnan(both.sensitivity) and math.isnan(both.precision) and math.isnan(both.f1)
    missed = lesion_detection(empty, one, (1, 1, 1))
    assert missed.sensitivity == 0 and math.isnan(missed.precision) and missed.f1 == 0
    assert lesion_detection(one, empty, (1, 1, 1)).to_dict()["precision"] == 0
