"""Bounding boxes, crop / uncrop, padding, and nnU-Net's crop to the nonzero region.

A bounding box is a list of half-open ``(start, stop)`` pairs, one per spatial axis, and
applies to the *last* axes of an array (a leading channel axis is left alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

BBox = list[tuple[int, int]]


def _slices(bbox: Sequence[tuple[int, int]]) -> tuple[slice, ...]:
    return (Ellipsis, *(slice(int(a), int(b)) for a, b in bbox))


def bbox_of_mask(mask: np.ndarray, margin_voxels: int | Sequence[int] = 0) -> BBox:
    """Smallest box holding every nonzero voxel of ``mask``, grown by a margin, clipped."""
    mask = np.asarray(mask)
    margins = np.broadcast_to(np.asarray(margin_voxels, dtype=int), (mask.ndim,))
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            raise ValueError("bbox_of_mask: the mask is empty, there is no box to take")
        lo = max(0, int(hit[0]) - int(margins[axis]))
        hi = min(mask.shape[axis], int(hit[-1]) + 1 + int(margins[axis]))
        box.append((lo, hi))
    return box


def _any_nonzero(data: np.ndarray) -> np.ndarray:
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"data must be [c, z, y, x] or [z, y, x]; got shape {data.shape}")
    mask = data[0] != 0
    for c in range(1, data.shape[0]):
        mask |= data[c] != 0
    return mask


def _fill_holes_in_box(mask: np.ndarray, bbox: BBox) -> np.ndarray:
    """``binary_fill_holes(mask)``, computed inside ``bbox`` only (in place).

    Outside the box everything is background, so a background voxel inside the box that
    reaches the box's faces reaches the outside (or the image border): filling inside the
    box alone gives the same result. A mask with no background in the box is already full.
    """
    from scipy.ndimage import binary_fill_holes  # import ~0.25 s, needed only here

    sl = _slices(bbox)
    inner = mask[sl]
    if not inner.all():
        mask[sl] = binary_fill_holes(inner)
    return mask


def nonzero_mask(data: np.ndarray) -> np.ndarray:
    """nnU-Net's ``create_nonzero_mask`` of ``[c, z, y, x]``: any channel != 0, holes filled."""
    mask = _any_nonzero(data)
    if not mask.any():
        return mask
    return _fill_holes_in_box(mask, bbox_of_mask(mask))


def nonzero_bbox(data: np.ndarray) -> BBox:
    """Box of :func:`nonzero_mask`; the full extent when everything is zero (as nnU-Net).
    Filling holes never grows the box, so it is skipped here."""
    mask = _any_nonzero(data)
    if not mask.any():
        return [(0, n) for n in mask.shape]
    return bbox_of_mask(mask)


def crop_to_nonzero(
    data: np.ndarray, seg: np.ndarray | None = None, nonzero_label: int | None = -1
) -> tuple[np.ndarray, np.ndarray | None, BBox]:
    """nnU-Net v2's ``crop_to_nonzero``: crop image and labels to the nonzero box.

    Returns ``(data, seg, bbox)``. Like nnU-Net, background (``0``) label voxels outside the
    nonzero mask become ``nonzero_label`` (-1) — used later to normalise only inside the
    mask — and when ``seg`` is None an int8 map of ``0`` inside / ``nonzero_label`` outside
    the mask is returned in its place. ``nonzero_label=None`` leaves ``seg`` untouched (and
    returns None for a missing one). ``seg`` is ``[z, y, x]`` or ``[1, z, y, x]``.
    """
    mask = _any_nonzero(data)
    bbox = [(0, n) for n in mask.shape] if not mask.any() else bbox_of_mask(mask)
    sl = _slices(bbox)
    data = data[sl]
    mask = _fill_holes_in_box(mask, bbox)[sl]
    if seg is not None:
        seg = seg[sl].copy()
        if nonzero_label is not None:
            seg[(seg == 0) & ~np.broadcast_to(mask, seg.shape)] = nonzero_label
    elif nonzero_label is not None:
        seg = np.where(mask, 0, nonzero_label).astype(np.int8)
    return data, seg, bbox


def crop(array: np.ndarray, bbox: Sequence[tuple[int, int]]) -> np.ndarray:
    """The part of ``array`` inside ``bbox`` (a view; boxes apply to the last axes)."""
    return array[_slices(bbox)]


def uncrop(
    array: np.ndarray,
    bbox: Sequence[tuple[int, int]],
    full_shape: Sequence[int],
    fill: float = 0,
) -> np.ndarray:
    """Put a cropped ``array`` back into an array of spatial shape ``full_shape``."""
    full_shape = tuple(int(s) for s in full_shape)
    expected = tuple(int(b) - int(a) for a, b in bbox)
    if tuple(array.shape[-len(bbox) :]) != expected:
        raise ValueError(f"array of shape {array.shape} does not fit the box {list(bbox)}")
    out = np.full((*array.shape[: -len(bbox)], *full_shape), fill, dtype=array.dtype)
    out[_slices(bbox)] = array
    return out


def pad_to_shape(
    array: np.ndarray, shape: Sequence[int], mode: str = "constant", value: float = 0
) -> tuple[np.ndarray, BBox]:
    """Pad the last ``len(shape)`` axes up to at least ``shape``, centred as nnU-Net does.

    Returns ``(padded, pad_widths)`` with ``(before, after)`` per padded axis; axes already
    large enough are left alone. Undo with ``crop(padded, [(b, b + n) ...])``.
    """
    lead = array.ndim - len(shape)
    if lead < 0:
        raise ValueError(f"cannot pad an array of shape {array.shape} to {tuple(shape)}")
    widths = []
    for n, target in zip(array.shape[lead:], shape, strict=True):
        diff = max(0, int(target) - int(n))
        widths.append((diff // 2, diff - diff // 2))
    if not any(a or b for a, b in widths):
        return array, widths
    kw = {"constant_values": value} if mode == "constant" else {}
    padded = np.pad(array, [(0, 0)] * lead + widths, mode=mode, **kw)
    return padded, widths
