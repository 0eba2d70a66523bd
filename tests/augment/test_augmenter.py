"""The whole augmenter: presets, determinism, probabilities, registry, devices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from voxseg.augment import (
    AUGMENTATIONS,
    AugmentationConfig,
    augmentation_preset,
    build_augmentation,
    required_input_size,
)
from voxseg.config import apply_overrides
from voxseg.errors import VoxsegError


def gen(seed: int = 0, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def batch(shape: tuple[int, ...], b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(b, 1, *shape, generator=g)
    seg = (image > 0.5).long() + (image > 1.5).long()
    return image, seg


def within_binomial(hits: int, n: int, p: float) -> bool:
    return abs(hits / n - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-9


def test_nnunet_preset_values():
    cfg = augmentation_preset("nnunet")
    assert (cfg.rotation.p, cfg.rotation.degrees, cfg.rotation.degrees_in_plane) == (
        0.2,
        (-30.0, 30.0),
        (-180.0, 180.0),
    )
    assert (cfg.scaling.p, cfg.scaling.range) == (0.2, (0.7, 1.4))
    assert (cfg.noise.p, cfg.noise.range, cfg.blur.p, cfg.blur.sigma) == (
        0.1,
        (0.0, 0.1),
        0.2,
        (0.5, 1.0),
    )
    assert (cfg.brightness.p, cfg.contrast.p, cfg.low_resolution.p) == (0.15, 0.15, 0.25)
    assert (cfg.gamma.p, cfg.gamma.p_invert, cfg.inverted_gamma.p) == (0.3, 0.0, 0.1)
    assert cfg.inverted_gamma.p_invert == 1.0 and cfg.mirror.p_per_axis == 0.5


def test_ovseg_preset_values():
    cfg = augmentation_preset("ovseg")
    assert cfg.in_plane_only and cfg.noise.parameter == "variance"
    assert (cfg.noise.p, cfg.blur.p, cfg.blur.sigma) == (0.15, 0.1, (0.5, 1.5))
    assert (cfg.brightness.range, cfg.contrast.range) == ((0.7, 1.3), (0.65, 1.5))
    assert (cfg.low_resolution.p, cfg.gamma.p, cfg.gamma.p_invert) == (0.125, 0.15, 0.15)


def test_unknown_preset_and_transform_names_list_valid_ones():
    with pytest.raises(VoxsegError, match="nnunet"):
        build_augmentation("nope", spatial_dims=3, patch_size=(8, 8, 8))
    cfg = AugmentationConfig(intensity_order=["noise", "sharpen"])
    with pytest.raises(VoxsegError, match="low_resolution"):
        build_augmentation(cfg, spatial_dims=3, patch_size=(8, 8, 8))


def test_invalid_probability_is_rejected():
    with pytest.raises(VoxsegError, match="probability"):
        apply_overrides(AugmentationConfig(), ["noise.p=1.5"])


def test_overrides_change_one_setting():
    cfg = apply_overrides(augmentation_preset("nnunet"), ["rotation.p=0.5", "blur.sigma=[1, 2]"])
    assert cfg.rotation.p == 0.5 and cfg.blur.sigma == (1.0, 2.0)


@pytest.mark.parametrize("preset", ["nnunet", "ovseg"])
@pytest.mark.parametrize("dims", [2, 3])
def test_output_shapes_and_dtypes(preset, dims):
    patch = (12, 14, 10)[:dims]
    size = required_input_size(patch, augmentation_preset(preset))
    aug = build_augmentation(preset, spatial_dims=dims, patch_size=patch)
    image, seg = batch(size, b=3)
    seg = seg.to(torch.int16)
    out, out_seg = aug(image, seg, gen())
    assert out.shape == (3, 1, *patch) and out.dtype == torch.float32
    assert out_seg.shape == (3, 1, *patch) and out_seg.dtype == torch.int16
    out_only, none = aug(image, None, gen())
    assert none is None and torch.equal(out_only, out)


def test_same_seed_same_output_other_seed_differs():
    aug = build_augmentation("nnunet", spatial_dims=3, patch_size=(10, 10, 10))
    cfg = aug.config.model_copy(
        update={"rotation": aug.config.rotation.model_copy(update={"p": 1})}
    )
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=(10, 10, 10))
    image, seg = batch((16, 16, 16), b=4)
    a = aug(image.clone(), seg, gen(5))
    b = aug(image.clone(), seg, gen(5))
    c = aug(image.clone(), seg, gen(6))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_input_is_not_modified():
    aug = build_augmentation("nnunet", spatial_dims=2, patch_size=(8, 8))
    image, seg = batch((8, 8), b=8)
    before = image.clone()
    aug(image, seg, gen())
    assert torch.equal(image, before)


def test_spatial_probabilities_are_honoured():
    aug = build_augmentation("nnunet", spatial_dims=3, patch_size=(4, 4, 4))
    n = 4000
    params = aug.sample_spatial(n, gen(1), "cpu")
    # a sample is resampled when rotated (0.2) or scaled (0.2): 1 - 0.8 * 0.8
    assert within_binomial(int(params.resample.sum()), n, 0.36)
    for axis in range(3):
        assert within_binomial(int(params.flips[:, axis].sum()), n, 0.5)
    det = torch.linalg.det(params.matrix)
    scaled = (det.abs() - 1).abs() > 1e-4
    assert within_binomial(int(scaled.sum()), n, 0.2)


@pytest.mark.parametrize(
    "name,p",
    [("brightness", 0.15), ("contrast", 0.15), ("noise", 0.1), ("gamma", 0.3)],
)
def test_intensity_probabilities_are_honoured(name, p):
    cfg = augmentation_preset("nnunet").without_spatial()
    cfg = cfg.model_copy(update={"intensity_order": [name]})
    aug = build_augmentation(cfg, spatial_dims=2, patch_size=(4, 4))
    n = 3000
    image = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(2)) + 0.5
    out, _ = aug(image, None, gen(3))
    changed = (out - image).flatten(1).abs().amax(1) > 1e-6
    assert within_binomial(int(changed.sum()), n, p)


def test_per_channel_probability_of_blur():
    cfg = augmentation_preset("nnunet").without_spatial()
    cfg = cfg.model_copy(update={"intensity_order": ["blur"]})
    aug = build_augmentation(cfg, spatial_dims=2, patch_size=(6, 6))
    n = 2000
    image = torch.rand(n, 2, 6, 6, generator=torch.Generator().manual_seed(4))
    out, _ = aug(image, None, gen(5))
    changed = (out - image).flatten(2).abs().amax(2) > 1e-6
    # p 0.2 per sample, then 0.5 per channel
    assert within_binomial(int(changed.sum()), 2 * n, 0.1)


USER_TRANSFORM = """
class AddConstant:
    def __init__(self, *, spatial_dims, dummy_2d=False, value=1.0):
        self.value = value

    def __call__(self, image, generator):
        return image.add_(self.value)
"""


def test_custom_transform_by_dotted_path(tmp_path, monkeypatch):
    (tmp_path / "my_augment_test.py").write_text(USER_TRANSFORM)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("VOXSEG_TRUST_CODE", "1")  # a module:attr name runs the user's code
    name = "my_augment_test:AddConstant"
    cfg = AugmentationConfig(intensity_order=[name], custom={name: {"value": 2.5}})
    aug = build_augmentation(cfg.without_spatial(), spatial_dims=2, patch_size=(4, 4))
    out, _ = aug(torch.zeros(2, 1, 4, 4), None, gen())
    assert torch.equal(out, torch.full((2, 1, 4, 4), 2.5))
    assert "low_resolution" in AUGMENTATIONS


def test_dummy_2d_requires_3d():
    with pytest.raises(VoxsegError, match="dummy_2d"):
        build_augmentation("nnunet", spatial_dims=2, patch_size=(8, 8), dummy_2d=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_matches_shapes_and_is_deterministic():
    aug = build_augmentation("nnunet", spatial_dims=3, patch_size=(32, 32, 32))
    image, seg = batch((48, 48, 48), b=4)
    image, seg = image.cuda(), seg.cuda()
    a = aug(image, seg, gen(1, "cuda"))
    b = aug(image, seg, gen(1, "cuda"))
    assert a[0].is_cuda and a[1].is_cuda
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert set(a[1].unique().tolist()) <= {0, 1, 2}
    # a CPU generator drives a GPU batch too; the spatial map matches the CPU result
    cfg = aug.config.without_intensity()
    spatial = build_augmentation(cfg, spatial_dims=3, patch_size=(32, 32, 32))
    on_gpu = spatial(image, seg, gen(2))
    on_cpu = spatial(image.cpu(), seg.cpu(), gen(2))
    torch.testing.assert_close(on_gpu[0].cpu(), on_cpu[0], atol=1e-4, rtol=1e-4)
    assert (on_gpu[1].cpu() == on_cpu[1]).float().mean() > 0.999
