"""Crop, uncrop, pad and nnU-Net's crop to nonzero, on arrays with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.spatial import (
    bbox_of_mask,
    crop,
    crop_to_nonzero,
    nonzero_bbox,
    nonzero_mask,
    pad_to_shape,
    uncrop,
)


def hollow_box(shape=(10, 12, 14)):
    """Two channels; the union is a hollow box (walls 1 voxel) at [2:8, 3:9, 4:12]."""
    data = np.zeros((2, *shape), dtype=np.float32)
    data[0, 2:8, 3:9, 4:12] = 1.0
    data[0, 3:7, 4:8, 5:11] = 0.0  # hollow inside
    data[1, 2:8, 3:9, 4:5] = -2.0  # overlaps a wall; negative values count as nonzero
    return data


def test_nonzero_mask_fills_holes():
    mask = nonzero_mask(hollow_box())
    expected = np.zeros((10, 12, 14), dtype=bool)
    expected[2:8, 3:9, 4:12] = True
    np.testing.assert_array_equal(mask, expected)
    assert nonzero_bbox(hollow_box()) == [(2, 8), (3, 9), (4, 12)]
    assert nonzero_bbox(hollow_box()[0]) == [(2, 8), (3, 9), (4, 12)]


def test_all_zero_gives_the_full_extent():
    assert nonzero_bbox(np.zeros((1, 3, 4, 5))) == [(0, 3), (0, 4), (0, 5)]
    data, seg, bbox = crop_to_nonzero(np.zeros((1, 3, 4, 5)))
    assert data.shape == (1, 3, 4, 5) and bbox == [(0, 3), (0, 4), (0, 5)]


def test_crop_to_nonzero_marks_background_outside_the_mask():
    data = np.zeros((1, 8, 8, 8), dtype=np.float32)
    data[0, 2:6, 2:6, 2:6] = 1.0
    data[0, 2, 2, 2] = 0.0  # a corner of the box outside the (filled) mask
    seg = np.zeros((8, 8, 8), dtype=np.int16)
    seg[3:5, 3:5, 3:5] = 1
    seg[2, 2, 3] = 2
    cropped, cseg, bbox = crop_to_nonzero(data, seg)
    assert bbox == [(2, 6), (2, 6), (2, 6)] and cropped.shape == (1, 4, 4, 4)
    assert cseg[0, 0, 0] == -1  # background outside the mask (nnU-Net's nonzero_label)
    assert cseg[0, 0, 1] == 2  # labels are never overwritten
    assert (cseg == -1).sum() == 1 and (cseg == 1).sum() == 8
    assert seg.min() == 0  # input not modified
    _, mask_map, _ = crop_to_nonzero(data)
    assert mask_map.dtype == np.int8 and mask_map[0, 0, 0] == -1 and (mask_map == -1).sum() == 1
    _, none, _ = crop_to_nonzero(data, nonzero_label=None)
    assert none is None
    _, same, _ = crop_to_nonzero(data, seg[None], nonzero_label=None)
    np.testing.assert_array_equal(same, seg[None, 2:6, 2:6, 2:6])


def test_crop_uncrop_identity(rng):
    full = rng.standard_normal((3, 9, 10, 11))
    bbox = [(1, 7), (0, 10), (4, 9)]
    part = crop(full, bbox)
    assert part.shape == (3, 6, 10, 5)
    back = uncrop(part, bbox, full.shape[1:], fill=np.nan)
    inside = np.zeros(full.shape[1:], dtype=bool)
    inside[1:7, :, 4:9] = True
    np.testing.assert_array_equal(back[:, inside], full[:, inside])
    assert np.isnan(back[:, ~inside]).all()
    with pytest.raises(ValueError, match="does not fit"):
        uncrop(part, [(0, 2), (0, 10), (4, 9)], full.shape[1:])


def test_pad_to_shape_and_back(rng):
    x = rng.standard_normal((2, 5, 8, 3))
    padded, widths = pad_to_shape(x, (8, 8, 6), value=-7)
    assert padded.shape == (2, 8, 8, 6) and widths == [(1, 2), (0, 0), (1, 2)]
    assert padded[0, 0, 0, 0] == -7
    np.testing.assert_array_equal(
        crop(padded, [(b, b + n) for (b, _), n in zip(widths, x.shape[1:], strict=True)]), x
    )
    same, widths = pad_to_shape(x, (4, 4, 3))
    assert same is x and widths == [(0, 0)] * 3
    edge, _ = pad_to_shape(x[0], (7, 8, 3), mode="edge")
    np.testing.assert_array_equal(edge[0], x[0, 0])


def test_bbox_of_mask():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[4, 5:7, 9] = True
    assert bbox_of_mask(mask) == [(4, 5), (5, 7), (9, 10)]
    assert bbox_of_mask(mask, 2) == [(2, 7), (3, 9), (7, 10)]
    assert bbox_of_mask(mask, (0, 1, 20)) == [(4, 5), (4, 8), (0, 10)]
    with pytest.raises(ValueError, match="empty"):
        bbox_of_mask(np.zeros((3, 3)))


@pytest.mark.parametrize("seed", range(6))
def test_nonzero_mask_and_crop_equal_whole_image_hole_filling(seed):
    """Holes are filled inside the box only; the answer equals scipy on the whole image,
    also when the nonzero region touches the image border."""
    from scipy.ndimage import binary_fill_holes

    rng = np.random.default_rng(seed)
    data = (rng.random((1, 12, 14, 16)) < 0.55).astype(np.float32)
    if seed % 2:
        data[..., :2, :, :] = 0  # a box that does not reach the first slices
    reference = binary_fill_holes(data[0] != 0)
    np.testing.assert_array_equal(nonzero_mask(data), reference)
    assert nonzero_bbox(data) == bbox_of_mask(reference)
    cropped, seg, bbox = crop_to_nonzero(data)
    inside = reference[tuple(slice(a, b) for a, b in bbox)]
    np.testing.assert_array_equal(seg.reshape(inside.shape) == 0, inside)
