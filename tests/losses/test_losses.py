"""Losses against independent references: torch's cross-entropy and MONAI's losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss as MonaiDiceCE
from monai.losses import DiceLoss as MonaiDice
from monai.losses import FocalLoss as MonaiFocal
from monai.losses import MaskedDiceLoss as MonaiMaskedDice
from monai.losses import TverskyLoss as MonaiTversky
from torch import nn

from voxseg.errors import VoxsegError
from voxseg.losses import (
    LOSSES,
    LossConfig,
    build_loss,
    deep_supervision_weights,
    labels_to_regions,
)

SMOOTH = {"smooth_nr": 1e-5, "smooth_dr": 1e-5}
IGNORE = 9
F32 = {"check_dtype": False, "rtol": 1e-5, "atol": 1e-6}  # MONAI's focal loss is float32


def _data(dims: int = 3, classes: int = 3, batch: int = 2, size: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    spatial = (size,) * dims
    logits = torch.randn(batch, classes, *spatial, generator=g, dtype=torch.float64)
    target = torch.randint(0, classes, (batch, 1, *spatial), generator=g)
    return logits, target


def _regions(dims: int = 3, regions: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    spatial = (8,) * dims
    logits = torch.randn(2, regions, *spatial, generator=g, dtype=torch.float64)
    masks = (torch.rand(2, regions, *spatial, generator=g) > 0.6).to(torch.uint8)
    return logits, masks


def _with_ignore(target: torch.Tensor, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ignored = torch.rand(target.shape, generator=g) < 0.3
    return torch.where(ignored, torch.full_like(target, IGNORE), target), ignored


@pytest.mark.parametrize("dims", [2, 3])
def test_ce_matches_torch(dims: int) -> None:
    logits, target = _data(dims)
    got = build_loss("ce", num_classes=3)(logits, target)
    torch.testing.assert_close(got, F.cross_entropy(logits, target[:, 0]))


def test_ce_with_ignore_matches_torch_ignore_index() -> None:
    logits, target = _data()
    target, _ = _with_ignore(target)
    got = build_loss("ce", num_classes=3, ignore_label=IGNORE)(logits, target)
    torch.testing.assert_close(got, F.cross_entropy(logits, target[:, 0], ignore_index=IGNORE))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_dice_matches_monai(dims: int, batch_dice: bool) -> None:
    logits, target = _data(dims, classes=4)
    loss = build_loss({"name": "dice", "batch_dice": batch_dice}, num_classes=4)
    ref = MonaiDice(
        include_background=False, to_onehot_y=True, softmax=True, batch=batch_dice, **SMOOTH
    )
    torch.testing.assert_close(loss(logits, target), ref(logits, target))


def test_dice_with_background_matches_monai() -> None:
    logits, target = _data()
    loss = build_loss({"name": "dice", "include_background": True}, num_classes=3)
    ref = MonaiDice(include_background=True, to_onehot_y=True, softmax=True, **SMOOTH)
    torch.testing.assert_close(loss(logits, target), ref(logits, target))


@pytest.mark.parametrize("batch_dice", [False, True])
def test_dice_ce_default_matches_monai(batch_dice: bool) -> None:
    logits, target = _data(classes=4)
    loss = build_loss(LossConfig(batch_dice=batch_dice), num_classes=4)
    ref = MonaiDiceCE(
        include_background=False, to_onehot_y=True, softmax=True, batch=batch_dice, **SMOOTH
    )
    torch.testing.assert_close(loss(logits, target), ref(logits, target))


def test_dice_ce_weights() -> None:
    logits, target = _data()
    loss = build_loss({"name": "dice_ce", "weight_ce": 2.0, "weight_dice": 0.5}, num_classes=3)
    ref = MonaiDiceCE(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        lambda_ce=2.0,
        lambda_dice=0.5,
        **SMOOTH,
    )
    torch.testing.assert_close(loss(logits, target), ref(logits, target))


def test_dice_with_ignore_matches_monai_masked_dice() -> None:
    logits, target = _data(classes=4)
    target, ignored = _with_ignore(target)
    loss = build_loss("dice", num_classes=4, ignore_label=IGNORE)
    ref = MonaiMaskedDice(include_background=False, to_onehot_y=True, softmax=True, **SMOOTH)
    expected = ref(logits, torch.where(ignored, 0, target), mask=(~ignored).double())
    torch.testing.assert_close(loss(logits, target), expected)


def test_focal_matches_monai_and_reduces_to_ce() -> None:
    logits, target = _data(classes=3)
    focal = build_loss({"name": "focal", "gamma": 2.0}, num_classes=3)
    ref = MonaiFocal(include_background=True, to_onehot_y=True, use_softmax=True, gamma=2.0)
    # MONAI averages over classes too (a zero for every non-target class): factor C.
    torch.testing.assert_close(focal(logits, target), 3 * ref(logits, target), **F32)
    ce_like = build_loss({"name": "focal", "gamma": 0.0}, num_classes=3)
    torch.testing.assert_close(ce_like(logits, target), F.cross_entropy(logits, target[:, 0]))


def test_region_focal_matches_monai_sigmoid_focal() -> None:
    logits, masks = _regions()
    focal = build_loss({"name": "focal", "gamma": 2.0}, num_classes=2, region_based=True)
    ref = MonaiFocal(include_background=True, use_softmax=False, gamma=2.0)
    torch.testing.assert_close(focal(logits, masks), ref(logits, masks.double()), **F32)


@pytest.mark.parametrize("batch_dice", [False, True])
@pytest.mark.parametrize(("alpha", "beta"), [(0.3, 0.7), (0.5, 0.5), (0.8, 0.2)])
def test_tversky_matches_monai(alpha: float, beta: float, batch_dice: bool) -> None:
    logits, target = _data(classes=4)
    loss = build_loss(
        {"name": "tversky", "alpha": alpha, "beta": beta, "batch_dice": batch_dice}, num_classes=4
    )
    ref = MonaiTversky(
        include_background=False,
        to_onehot_y=True,
        softmax=True,
        alpha=alpha,
        beta=beta,
        batch=batch_dice,
        **SMOOTH,
    )
    torch.testing.assert_close(loss(logits, target), ref(logits, target))


@pytest.mark.parametrize("dims", [2, 3])
def test_region_based_matches_monai_sigmoid(dims: int) -> None:
    logits, masks = _regions(dims)
    dice = build_loss("dice", num_classes=2, region_based=True)
    ref = MonaiDice(include_background=True, sigmoid=True, **SMOOTH)
    torch.testing.assert_close(dice(logits, masks), ref(logits, masks.double()))
    bce = F.binary_cross_entropy_with_logits(logits, masks.double())
    torch.testing.assert_close(
        build_loss("ce", num_classes=2, region_based=True)(logits, masks), bce
    )
    # (MONAI's DiceCELoss uses softmax CE for more than one channel, so no reference there.)
    dice_ce = build_loss("dice_ce", num_classes=2, region_based=True)
    torch.testing.assert_close(dice_ce(logits, masks), ref(logits, masks.double()) + bce)


def test_region_based_ignore_channel_matches_monai_masked_dice() -> None:
    logits, masks = _regions()
    ignored = torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(3)) < 0.3
    target = torch.cat([masks, ignored.to(torch.uint8)], 1)
    dice = build_loss("dice", num_classes=2, region_based=True, ignore_label=IGNORE)
    ref = MonaiMaskedDice(include_background=True, sigmoid=True, **SMOOTH)
    expected = ref(logits, masks.double(), mask=(~ignored).double())
    torch.testing.assert_close(dice(logits, target), expected)


#: Every single-term loss (the two-class heatmap losses: tests/pipelines/test_heatmap.py).
SINGLE = [n for n in LOSSES.names() if n not in ("combo", "heatmap", "heatmap_mse")]


@pytest.mark.parametrize("name", SINGLE)
@pytest.mark.parametrize("region_based", [False, True])
def test_ignored_voxels_have_zero_gradient(name: str, region_based: bool) -> None:
    if region_based:
        logits, masks = _regions()
        ignored = torch.rand(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(4)) < 0.3
        target = torch.cat([masks, ignored.to(torch.uint8)], 1)
        channels = 2
    else:
        logits, target = _data()
        target, ignored = _with_ignore(target)
        channels = 3
    logits.requires_grad_(True)
    if name == "blob_dice" and region_based:  # objects need integer labels
        with pytest.raises(VoxsegError, match="integer labels"):
            build_loss(name, num_classes=channels, region_based=True, ignore_label=IGNORE)
        return
    loss = build_loss(name, num_classes=channels, region_based=region_based, ignore_label=IGNORE)
    loss(logits, target).backward()
    grad = logits.grad.abs().sum(1, keepdim=True)
    assert torch.all(grad[ignored] == 0)
    assert torch.all(grad[~ignored] > 0)
    # And the loss does not depend on what the network says there.
    changed = logits.detach() + 5 * ignored * torch.randn_like(logits)
    torch.testing.assert_close(loss(changed, target), loss(logits.detach(), target))


def test_perfect_prediction_gives_near_zero_dice_loss() -> None:
    _, target = _data(classes=3)
    logits = 50.0 * F.one_hot(target[:, 0], 3).movedim(-1, 1).double()
    assert build_loss("dice", num_classes=3)(logits, target) < 1e-6


def test_deep_supervision_weights_are_nnunets() -> None:
    assert deep_supervision_weights(1) == [1.0]
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    expected = [w / 1.875 for w in (1, 0.5, 0.25, 0.125, 0)]
    assert deep_supervision_weights(5) == pytest.approx(expected)


def test_deep_supervision_loss_downsamples_the_target() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 3, (2, 1, 16, 16, 16), generator=g)
    outputs = [torch.randn(2, 3, *(16 // 2**i,) * 3, generator=g) for i in range(3)]
    loss = build_loss("ce", num_classes=3)
    expected = 2 / 3 * F.cross_entropy(outputs[0], target[:, 0]) + 1 / 3 * F.cross_entropy(
        outputs[1], target[:, 0, ::2, ::2, ::2]
    )
    torch.testing.assert_close(loss(outputs, target), expected)
    custom = build_loss("ce", num_classes=3, deep_supervision_weights=[1, 1, 2])
    expected = sum(
        w * F.cross_entropy(o, target[:, 0, :: 2**i, :: 2**i, :: 2**i])
        for i, (w, o) in enumerate(zip([0.25, 0.25, 0.5], outputs, strict=True))
    )
    torch.testing.assert_close(custom(outputs, target), expected)
    with pytest.raises(VoxsegError, match="3 deep-supervision outputs but 2 weights"):
        build_loss("ce", num_classes=3, deep_supervision_weights=[1, 1])(outputs, target)


def test_deep_supervision_max_pools_region_masks() -> None:
    logits, masks = _regions()
    low = torch.randn(2, 2, 4, 4, 4, dtype=torch.float64)
    loss = build_loss(
        {"name": "ce", "deep_supervision_target": "max"},
        num_classes=2,
        region_based=True,
        deep_supervision_weights=[1, 1],
    )
    pooled = masks.reshape(2, 2, 4, 2, 4, 2, 4, 2).amax((3, 5, 7))
    expected = 0.5 * F.binary_cross_entropy_with_logits(
        logits, masks.double()
    ) + 0.5 * F.binary_cross_entropy_with_logits(low, pooled.double())
    torch.testing.assert_close(loss([logits, low], masks), expected)
    with pytest.raises(VoxsegError, match="nearest"):
        build_loss({"name": "ce", "deep_supervision_target": "max"}, num_classes=2)


def test_combo_is_the_weighted_sum() -> None:
    logits, target = _data()
    combo = build_loss(
        {
            "name": "combo",
            "terms": [{"name": "dice", "weight": 1}, {"name": "focal", "weight": 0.5}],
        },
        num_classes=3,
    )
    dice = MonaiDice(include_background=False, to_onehot_y=True, softmax=True, **SMOOTH)
    focal = MonaiFocal(include_background=True, to_onehot_y=True, use_softmax=True, gamma=2.0)
    expected = dice(logits, target) + 0.5 * 3 * focal(logits, target)
    torch.testing.assert_close(combo(logits, target), expected, **F32)


class HalfCE(nn.Module):
    """A user loss: half the cross-entropy, times a configurable factor."""

    def __init__(self, *, num_classes, region_based=False, ignore_label=None, factor=1.0):
        super().__init__()
        self.factor = factor

    def forward(self, logits, target):
        return self.factor * 0.5 * F.cross_entropy(logits, target[:, 0])


def test_user_loss_by_dotted_path(monkeypatch) -> None:
    monkeypatch.setenv("VOXSEG_TRUST_CODE", "1")  # a module:attr name runs the user's code
    logits, target = _data()
    loss = build_loss({"name": f"{__name__}:HalfCE", "factor": 4.0}, num_classes=3)
    torch.testing.assert_close(loss(logits, target), 2.0 * F.cross_entropy(logits, target[:, 0]))


def test_bad_settings_and_names_are_explained() -> None:
    with pytest.raises(VoxsegError, match="gamma"):
        build_loss({"name": "focal", "gama": 2}, num_classes=3)
    with pytest.raises(VoxsegError, match="dice_ce"):
        build_loss("dicee", num_classes=3)
    logits, target = _data()
    with pytest.raises(VoxsegError, match="integer labels"):
        build_loss("dice", num_classes=3)(logits, target.repeat(1, 2, 1, 1, 1))


def test_labels_to_regions() -> None:
    labels = torch.tensor([[[0, 1, 2, 3, IGNORE]]])
    regions = labels_to_regions(labels, [[1, 2, 3], [2, 3], [3]], ignore_label=IGNORE)
    assert regions.tolist() == [
        [[0, 1, 1, 1, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 0], [0, 0, 0, 0, 1]]
    ]


def test_loss_config_round_trips_and_takes_overrides() -> None:
    from voxseg.config import apply_overrides

    config = LossConfig.model_validate(
        {"name": "combo", "terms": [{"name": "dice", "batch_dice": True}, {"name": "ce"}]}
    )
    assert LossConfig.model_validate_json(config.model_dump_json()) == config
    changed = apply_overrides(LossConfig(), ["batch_dice=true", "weight_ce=0.5"])
    loss = build_loss(changed, num_classes=3)
    assert loss.loss.dice.batch_dice and loss.loss.weight_ce == 0.5
    with pytest.raises(VoxsegError, match="at least one term"):
        build_loss({"name": "combo", "terms": []}, num_classes=3)


def test_blob_dice_weighs_every_object_equally() -> None:
    from voxseg.losses.blob import BlobDiceLoss

    target = torch.zeros(1, 1, 12, 20, 20, dtype=torch.long)
    target[0, 0, 2:12, 2:12, 2:12] = 1  # 1 000 voxels
    target[0, 0, 5:7, 15:17, 15:17] = 1  # 8 voxels
    onehot = F.one_hot(target[:, 0], 2).movedim(-1, 1).float()
    loss = BlobDiceLoss(num_classes=2)
    found_big = onehot.clone()
    found_big[0, :, 5:7, 15:17, 15:17] = torch.tensor([1.0, 0.0]).view(2, 1, 1, 1)
    # the small object missed: its Dice 0, the big one's 1 → mean 0.5 (voxel-wise Dice ~1)
    assert float(loss(found_big * 40, target)) == pytest.approx(0.5, abs=1e-4)
    # both found: each object's Dice ignores the other object's voxels → 0
    assert float(loss(onehot * 40, target)) == pytest.approx(0.0, abs=1e-4)
    # no objects in the batch: 0, with a gradient path
    empty = torch.zeros_like(target)
    logits = torch.randn(1, 2, 12, 20, 20, requires_grad=True)
    out = loss(logits, empty)
    out.backward()
    assert out.item() == 0.0 and logits.grad is not None


def test_blob_dice_matches_monai_dice_per_masked_object() -> None:
    from scipy import ndimage

    from voxseg.losses.blob import BlobDiceLoss

    g = torch.Generator().manual_seed(3)
    target = torch.zeros(2, 1, 10, 16, 16, dtype=torch.long)
    target[0, 0, 1:5, 2:8, 2:8] = 1
    target[0, 0, 6:9, 10:14, 9:12] = 1
    target[0, 0, 2:4, 11:15, 2:5] = 2
    target[1, 0, 3:8, 3:9, 4:12] = 2
    logits = torch.randn(2, 3, 10, 16, 16, generator=g)
    probs = torch.softmax(logits, 1)
    reference = MonaiDice(include_background=True, smooth_nr=1e-5, smooth_dr=1e-5)
    values = []
    for b in range(2):
        for c in (1, 2):
            cls = (target[b, 0] == c).numpy()
            objects, n = ndimage.label(cls, structure=np.ones((3, 3, 3)))
            for k in range(1, n + 1):
                obj = torch.from_numpy(objects == k)
                region = obj | ~torch.from_numpy(cls)
                p = (probs[b, c] * region)[None, None]
                values.append(1 - float(reference(p, obj.float()[None, None])))
    expected = 1 - np.mean(values)
    assert len(values) == 4
    assert float(BlobDiceLoss(num_classes=3)(logits, target)) == pytest.approx(expected, rel=1e-5)
