"""Quality control without a reference: known volumes, components and border contact of a
synthetic label map, Tukey's fences by hand, and member agreement against pairwise Dice
computed pair by pair."""

import csv
import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from voxseg.evaluation.qc import (
    CaseQC,
    LabelQC,
    label_qc,
    member_agreement,
    read_qc,
    training_range,
    write_case_qc,
    write_qc_table,
)


def _phantom() -> np.ndarray:
    seg = np.zeros((20, 30, 40), np.uint8)
    seg[5:8, 5:8, 5:8] = 1  # 27 voxels inside
    seg[10:12, 20:24, 35:40] = 1  # 40 voxels touching the x = 39 face
    seg[2:4, 2:4, 20:22] = 2  # 8 voxels ...
    seg[4:6, 4:6, 22:24] = 2  # ... and 8 meeting them at one corner (26-connected only)
    seg[15, 10:20, 10] = 3  # 10 voxels, alone
    return seg


def test_label_qc_has_the_known_volumes_components_and_border_contact():
    seg = _phantom()
    spacing = (2.0, 0.5, 1.5)  # 1.5 mm³ per voxel
    qc = label_qc(seg, spacing, {"a": 1, "b": 2, "c": 3, "ab": [1, 2], "missing": 4})
    voxel_ml = 1.5 / 1000
    assert qc["a"].volume_ml == pytest.approx(67 * voxel_ml)
    assert qc["a"].components == 2
    assert qc["a"].largest_share == pytest.approx(40 / 67)
    assert qc["a"].touches_border
    assert qc["b"].volume_ml == pytest.approx(16 * voxel_ml)
    assert qc["b"].components == 1 and not qc["b"].touches_border
    assert qc["c"].components == 1 and qc["c"].largest_share == 1.0
    assert qc["ab"].volume_ml == pytest.approx(83 * voxel_ml) and qc["ab"].components == 3
    assert qc["missing"].volume_ml == 0 and qc["missing"].components == 0
    assert qc["missing"].volume_flag == "empty"
    # the component counts agree with scipy's labelling (26- and 6-connectivity)
    full = np.ones((3, 3, 3))
    for name, value in (("a", 1), ("b", 2), ("c", 3)):
        assert qc[name].components == ndimage.label(seg == value, structure=full)[1]
    six = label_qc(seg, spacing, {"b": 2}, connectivity=6)
    assert six["b"].components == ndimage.label(seg == 2)[1] == 2


def test_a_single_slice_has_no_z_border_and_counts_area():
    seg = np.zeros((1, 10, 10), np.uint8)
    seg[0, 3:5, 3:6] = 1
    qc = label_qc(seg, (5.0, 0.5, 0.5), {"x": 1})["x"]
    assert not qc.touches_border
    assert qc.volume_ml == pytest.approx(6 * 0.25 / 1000)  # mm² → the 2D "volume"
    seg[0, 0, 5] = 1
    assert label_qc(seg, (5.0, 0.5, 0.5), {"x": 1})["x"].touches_border


def test_training_range_is_tukeys_fences_on_log_volumes():
    # log volumes 0, 1, 2, 3, 4 (base 2): quartiles at 1 and 3, IQR 2 → 2^(1-3) .. 2^(3+3)
    lo, hi = training_range([1, 2, 4, 8, 16, 0.0])  # the case without the label is left out
    assert lo == pytest.approx(0.25) and hi == pytest.approx(64)
    assert training_range([1, 2, 3]) is None
    q = LabelQC(100.0, 1, 1.0, False, (0.25, 64.0))
    assert q.volume_flag == "high"
    q.volume_ml = 0.1
    assert q.volume_flag == "low"
    q.volume_ml = 10
    assert q.volume_flag == ""


def _pairwise_dice(maps: list[np.ndarray], label: int) -> float:
    """Σ over member pairs of 2|A∩B|, over Σ of |A|+|B| (pooled over the pairs)."""
    inter = size = 0
    for a, b in itertools.combinations(maps, 2):
        inter += 2 * np.count_nonzero((a == label) & (b == label))
        size += np.count_nonzero(a == label) + np.count_nonzero(b == label)
    return inter / size if size else math.nan


def test_member_agreement_is_the_pooled_pairwise_dice_of_the_members():
    rng = np.random.default_rng(0)
    base = np.zeros((12, 16, 16), np.uint8)
    base[2:9, 3:12, 4:13] = 1
    base[4:7, 5:9, 6:10] = 2
    maps = []
    for _ in range(4):
        m = base.copy()
        flip = rng.random(m.shape) < 0.08
        m[flip] = rng.integers(0, 3, flip.sum())
        maps.append(m)
    votes = np.stack([np.mean([m == k for m in maps], axis=0) for k in range(4)])
    dice, split = member_agreement(votes[1:], len(maps))  # label 3: nobody drew it
    for k in (1, 2):
        assert dice[k - 1] == pytest.approx(_pairwise_dice(maps, k))
    assert math.isnan(dice[2])
    stacked = np.stack(maps)
    labelled = (stacked > 0).any(0)
    disagree = (stacked != stacked[0]).any(0)
    assert split == pytest.approx(np.count_nonzero(labelled & disagree) / labelled.sum())
    same, no_split = member_agreement(np.stack([base == 1, base == 2]).astype(float), 5)
    assert list(same) == [1.0, 1.0] and no_split == 0
    one, _ = member_agreement(votes[1:], 1)
    assert np.isnan(one).all()


def test_records_round_trip_and_the_table_lists_the_worst_first(tmp_path):
    good = CaseQC("good", {"liver": LabelQC(1500.0, 1, 1.0, False, (1000.0, 2000.0), 0.97)}, 8)
    bad = CaseQC("bad", {"liver": LabelQC(3000.0, 3, 0.9, True, (1000.0, 2000.0), 0.61)}, 8, 0.2)
    empty = CaseQC("empty", {"liver": LabelQC(0.0, 0, math.nan, False)}, 1)
    for c in (good, bad, empty):
        write_case_qc(tmp_path, c)
    back = {c.case_id: c for c in read_qc(tmp_path)}
    assert back["bad"].labels["liver"].training_range == (1000.0, 2000.0)
    assert back["bad"].flags == ["liver: volume high"]
    assert back["empty"].flags == ["liver: empty"] and math.isnan(back["empty"].agreement)
    assert back["good"].agreement == pytest.approx(0.97)
    path = write_qc_table(tmp_path, list(back.values()))
    rows = list(csv.DictReader(path.open()))
    assert [r["case"] for r in rows] == ["bad", "good", "empty"]
    assert rows[0]["liver_components"] == "3" and rows[0]["liver_touches_border"] == "1"
    assert rows[0]["flags"] == "liver: volume high" and rows[2]["agreement"] == ""
