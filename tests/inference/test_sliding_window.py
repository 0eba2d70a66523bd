import numpy as np
import pytest
import torch

from voxseg.inference.sliding_window import (
    WindowSettings,
    count_windows,
    mirror_combinations,
    predict_logits,
)


def _pointwise(cin=2, cout=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Conv3d(cin, cout, 1).eval()


def _padded(cin=1, cout=2, seed=0, dims=3):
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    return torch.nn.Sequential(
        conv(cin, 4, 3, padding=1), torch.nn.Tanh(), conv(4, cout, 3, padding=1)
    ).eval()


def test_pointwise_network_gives_the_global_answer(rng):
    """Every window sees the same value at a voxel, so any weighting must return it."""
    net = _pointwise()
    x = rng.normal(size=(2, 20, 37, 29)).astype(np.float32)
    s = WindowSettings(patch_size=(8, 16, 16), tta=False, batch_windows=3)
    got = predict_logits(x, [net], 3, s, device=torch.device("cpu"))
    with torch.no_grad():
        ref = net(torch.from_numpy(x)[None])[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_image_smaller_than_patch_is_padded_and_cropped_back(rng):
    net = _pointwise()
    x = rng.normal(size=(2, 5, 9, 30)).astype(np.float32)
    s = WindowSettings(patch_size=(8, 16, 16), tta=True)
    got = predict_logits(x, [net], 3, s, device=torch.device("cpu"))
    assert got.shape == (3, 5, 9, 30)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)[None])[0]
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_tta_is_flip_equivariant(rng):
    """With all 8 flips, predicting a flipped image gives the flipped prediction (odd patch
    and sizes whose window starts are mirror-symmetric, so the weighting is too)."""
    net = _padded()
    x = rng.normal(size=(1, 16, 23, 20)).astype(np.float32)
    s = WindowSettings(patch_size=(15, 15, 15), tta=True)
    a = predict_logits(x, [net], 2, s, device=torch.device("cpu"))
    flipped = np.ascontiguousarray(x[:, ::-1, :, ::-1])
    b = predict_logits(flipped, [net], 2, s, device=torch.device("cpu"))
    torch.testing.assert_close(torch.flip(b, (1, 3)), a, atol=1e-5, rtol=1e-5)
    assert len(mirror_combinations((0, 1, 2))) == 8


def test_fold_ensemble_averages_logits(rng):
    nets = [_pointwise(seed=1), _pointwise(seed=2)]
    x = rng.normal(size=(2, 8, 16, 16)).astype(np.float32)
    s = WindowSettings(patch_size=(8, 16, 16), tta=False)
    both = predict_logits(x, nets, 3, s, device=torch.device("cpu"))
    single = [predict_logits(x, [n], 3, s, device=torch.device("cpu")) for n in nets]
    torch.testing.assert_close(both, (single[0] + single[1]) / 2, atol=1e-5, rtol=1e-5)


def test_matches_monai_sliding_window_inference(rng):
    """Same windows (sizes where nnU-Net's and MONAI's steps coincide) and the same window
    weight: outputs agree within float tolerance. (MONAI's own Gaussian differs by design:
    it floors weights at 1e-3 and centres even patches between voxels; nnU-Net, and voxseg,
    do neither — so the weight map is passed to MONAI explicitly.)"""
    from monai.inferers import sliding_window_inference

    from voxseg.spatial.tiling import gaussian_importance_map

    net = _padded(cout=3)
    x = rng.normal(size=(1, 15, 29, 29)).astype(np.float32)
    s = WindowSettings(patch_size=(15, 15, 15), step=0.5, tta=False)
    ours = predict_logits(x, [net], 3, s, device=torch.device("cpu"))
    with torch.no_grad():
        ref = sliding_window_inference(
            torch.from_numpy(x)[None],
            (15, 15, 15),
            4,
            net,
            overlap=0.5,
            mode="gaussian",
            roi_weight_map=gaussian_importance_map((15, 15, 15)),
        )[0]
    torch.testing.assert_close(ours, ref, atol=2e-4, rtol=1e-3)


def test_two_d_configuration_runs_slice_by_slice(rng):
    net = _padded(dims=2)
    x = rng.normal(size=(1, 3, 20, 24)).astype(np.float32)
    s = WindowSettings(patch_size=(16, 16), tta=False)
    got = predict_logits(x, [net], 2, s, device=torch.device("cpu"))
    for z in range(3):
        single = predict_logits(x[:, z : z + 1], [net], 2, s, device=torch.device("cpu"))
        torch.testing.assert_close(got[:, z], single[:, 0])
    assert count_windows((3, 20, 24), s) == 3 * 4


def test_roi_skips_windows_without_roi():
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return torch.zeros(x.shape[0], 2, *x.shape[2:])

    x = np.zeros((1, 16, 64, 64), np.float32)
    roi = np.zeros((16, 64, 64), bool)
    roi[2:5, 2:5, 2:5] = True
    s = WindowSettings(patch_size=(16, 16, 16), tta=False, batch_windows=1)
    predict_logits(x, [Counting()], 2, s, device=torch.device("cpu"), roi=roi)
    assert sum(calls) == 1
    calls.clear()
    predict_logits(x, [Counting()], 2, s, device=torch.device("cpu"))
    assert sum(calls) == count_windows((16, 64, 64), s) == 49


@pytest.mark.parametrize("batch_windows", [1, 5])
def test_batching_windows_does_not_change_the_result(rng, batch_windows):
    net = _padded()
    x = rng.normal(size=(1, 20, 20, 20)).astype(np.float32)
    base = predict_logits(
        x,
        [net],
        2,
        WindowSettings((16, 16, 16), tta=False, batch_windows=2),
        device=torch.device("cpu"),
    )
    other = predict_logits(
        x,
        [net],
        2,
        WindowSettings((16, 16, 16), tta=False, batch_windows=batch_windows),
        device=torch.device("cpu"),
    )
    torch.testing.assert_close(base, other, atol=1e-5, rtol=1e-5)
