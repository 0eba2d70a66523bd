"""Surface distances, HD95, ASSD and NSD against DeepMind's ``surface-distance`` and MONAI.

voxseg implements ``surface-distance``'s definition (surfaces on the voxel-corner grid,
marching-cubes surfel areas as weights, per-direction weighted percentiles) and matches it
exactly up to float32 rounding of the ``edt`` distance transform: relative tolerance 1e-5.

MONAI's ``compute_surface_dice(use_subvoxels=True)`` follows the same definition (equal within
1e-5). MONAI's ``compute_hausdorff_distance`` and ``compute_average_surface_distance`` use a
different one — boundary voxels by erosion at voxel centres, every voxel weighted equally,
an interpolated percentile — so they disagree by up to about a voxel; the stated tolerances are
one voxel diagonal for HD95 and half a voxel diagonal for ASSD.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import surface_distance as sd
import torch
from surface_distance import lookup_tables

from voxseg.evaluation.metrics import (
    average_symmetric_surface_distance,
    hausdorff,
    normalised_surface_dice,
    surface_metrics,
)
from voxseg.evaluation.surface import (
    contour_length_table,
    surface_distances,
    surfel_area_table,
)

SPACINGS = [(2.5, 0.7, 0.9), (1.0, 1.0, 1.0), (0.6, 1.3, 0.8)]
RTOL = 1e-5

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


@pytest.mark.parametrize("spacing", SPACINGS)
def test_area_table_is_surface_distance_table(spacing):
    ours = surfel_area_table(spacing)
    theirs = lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        contour_length_table(spacing[1:]),
        lookup_tables.create_table_neighbour_code_to_contour_length(spacing[1:]),
        rtol=1e-12,
    )


def _reference(ref, pred, spacing, tol):
    dists = sd.compute_surface_distances(ref, pred, spacing)
    a_ref, a_pred = dists["surfel_areas_gt"], dists["surfel_areas_pred"]
    assd = (dists["distances_gt_to_pred"] @ a_ref + dists["distances_pred_to_gt"] @ a_pred) / (
        a_ref.sum() + a_pred.sum()
    )
    return {
        "hd95": sd.compute_robust_hausdorff(dists, 95),
        "hd": sd.compute_robust_hausdorff(dists, 100),
        "assd": assd,
        "nsd": sd.compute_surface_dice_at_tolerance(dists, tol),
    }


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("spacing", SPACINGS)
def test_matches_surface_distance_3d(blob, seed, spacing):
    ref, pred = blob((18, 36, 30), seed), blob((18, 36, 30), seed + 50)
    assert ref.any() and pred.any()
    for tol in (1.0, 2.5):
        ours = surface_metrics(pred, ref, spacing, nsd_tolerance_mm=tol)
        theirs = _reference(ref, pred, spacing, tol)
        for key, value in theirs.items():
            assert ours[key] == pytest.approx(value, rel=RTOL), key


@pytest.mark.parametrize("seed", range(3))
def test_matches_surface_distance_2d_pseudo_3d(blob, seed):
    ref, pred = blob((1, 60, 50), seed), blob((1, 60, 50), seed + 7)
    spacing = (999.0, 0.8, 1.3)
    ours = surface_metrics(pred, ref, spacing, nsd_tolerance_mm=1.0)
    theirs = _reference(ref[0], pred[0], spacing[1:], 1.0)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=RTOL), key


@pytest.mark.parametrize("seed", range(4))
def test_against_monai(blob, seed):
    from monai.metrics import (
        compute_average_surface_distance,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    spacing = (2.5, 0.7, 0.9)
    ref, pred = blob((18, 36, 30), seed), blob((18, 36, 30), seed + 50)
    ours = surface_metrics(pred, ref, spacing, nsd_tolerance_mm=1.0)
    p = torch.from_numpy(pred)[None, None]
    r = torch.from_numpy(ref)[None, None]
    nsd = compute_surface_dice(
        p.float(), r.float(), [1.0], include_background=True, spacing=spacing, use_subvoxels=True
    ).item()
    hd95 = compute_hausdorff_distance(
        p, r, include_background=True, percentile=95, spacing=spacing
    ).item()
    assd = compute_average_surface_distance(
        p, r, include_background=True, symmetric=True, spacing=spacing
    ).item()
    diagonal = math.hypot(*spacing)
    assert ours["nsd"] == pytest.approx(nsd, rel=RTOL)
    assert abs(ours["hd95"] - hd95) <= diagonal
    assert abs(ours["assd"] - assd) <= diagonal / 2


def test_shifted_box_has_analytic_hausdorff():
    spacing = (2.0, 1.0, 0.5)
    ref = np.zeros((12, 14, 20), bool)
    ref[3:9, 4:10, 4:12] = True
    pred = np.roll(ref, 3, axis=2)
    m = surface_metrics(pred, ref, spacing, nsd_tolerance_mm=1.5)
    assert m["hd"] == pytest.approx(3 * 0.5, rel=RTOL)
    assert m["nsd"] == 1.0  # every surface point within the 1.5 mm shift
    assert surface_metrics(pred, ref, spacing, nsd_tolerance_mm=1.4)["nsd"] < 1.0


def test_identical_masks(blob):
    ref = blob((10, 20, 20), 3)
    m = surface_metrics(ref, ref, (1.5, 0.5, 0.5))
    assert (m["hd95"], m["hd"], m["assd"], m["nsd"]) == (0.0, 0.0, 0.0, 1.0)


def test_crop_does_not_change_distances(blob):
    ref, pred = blob((10, 20, 20), 1), blob((10, 20, 20), 2)
    big_ref = np.zeros((30, 50, 40), bool)
    big_pred = np.zeros_like(big_ref)
    big_ref[7:17, 11:31, 5:25] = ref
    big_pred[7:17, 11:31, 5:25] = pred
    spacing = (2.0, 0.8, 0.8)
    assert surface_metrics(pred, ref, spacing) == surface_metrics(big_pred, big_ref, spacing)


def test_mask_touching_the_border_is_closed_by_the_outside(blob):
    ref = np.ones((4, 5, 6), bool)
    pred = blob((4, 5, 6), 0, threshold=0.3)
    spacing = (2.0, 1.0, 0.7)
    ours = surface_distances(pred, ref, spacing)
    theirs = sd.compute_surface_distances(ref, pred, spacing)
    assert ours.ref_areas.sum() == pytest.approx(theirs["surfel_areas_gt"].sum())
    assert surface_metrics(pred, ref, spacing) == pytest.approx(
        _reference(ref, pred, spacing, 1.0), rel=RTOL
    )


def test_empty_masks():
    empty = np.zeros((5, 6, 7), bool)
    full = empty.copy()
    full[1:4, 2:5, 2:5] = True
    both = surface_distances(empty, empty, (1, 1, 1))
    assert math.isnan(hausdorff(both)) and math.isnan(normalised_surface_dice(both))
    assert math.isnan(average_symmetric_surface_distance(both))
    for ref, pred in ((empty, full), (full, empty)):
        one = surface_distances(pred, ref, (1, 1, 1))
        assert hausdorff(one) == math.inf
        assert average_symmetric_surface_distance(one) == math.inf
        assert normalised_surface_dice(one) == 0.0
