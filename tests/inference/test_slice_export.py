import numpy as np
import pytest
import torch
import torch.nn.functional as F

from voxseg.inference.export import labels_from_logits, probabilities_from_logits


def _logits(rng, c=4, shape=(7, 11, 13)):
    base = rng.normal(size=(c, *shape)).astype(np.float32)
    return torch.from_numpy(base)


@pytest.mark.parametrize("new_shape", [(15, 20, 9), (7, 11, 13), (3, 30, 31)])
def test_slice_wise_argmax_equals_full_trilinear_then_argmax(rng, new_shape):
    """The memory-lean path must give the full-logit path's labels."""
    logits = _logits(rng)
    full = F.interpolate(logits[None], size=new_shape, mode="trilinear", align_corners=False)[0]
    ref = full.argmax(0).numpy()
    got = labels_from_logits(logits, new_shape)
    top2 = torch.topk(full, 2, dim=0).values
    clear = (top2[0] - top2[1]).numpy() > 1e-4  # ignore numerical ties
    assert (got[clear] == ref[clear]).all()
    assert clear.mean() > 0.99


@pytest.mark.parametrize("axis", [0, 2])
def test_separate_axis_uses_nearest_along_it(rng, axis):
    logits = _logits(rng, shape=(6, 10, 12))
    new_shape = [14, 17, 19]
    got = labels_from_logits(logits, new_shape, axis=axis, nearest_along_axis=True)
    # reference: bilinear in the plane for every source slice, then nearest along the axis
    moved = torch.movedim(logits, axis + 1, 1)
    plane = [s for i, s in enumerate(new_shape) if i != axis]
    inplane = torch.stack(
        [
            F.interpolate(moved[:, k][None], size=plane, mode="bilinear", align_corners=False)[0]
            for k in range(moved.shape[1])
        ],
        1,
    )
    n_in, n_out = moved.shape[1], new_shape[axis]
    idx = np.clip(np.floor((np.arange(n_out) + 0.5) * n_in / n_out), 0, n_in - 1).astype(int)
    ref = torch.movedim(inplane[:, idx], 1, axis + 1).argmax(0).numpy()
    np.testing.assert_array_equal(got, ref)


def test_regions_painted_in_order(rng):
    logits = torch.full((2, 4, 4, 4), -5.0)
    logits[0, :2] = 5  # region 0 (value 1) in the first half
    logits[1, 1:3] = 5  # region 1 (value 2) overlaps, painted last
    got = labels_from_logits(logits, (4, 4, 4), region_values=[1, 2])
    assert (got[0] == 1).all() and (got[1] == 2).all() and (got[2] == 2).all()
    assert (got[3] == 0).all()


def test_probabilities_sum_to_one(rng):
    probs = probabilities_from_logits(_logits(rng), (9, 12, 14))
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1, atol=3e-3)


def test_argmax_channels_equals_argmax_with_ties_to_the_lowest_channel():
    from voxseg.inference.export import argmax_channels

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (5, 7, 9), generator=g).float()  # many ties
    assert torch.equal(argmax_channels(x).long(), x.argmax(0))
    y = torch.randn(3, 6, 8, generator=g)
    assert argmax_channels(y).dtype == torch.uint8
    assert torch.equal(argmax_channels(y).long(), y.argmax(0))
