"""Resampling against scipy.ndimage and SimpleITK on smooth random fields.

Tolerances (max abs error / data range): cubic vs ``scipy.ndimage.zoom(order=3,
mode="nearest", grid_mode=True)`` 1e-5; linear 1e-6; nearest exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from voxseg.io.image import Image, from_sitk, to_sitk
from voxseg.spatial import (
    compute_new_shape,
    get_separate_z_axis,
    resample_data,
    resample_image,
    resample_labels,
)

TOL = {0: 0.0, 1: 1e-6, 3: 1e-5}


def smooth_field(rng, shape, sigma=2.0):
    return ndimage.gaussian_filter(rng.standard_normal(shape), sigma).astype(np.float32)


def scipy_zoom(x, new_shape, order):
    zoom = [n / o for n, o in zip(new_shape, x.shape, strict=True)]
    return ndimage.zoom(x.astype(np.float64), zoom, order=order, mode="nearest", grid_mode=True)


def rel_err(a, b, ref):
    return float(np.abs(a - b).max() / (ref.max() - ref.min()))


def test_compute_new_shape():
    assert compute_new_shape((300, 512, 512), (1.5, 0.7, 0.7), (1, 1, 1)) == (450, 358, 358)
    assert compute_new_shape((1, 10, 10), (999, 1, 1), (999, 0.5, 3)) == (1, 20, 3)
    assert compute_new_shape((3, 3, 3), (1, 1, 1), (10, 10, 10)) == (1, 1, 1)


@pytest.mark.parametrize(
    ("spacing", "new_spacing", "expected"),
    [
        ((3.0, 0.5, 0.5), (1.0, 1.0, 1.0), 0),
        ((0.5, 0.5, 3.1), (0.5, 0.5, 3.1), 2),
        ((1.0, 1.0, 1.0), (4.0, 1.0, 1.0), 0),  # old isotropic, new anisotropic
        ((1.0, 1.0, 1.0), (1.0, 1.0, 1.0), None),
        ((3.0, 1.0, 1.0), (1.0, 1.0, 1.0), None),  # ratio exactly 3 is not > 3
        ((0.24, 1.25, 1.25), (1.0, 1.0, 1.0), None),  # two coarse axes: not separate
        ((0.24, 1.25, 1.25), (5.0, 1.0, 1.0), None),  # old decides when anisotropic
        ((1.0, 5.0, 1.0), (1.0, 1.0, 1.0), 1),
    ],
)
def test_get_separate_z_axis(spacing, new_spacing, expected):
    assert get_separate_z_axis(spacing, new_spacing) == expected


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("new_shape", [(30, 25, 57), (13, 40, 20), (20, 33, 60), (7, 11, 90)])
def test_matches_scipy_zoom(rng, order, new_shape):
    x = smooth_field(rng, (20, 33, 41)) * 100 + 5
    got = resample_data(x[None], new_shape, order=order, clip=False)
    assert got.shape == (1, *new_shape) and got.dtype == np.float32
    assert rel_err(got[0], scipy_zoom(x, new_shape, order), x) <= TOL[order]


def test_channels_and_integer_input(rng):
    x = (smooth_field(rng, (2, 12, 14, 16)) * 1000).astype(np.int16)
    got = resample_data(x, (9, 20, 11), order=3, clip=False)
    for c in range(2):
        ref = scipy_zoom(x[c], (9, 20, 11), 3)
        assert rel_err(got[c], ref, x[c].astype(float)) <= TOL[3]


def test_matches_sitk_bspline_in_the_interior(rng):
    """ITK's B-spline uses mirror boundaries: compare away from the border."""
    x = smooth_field(rng, (24, 40, 36), sigma=2.5)
    img = Image(x, spacing=(1.0, 0.7, 0.8))
    new_spacing = (0.75, 1.1, 0.5)
    out = resample_image(img, new_spacing, separate_z_axis=None, clip=False)
    ref = sitk.Resample(
        to_sitk(img),
        out.shape[::-1],
        sitk.Transform(),
        sitk.sitkBSpline,
        out.origin,
        out.spacing[::-1],
        tuple(out.direction[:, ::-1].flatten()),
        0.0,
        sitk.sitkFloat64,
    )
    ref = from_sitk(ref).array
    m = 6
    inner = (slice(m, -m),) * 3
    assert rel_err(out.array[inner], ref[inner], x) < 1e-4


def test_slabbed_equals_whole_exactly(rng):
    x = smooth_field(rng, (2, 23, 30, 31))
    for new_shape, kw in [((40, 17, 45), {}), ((12, 50, 20), {"separate_z_axis": 0})]:
        whole = resample_data(x, new_shape, max_slab_voxels=2**30, **kw)
        for slab in (1, 900, 4000):
            assert np.array_equal(resample_data(x, new_shape, max_slab_voxels=slab, **kw), whole)
    seg = (smooth_field(rng, (23, 30, 31)) * 20).astype(np.int16).clip(-1, 3)
    whole = resample_labels(seg, (40, 17, 45), max_slab_voxels=2**30)
    assert np.array_equal(resample_labels(seg, (40, 17, 45), max_slab_voxels=500), whole)


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("order_z", [0, 1])
def test_separate_z_matches_two_scipy_passes(rng, axis, order_z):
    """In-plane cubic per slice, then ``map_coordinates(order_z)`` with nnU-Net's coordinates."""
    shape = [18, 22, 26]
    shape[axis] = 6
    x = smooth_field(rng, tuple(shape))
    new_shape = [25, 15, 31]
    new_shape[axis] = 14
    plane_shape = [n for a, n in enumerate(new_shape) if a != axis]
    slices = [scipy_zoom(np.take(x, i, axis=axis), plane_shape, 3) for i in range(x.shape[axis])]
    inplane = np.stack(slices, axis=axis)
    coords = np.meshgrid(
        *[
            (np.arange(n) + 0.5) * (o / n) - 0.5
            for o, n in zip(inplane.shape, new_shape, strict=True)
        ],
        indexing="ij",
    )
    ref = ndimage.map_coordinates(inplane, np.array(coords), order=order_z, mode="nearest")
    got = resample_data(x[None], new_shape, separate_z_axis=axis, order_z=order_z, clip=False)
    assert rel_err(got[0], ref, x) <= TOL[3]


def test_clip_keeps_the_input_range():
    step = np.zeros((8, 8, 8), dtype=np.float32)
    step[:, :, 4:] = 1.0
    free = resample_data(step[None], (8, 8, 21), clip=False)
    assert free.min() < -1e-3 and free.max() > 1 + 1e-3  # cubic rings at a step
    clipped = resample_data(step[None], (8, 8, 21))
    np.testing.assert_array_equal(clipped, np.clip(free, 0, 1))


def test_identity_is_exact(rng):
    x = (rng.standard_normal((2, 5, 6, 7)) * 100).astype(np.float64)
    out = resample_data(x, (5, 6, 7))
    assert out.dtype == np.float32 and np.array_equal(out, x.astype(np.float32))
    seg = rng.integers(0, 4, (5, 6, 7)).astype(np.uint8)
    lab = resample_labels(seg, (5, 6, 7))
    assert lab.dtype == np.uint8 and np.array_equal(lab, seg) and lab is not seg


def test_labels_equal_argmax_of_per_class_linear(rng):
    seg = np.argmax(np.stack([smooth_field(rng, (14, 18, 20), 2.0) for _ in range(4)]), 0)
    seg = seg.astype(np.int32) - 1  # labels -1..2, as after crop_to_nonzero
    new_shape = (21, 11, 33)
    scores = np.stack([scipy_zoom((seg == c).astype(float), new_shape, 1) for c in range(-1, 3)])
    top2 = np.sort(scores, axis=0)[-2:]
    clear = top2[1] - top2[0] > 1e-3
    ref = np.argmax(scores, axis=0) - 1
    got = resample_labels(seg, new_shape)
    assert got.dtype == np.int32
    assert clear.mean() > 0.9
    np.testing.assert_array_equal(got[clear], ref[clear])


def test_labels_separate_z_nearest_between_slices(rng):
    seg = (smooth_field(rng, (4, 20, 20)) * 30).astype(np.int8).clip(0, 3)
    got = resample_labels(seg, (8, 10, 10), separate_z_axis=0)
    per_slice = np.stack([resample_labels(s[None], (1, 10, 10))[0] for s in seg])
    # the z coordinates (o + 0.5) / 2 - 0.5 round to slice o // 2
    np.testing.assert_array_equal(got, per_slice[np.arange(8) // 2])


@pytest.mark.parametrize("factor", [2, 3])
def test_one_voxel_class_survives_downsampling(factor):
    seg = np.zeros((12, 12, 12), dtype=np.uint8)
    seg[2:10, 2:10, 2:10] = 1
    seg[6, 6, 6] = 2  # one voxel inside class 1
    seg[0, 0, 0] = 3  # one voxel in a corner: zero linear weight for factor 3
    new_shape = (12 // factor,) * 3
    got = resample_labels(seg, new_shape)
    assert set(np.unique(got)) == {0, 1, 2, 3}
    assert (got == 2).sum() == 1 and (got == 3).sum() == 1
    assert got[6 // factor, 6 // factor, 6 // factor] == 2 and got[0, 0, 0] == 3
    # the plain per-class linear argmax loses class 2
    scores = np.stack([scipy_zoom((seg == c).astype(float), new_shape, 1) for c in range(4)])
    assert 2 not in np.argmax(scores, axis=0)


def test_resample_image_keeps_the_physical_extent(rng):
    direction = np.array([[0, 0, 1.0], [0, -1.0, 0], [1.0, 0, 0]])
    img = Image(smooth_field(rng, (10, 20, 30)), (3.0, 0.8, 0.9), (5.0, -2.0, 7.0), direction)
    out = resample_image(img, (1.0, 1.0, 1.0))
    assert out.shape == (30, 16, 27)
    corner = -0.5 * np.ones(3)
    far = np.asarray(img.shape) - 0.5
    np.testing.assert_allclose(
        out.geometry.index_to_physical(corner), img.geometry.index_to_physical(corner)
    )
    np.testing.assert_allclose(
        out.geometry.index_to_physical(np.asarray(out.shape) - 0.5),
        img.geometry.index_to_physical(far),
    )
    np.testing.assert_array_equal(out.direction, direction)
    labels = resample_image(
        img.with_array((img.array > 0).astype(np.uint8)), (1, 1, 1), is_label=True
    )
    assert labels.array.dtype == np.uint8 and labels.geometry.is_close(out.geometry)


def test_boolean_masks_stay_boolean():
    mask = np.zeros((6, 6, 6), dtype=bool)
    mask[2:4, 2:4, 2:4] = True
    out = resample_labels(mask, (12, 3, 12))
    assert out.dtype == bool and out.any() and not out.all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(rng):
    x = smooth_field(rng, (1, 20, 33, 41))
    cpu = resample_data(x, (30, 25, 57))
    gpu = resample_data(x, (30, 25, 57), device="cuda")
    assert rel_err(gpu, cpu, x) < 1e-6
    seg = (smooth_field(rng, (20, 33, 41)) * 20).astype(np.int16).clip(0, 3)
    agree = resample_labels(seg, (30, 25, 57), device="cuda") == resample_labels(seg, (30, 25, 57))
    assert agree.mean() > 0.999


def test_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        resample_data(np.zeros((1, 2, 2, 2)), (3, 3, 3), order=2)
    with pytest.raises(ValueError, match="order_z"):
        resample_data(np.zeros((1, 2, 2, 2)), (3, 3, 3), separate_z_axis=0, order_z=3)
    with pytest.raises(ValueError, match="integer"):
        resample_labels(np.zeros((2, 2, 2)), (3, 3, 3))
