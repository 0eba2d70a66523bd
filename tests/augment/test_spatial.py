"""Spatial augmentation against SciPy: crops, flips, rotations, affine maps, input size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from voxseg.augment import (
    AugmentationConfig,
    ElasticConfig,
    MirrorConfig,
    RotationConfig,
    ScalingConfig,
    augmentation_preset,
    build_augmentation,
    required_input_size,
)


def spatial_only(**update) -> AugmentationConfig:
    """No intensity transforms, nothing spatial unless ``update`` switches it on."""
    base = AugmentationConfig().without_spatial().without_intensity()
    return base.model_copy(update=update)


def blobs(shape: tuple[int, ...], labels: int, seed: int) -> np.ndarray:
    """A label map of smooth random regions with values ``0..labels-1``."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(labels, *shape)), [0] + [3] * len(shape))
    return field.argmax(0).astype(np.int64)


def smooth(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.normal(size=shape), 2).astype(np.float32)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("in_shape", [(20, 24, 28), (21, 26, 31)])
def test_no_transform_is_an_exact_centre_crop(in_shape):
    patch = (12, 16, 18)
    aug = build_augmentation(spatial_only(), spatial_dims=3, patch_size=patch)
    image = torch.from_numpy(smooth(in_shape, 0))[None, None].repeat(2, 1, 1, 1, 1)
    seg = torch.from_numpy(blobs(in_shape, 3, 1))[None, None].repeat(2, 1, 1, 1, 1)
    out, out_seg = aug(image, seg, gen())
    start = [(i - p) // 2 for i, p in zip(in_shape, patch, strict=True)]
    window = tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True))
    assert torch.equal(out[0, 0], image[0, 0][window])
    assert torch.equal(out_seg[1, 0], seg[1, 0][window])


def test_input_smaller_than_patch_is_padded():
    aug = build_augmentation(spatial_only(seg_pad_value=0), spatial_dims=2, patch_size=(10, 12))
    image = torch.ones(1, 1, 6, 12)
    seg = torch.full((1, 1, 6, 12), 2)
    out, out_seg = aug(image, seg, gen())
    assert out.shape == (1, 1, 10, 12)
    assert torch.equal(out[0, 0, 2:8], torch.ones(6, 12)) and out[0, 0, :2].abs().sum() == 0
    assert set(out_seg.unique().tolist()) == {0, 2}


def test_mirroring_is_exact_and_matches_per_sample_flips():
    cfg = spatial_only(mirror=MirrorConfig(p_per_axis=0.5))
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=(8, 10, 12))
    image = torch.randn(16, 2, 8, 10, 12)
    seg = torch.randint(0, 4, (16, 1, 8, 10, 12))
    params = aug.sample_spatial(16, gen(3), "cpu")
    out, out_seg = aug.apply(image, seg, params, gen(3))
    assert not params.resample.any()
    assert 0 < params.flips.sum() < params.flips.numel()
    for i in range(16):
        axes = [2 + a for a in range(3) if params.flips[i, a]]
        assert torch.equal(out[i], image[i].flip([a - 1 for a in axes]))
        assert torch.equal(out_seg[i], seg[i].flip([a - 1 for a in axes]))


def test_mirror_only_allowed_axes():
    cfg = spatial_only(mirror=MirrorConfig(p_per_axis=1.0, axes=(1,)))
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=(4, 5, 6))
    image = torch.randn(2, 1, 4, 5, 6)
    out, _ = aug(image, None, gen())
    assert torch.equal(out, image.flip(3))


@pytest.mark.parametrize("angle", [30.0, -75.0, 140.0])
def test_rotation_matches_scipy_rotate(angle):
    """Angle a reads the input rotated by a: scipy's ``rotate(x, -a, axes=(0, 1))``."""
    cfg = spatial_only(rotation=RotationConfig(p=1.0, degrees_in_plane=(angle, angle)))
    aug = build_augmentation(cfg, spatial_dims=2, patch_size=(40, 48))
    img = smooth((40, 48), 4)
    out, _ = aug(torch.from_numpy(img)[None, None], None, gen())
    ref = ndimage.rotate(img, -angle, axes=(0, 1), reshape=False, order=1, mode="grid-constant")
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=1e-5)


def test_dummy_2d_rotates_each_slice_in_plane():
    cfg = spatial_only(rotation=RotationConfig(p=1.0, degrees_in_plane=(50.0, 50.0)))
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=(5, 30, 34), dummy_2d=True)
    img = smooth((5, 30, 34), 5)
    out, _ = aug(torch.from_numpy(img)[None, None], None, gen())
    ref = ndimage.rotate(img, -50.0, axes=(1, 2), reshape=False, order=1, mode="grid-constant")
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=1e-5)


def test_affine_matches_scipy_affine_transform_for_image_and_labels():
    """Image (linear) and labels (nearest) follow the same map as ``affine_transform``."""
    cfg = spatial_only(
        rotation=RotationConfig(p=1.0),
        scaling=ScalingConfig(p=1.0, isotropic=False),
        mirror=MirrorConfig(p_per_axis=0.5),
    )
    patch, in_shape = (18, 20, 22), (26, 30, 31)
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=patch)
    labels = blobs(in_shape, 4, 6)
    img = smooth(in_shape, 7)
    image = torch.from_numpy(np.stack([img, img * 2]))[None].repeat(3, 1, 1, 1, 1)
    seg = torch.from_numpy(labels)[None, None].repeat(3, 1, 1, 1, 1)
    params = aug.sample_spatial(3, gen(8), "cpu")
    out, out_seg = aug.apply(image, seg, params, gen(8))
    c_out, c_in = aug.spatial.centres(in_shape)
    for i in range(3):
        matrix = params.matrix[i].double().numpy()
        offset = c_in - matrix @ c_out
        ref = ndimage.affine_transform(
            img, matrix, offset, output_shape=patch, order=1, mode="grid-constant"
        )
        np.testing.assert_allclose(out[i, 0].numpy(), ref, atol=1e-4)
        np.testing.assert_allclose(out[i, 1].numpy(), 2 * ref, atol=2e-4)
        ref_seg = ndimage.affine_transform(
            labels, matrix, offset, output_shape=patch, order=0, mode="grid-constant"
        )
        assert (out_seg[i, 0].numpy() == ref_seg).mean() > 0.995


def test_image_and_labels_are_transformed_identically():
    """A label map cast to float and augmented as the image rounds back to the labels."""
    cfg = spatial_only(
        rotation=RotationConfig(p=1.0),
        scaling=ScalingConfig(p=1.0),
        elastic=ElasticConfig(p=1.0, magnitude=(2.0, 3.0)),
        mirror=MirrorConfig(p_per_axis=0.5),
    )
    patch = (20, 22, 24)
    in_shape = required_input_size(patch, cfg)
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=patch)
    labels = torch.from_numpy(blobs(in_shape, 2, 9))[None, None].repeat(4, 1, 1, 1, 1)
    out, out_seg = aug(labels.float(), labels, gen(10))
    agree = (out.round().long() == out_seg).float().mean()
    assert agree > 0.97
    # the nearest voxel weighs >= 1/8 in trilinear interpolation, so a value above 7/8
    # (below 1/8) proves the nearest label is 1 (0): there the two must agree exactly
    decisive = (out - 0.5).abs() > 0.376
    assert torch.equal(out.round().long()[decisive], out_seg[decisive])


def test_labels_are_never_invented_and_ignore_is_kept():
    cfg = augmentation_preset("nnunet").without_intensity()
    cfg = cfg.model_copy(update={"rotation": RotationConfig(p=1.0), "seg_pad_value": 0})
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=(12, 12, 12))
    labels = blobs((20, 20, 20), 3, 11)
    labels[labels == 2] = 255
    seg = torch.from_numpy(labels)[None, None].repeat(3, 1, 1, 1, 1)
    _, out_seg = aug(torch.randn(3, 1, 20, 20, 20), seg, gen(12))
    assert set(out_seg.unique().tolist()) <= {0, 1, 255}
    assert (out_seg == 255).any()


@pytest.mark.parametrize("preset,dummy", [("nnunet", False), ("nnunet", True), ("ovseg", False)])
def test_required_input_size_covers_every_sampled_transform(preset, dummy):
    cfg = augmentation_preset(preset)
    cfg = cfg.model_copy(
        update={
            "rotation": cfg.rotation.model_copy(update={"p": 1.0}),
            "scaling": cfg.scaling.model_copy(update={"p": 1.0}),
        }
    )
    patch = (8, 24, 20) if dummy else (16, 18, 20)
    size = required_input_size(patch, cfg, dummy_2d=dummy)
    assert all((s - p) % 2 == 0 and s >= p for s, p in zip(size, patch, strict=True))
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=patch, dummy_2d=dummy)
    params = aug.sample_spatial(200, gen(13), "cpu")
    src = aug.spatial.source_coordinates(params, torch.arange(200), size)
    upper = torch.tensor(size, dtype=torch.float32) - 1
    assert (src >= -1e-3).all() and (src <= upper + 1e-3).all()
    if dummy or cfg.in_plane_only:
        # no mixing across slices: axis 0 is read unchanged (or mirrored)
        frac = src[..., 0] - src[..., 0].round()
        assert frac.abs().max() < 1e-4


def test_elastic_displacement_has_the_drawn_magnitude():
    cfg = spatial_only(elastic=ElasticConfig(p=1.0, magnitude=(3.0, 3.0)))
    aug = build_augmentation(cfg, spatial_dims=3, patch_size=(10, 12, 14))
    params = aug.sample_spatial(2, gen(14), "cpu")
    disp = aug.spatial.displacement(params, torch.arange(2))
    assert disp.shape == (2, 10, 12, 14, 3)
    np.testing.assert_allclose(disp.abs().flatten(1).amax(1).numpy(), [3.0, 3.0], rtol=1e-5)
    assert disp.abs().mean() > 0.3  # a field, not a spike


def test_zoom_coverage_reads_a_smaller_crop():
    cfg = augmentation_preset("nnunet")
    full = required_input_size((64, 64, 64), cfg)
    capped = required_input_size((64, 64, 64), cfg, zoom_coverage=1.0)
    assert all(c < f for c, f in zip(capped, full, strict=True))
    no_spatial = required_input_size((64, 64, 64), cfg.without_spatial())
    assert no_spatial == (64, 64, 64)
