import numpy as np
import pytest
import torch
from scipy import ndimage

from voxseg.errors import VoxsegError
from voxseg.io.image import Geometry
from voxseg.losses.heatmap import HeatmapLoss, HeatmapMSELoss, heatmap_target
from voxseg.pipelines.heatmap import physical_box


def test_heatmap_target_is_scipys_gaussian_scaled_to_one():
    mask = np.zeros((12, 14, 16), np.float32)
    mask[4:8, 5:9, 3:12] = 1
    mask[0, 0, 0] = 1  # touches the border
    got = heatmap_target(torch.from_numpy(mask)[None, None], sigma=1.5)[0, 0].numpy()
    ref = ndimage.gaussian_filter(mask.astype(np.float64), 1.5, mode="mirror", truncate=4.0)
    np.testing.assert_allclose(got, ref / ref.max(), atol=1e-5)
    empty = heatmap_target(torch.zeros(1, 1, 6, 6, 6), 1.0)
    assert float(empty.abs().max()) == 0.0


def test_heatmap_loss_is_zero_for_the_target_and_positive_otherwise():
    seg = torch.zeros(2, 1, 10, 10, 10, dtype=torch.long)
    seg[:, :, 3:7, 3:7, 3:7] = 1
    loss = HeatmapMSELoss(num_classes=2, sigma=1.0)
    heat = heatmap_target(seg > 0, 1.0).clamp(1e-6, 1 - 1e-6)
    logits = torch.cat([torch.zeros_like(heat), torch.logit(heat.double()).float()], 1)
    assert float(loss(logits, seg)) == pytest.approx(0.0, abs=1e-9)
    assert float(loss(torch.zeros(2, 2, 10, 10, 10), seg)) > 0.01
    with pytest.raises(VoxsegError, match="two-class"):
        HeatmapMSELoss(num_classes=3)


def _cube_labels(n=2, size=16, lo=6, hi=9):
    seg = torch.zeros(n, 1, size, size, size, dtype=torch.long)
    seg[:, :, lo:hi, lo:hi, lo:hi] = 1
    return seg


def test_bce_dice_heatmap_loss_matches_its_formula():
    seg = _cube_labels()
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 16, 16, 16)
    got = float(HeatmapLoss(num_classes=2, sigma=1.0)(logits, seg))
    # independent reference in float64 numpy: BCE of p1 = softmax(logits)[1] vs the target,
    # plus 1 - soft Dice per sample (smooth 1), averaged
    heat = ndimage.gaussian_filter(
        (seg.numpy() > 0).astype(np.float64)[:, 0], (0, 1, 1, 1), mode="mirror", truncate=4.0
    )
    heat /= heat.reshape(2, -1).max(1)[:, None, None, None]
    ex = np.exp(logits.double().numpy())
    p = ex[:, 1] / ex.sum(1)
    bce = -(heat * np.log(p) + (1 - heat) * np.log(1 - p)).mean()
    inter = (p * heat).reshape(2, -1).sum(1)
    dice = (2 * inter + 1) / (p.reshape(2, -1).sum(1) + heat.reshape(2, -1).sum(1) + 1)
    assert got == pytest.approx(bce + (1 - dice).mean(), rel=1e-5)
    with pytest.raises(VoxsegError, match="kind"):
        HeatmapLoss(num_classes=2, kind="l1")


def test_bce_dice_keeps_pulling_a_collapsed_heatmap_where_mse_does_not():
    """An all-background prediction (p ≈ 1e-4) of a small structure: the spine-phantom
    failure. MSE's gradient there is ~p(1-p) smaller; BCE + Dice still pushes the foreground up.
    """
    seg = _cube_labels(n=1, size=24, lo=10, hi=13)
    grads = {}
    for kind in ("mse", "bce_dice"):
        logits = torch.zeros(1, 2, 24, 24, 24)
        logits[:, 0] = 9.2  # p1 = sigmoid(-9.2) ≈ 1e-4
        logits.requires_grad_(True)
        HeatmapLoss(num_classes=2, sigma=1.0, kind=kind)(logits, seg).backward()
        fg = seg[:, 0] > 0
        grads[kind] = float(-logits.grad[:, 1][fg].mean())  # descent raises the fg logit
    assert grads["bce_dice"] > 0 and grads["mse"] > 0
    assert grads["bce_dice"] > 100 * grads["mse"]


def test_physical_box_of_a_voxel_box():
    direction = np.array([[0, 0, -1.0], [0, 1.0, 0], [1.0, 0, 0]])  # x axis flipped (R→L)
    g = Geometry((10, 20, 30), (2.0, 1.0, 0.5), (5.0, -3.0, 7.0), direction)
    lo, hi = physical_box([(2, 4), (0, 20), (10, 30)], g)
    # index (z, y, x) → LPS: x_phys = 5 - 0.5 * x, y_phys = -3 + y, z_phys = 7 + 2 z
    np.testing.assert_allclose(lo, [5 - 0.5 * 29.5, -3 - 0.5, 7 + 2 * 1.5])
    np.testing.assert_allclose(hi, [5 - 0.5 * 9.5, -3 + 19.5, 7 + 2 * 3.5])
