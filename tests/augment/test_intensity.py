"""Each intensity transform's statistics, against SciPy / PyTorch references or analytic values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from voxseg.augment import (
    BlurConfig,
    BrightnessConfig,
    ContrastConfig,
    GammaConfig,
    LowResolutionConfig,
    NoiseConfig,
)
from voxseg.augment.intensity import Brightness, Contrast, Gamma
from voxseg.augment.noise import GaussianBlur, GaussianNoise, blur_rows
from voxseg.augment.resolution import LowResolution


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("parameter,level,std", [("std", 0.2, 0.2), ("variance", 0.09, 0.3)])
def test_noise_has_the_configured_spread(parameter, level, std):
    cfg = NoiseConfig(p=1.0, range=(level, level), parameter=parameter)
    image = torch.full((2, 3, 32, 32, 32), 5.0)
    out = GaussianNoise(cfg, spatial_dims=3)(image.clone(), gen())
    residual = out - 5.0
    # 3 * 32**3 values per sample: the sample std is within 1% of the truth
    np.testing.assert_allclose(residual.std(dim=(1, 2, 3, 4)).numpy(), [std, std], rtol=0.01)
    assert residual.mean().abs() < 0.01


def test_noise_probability_and_zero_noise_elsewhere():
    cfg = NoiseConfig(p=0.3, range=(0.1, 0.1))
    image = torch.zeros(400, 1, 4, 4)
    out = GaussianNoise(cfg, spatial_dims=2)(image, gen(1))
    hit = (out.flatten(1).abs().amax(1) > 0).float().mean().item()
    assert abs(hit - 0.3) < 4 * np.sqrt(0.3 * 0.7 / 400)


def test_blur_matches_scipy_gaussian_filter():
    sigma = 1.3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 12, 14, 16)).astype(np.float32)
    sig = torch.full((2, 3), sigma)
    out = blur_rows(torch.from_numpy(x), sig, [0, 1, 2])
    radius = int(np.ceil(3 * sigma))
    for i in range(2):
        ref = ndimage.gaussian_filter(x[i], sigma, mode="mirror", radius=radius)
        np.testing.assert_allclose(out[i].numpy(), ref, atol=1e-5)


def test_blur_reduces_white_noise_variance_as_its_kernel_predicts():
    sigma = 0.8
    cfg = BlurConfig(p=1.0, sigma=(sigma, sigma), p_per_channel=1.0)
    x = torch.randn(1, 1, 48, 48, 48, generator=gen(2))
    out = GaussianBlur(cfg, spatial_dims=3)(x.clone(), gen())
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    expected = (k**2).sum() ** 3  # white noise through a separable kernel
    inner = out[0, 0, 4:-4, 4:-4, 4:-4]
    assert abs(inner.var().item() / expected - 1) < 0.05


def test_blur_in_plane_only_leaves_axis_0_alone():
    cfg = BlurConfig(p=1.0, sigma=(1.0, 1.0), p_per_channel=1.0, in_plane_only=True)
    x = torch.zeros(1, 1, 5, 9, 9)
    x[0, 0, 2, 4, 4] = 1.0
    out = GaussianBlur(cfg, spatial_dims=3)(x, gen())
    assert out[0, 0, [0, 1, 3, 4]].abs().max() == 0
    assert abs(out[0, 0, 2].sum().item() - 1) < 1e-5


@pytest.mark.parametrize("sampling", ["uniform", "split_at_one"])
def test_brightness_multiplier_range_and_split(sampling):
    cfg = BrightnessConfig(p=1.0, range=(0.75, 1.25), sampling=sampling)
    image = torch.ones(4000, 1, 2, 2)
    out = Brightness(cfg, spatial_dims=2)(image, gen(3))
    m = out[:, 0, 0, 0]
    assert torch.equal(out, m.view(-1, 1, 1, 1).expand_as(out))
    assert m.min() >= 0.75 and m.max() <= 1.25
    # both samplings are symmetric around 1 for this range
    assert abs((m < 1).float().mean().item() - 0.5) < 0.04
    if sampling == "split_at_one":
        below = m[m < 1]
        assert abs(below.mean().item() - 0.875) < 0.01


def test_split_at_one_with_range_above_one_stays_above():
    cfg = BrightnessConfig(p=1.0, range=(1.1, 1.3))
    out = Brightness(cfg, spatial_dims=2)(torch.ones(500, 1, 1, 1), gen(4))
    assert out.min() >= 1.1 and out.max() <= 1.3


def test_contrast_preserves_mean_without_clipping_and_range_with_it():
    x = torch.randn(3, 2, 10, 10, 10, generator=gen(5))
    plain = Contrast(ContrastConfig(p=1.0, preserve_range=False), spatial_dims=3)
    out = plain(x.clone(), gen(6))
    torch.testing.assert_close(out.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4)), atol=1e-5, rtol=0)
    ratio = (out.std(dim=(2, 3, 4)) / x.std(dim=(2, 3, 4))).flatten()
    assert ratio.min() >= 0.75 - 1e-5 and ratio.max() <= 1.25 + 1e-5
    kept = Contrast(ContrastConfig(p=1.0, range=(1.5, 1.5)), spatial_dims=3)(x.clone(), gen(6))
    assert torch.equal(kept.amin(dim=(2, 3, 4)), x.amin(dim=(2, 3, 4)))
    assert torch.equal(kept.amax(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4)))


@pytest.mark.parametrize("p_invert", [0.0, 1.0])
def test_gamma_retain_stats_keeps_mean_and_std(p_invert):
    cfg = GammaConfig(p=1.0, range=(1.5, 1.5), p_invert=p_invert, retain_stats=True)
    x = torch.rand(2, 1, 16, 16, 16, generator=gen(7)) * 3 + 1
    out = Gamma(cfg, spatial_dims=3)(x.clone(), gen())
    torch.testing.assert_close(out.mean(dim=(2, 3, 4)), x.mean(dim=(2, 3, 4)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3, 4)), x.std(dim=(2, 3, 4)), atol=1e-4, rtol=0)
    assert not torch.allclose(out, x, atol=1e-2)


@pytest.mark.parametrize("p_invert", [0.0, 1.0])
def test_gamma_without_retain_stats_matches_formula(p_invert):
    g = 0.7
    cfg = GammaConfig(p=1.0, range=(g, g), p_invert=p_invert, retain_stats=False)
    x = np.random.default_rng(8).uniform(-1, 2, size=(1, 1, 6, 7)).astype(np.float32)
    out = Gamma(cfg, spatial_dims=2)(torch.from_numpy(x.copy()), gen())
    lo, hi = x.min(), x.max()
    xn = (x - lo) / (hi - lo)
    ref = (1 - (1 - xn) ** g if p_invert else xn**g) * (hi - lo) + lo
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(37, 29, 16), (8, 9, 10)])
def test_low_resolution_matches_interpolate_down_and_up(shape):
    cfg = LowResolutionConfig(p=1.0, zoom=(0.5, 1.0), p_per_channel=1.0, synchronize_axes=False)
    x = torch.randn(4, 2, *shape, generator=gen(9))
    transform = LowResolution(cfg, spatial_dims=3)
    out = transform(x.clone(), gen(10))
    # replay the draws of the transform to know each row's zoom
    g = gen(10)
    torch.rand((4, 1), generator=g), torch.rand((4, 2), generator=g)
    zoom = 0.5 + 0.5 * torch.rand((4, 2, 3), generator=g)
    for b in range(4):
        for c in range(2):
            size = [round(n * float(z)) for n, z in zip(shape, zoom[b, c].tolist(), strict=True)]
            down = F.interpolate(x[b, c][None, None], size=size, mode="nearest-exact")
            ref = F.interpolate(down, size=shape, mode="trilinear")[0, 0]
            torch.testing.assert_close(out[b, c], ref, atol=1e-5, rtol=1e-5)


def test_low_resolution_changes_high_frequencies_only():
    cfg = LowResolutionConfig(p=1.0, zoom=(0.5, 0.5), p_per_channel=1.0)
    z, y, x = np.meshgrid(*[np.arange(32)] * 3, indexing="ij")
    slow = np.sin(2 * np.pi * (x + 2 * y + z) / 32).astype(np.float32)
    fast = np.random.default_rng(11).normal(size=(32, 32, 32)).astype(np.float32)
    data = torch.from_numpy(np.stack([slow, fast]))[None]
    out = LowResolution(cfg, spatial_dims=3)(data.clone(), gen())
    # nearest-exact downsampling shifts by up to half a voxel: compare amplitudes, not phases
    peak_in = np.abs(np.fft.rfftn(slow)).max()
    peak_out = np.abs(np.fft.rfftn(out[0, 0].numpy())).max()
    assert peak_out / peak_in > 0.85
    spectrum_in = np.abs(np.fft.rfftn(fast))
    spectrum_out = np.abs(np.fft.rfftn(out[0, 1].numpy()))
    low = spectrum_out[:3, :3, :3].sum() / spectrum_in[:3, :3, :3].sum()
    high = spectrum_out[12:20, 12:20, 12:].sum() / spectrum_in[12:20, 12:20, 12:].sum()
    assert low > 0.8 and high < 0.5


def test_low_resolution_dummy_2d_keeps_axis_0():
    cfg = LowResolutionConfig(p=1.0, zoom=(0.5, 0.5), p_per_channel=1.0)
    x = torch.randn(1, 1, 6, 16, 16, generator=gen(12))
    out = LowResolution(cfg, spatial_dims=3, dummy_2d=True)(x.clone(), gen())
    for k in range(6):
        down = F.interpolate(x[0, :, k][None], size=(8, 8), mode="nearest-exact")
        ref = F.interpolate(down, size=(16, 16), mode="bilinear")[0, 0]
        torch.testing.assert_close(out[0, 0, k], ref, atol=1e-5, rtol=1e-5)
