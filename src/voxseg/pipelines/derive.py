"""A stage's input, derived from the image and earlier stages' outputs — and the way back.

Every derivation returns a :class:`Derived`: the stage's input image (with a correct
geometry, so the stage's own plan can resample it), its label map when training, and
``restore``, which pastes a label map predicted on the derived grid back into the original
image's grid (same shape; the original geometry applies unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxseg.errors import VoxsegError
from voxseg.io.image import Image
from voxseg.pipelines.spec import (
    BBoxCropInput,
    CenterlineCropInput,
    CenterlinePatchesInput,
    FullInput,
    PreviousPredictionInput,
    StageSpec,
)
from voxseg.spatial import (
    bbox_of_mask,
    compute_new_shape,
    get_separate_z_axis,
    reorient,
    resample_data,
    resample_labels,
    uncrop,
)

Restore = Callable[[np.ndarray], np.ndarray]


@dataclass
class Derived:
    """A stage's input image, its label map (training only) and the way back."""

    image: Image
    restore: Restore
    label: np.ndarray | None = None


def stage_label_map(label: np.ndarray, labels: dict[str, list[int]]) -> np.ndarray:
    """Remap a source label map to a stage's labels (values 1, 2, … in ``labels`` order)."""
    out = np.zeros(label.shape, dtype=np.uint8)
    for i, values in enumerate(labels.values()):
        out[np.isin(label, values)] = i + 1
    return out


def one_hot(label: np.ndarray, n: int) -> np.ndarray:
    """``[n, z, y, x]`` float32 masks of the values 1..n."""
    return np.stack([label == v for v in range(1, n + 1)]).astype(np.float32)


def fill_labels(label: np.ndarray, values: list[int], spacing) -> np.ndarray:
    """``label`` with every voxel of ``values`` set to the nearest other value (distance in
    mm): a lesion inside an organ becomes organ, as a grid too coarse to see it predicts."""
    from scipy import ndimage

    mask = np.isin(label, values)
    if not mask.any():
        return label
    if mask.all():
        return np.zeros_like(label)
    nearest = ndimage.distance_transform_edt(
        mask, sampling=spacing, return_distances=False, return_indices=True
    )
    return label[tuple(nearest)]


def previous_channels(source: np.ndarray, n: int, fill: list[int], spacing) -> np.ndarray:
    """One-hot channels of an earlier stage's labels 1..n, without the ``fill`` values
    (:class:`PreviousPredictionInput`)."""
    if not fill:
        return one_hot(source, n)
    filled = fill_labels(source, fill, spacing)
    return np.stack([filled == v for v in range(1, n + 1) if v not in fill]).astype(np.float32)


def _channels(image: Image) -> Image:
    return image if image.array.ndim == 4 else image.with_array(image.array[None])


def derive(
    stage: StageSpec,
    image: Image,
    sources: dict[str, np.ndarray],
    label: np.ndarray | None = None,
    source_counts: dict[str, int] | None = None,
) -> Derived | None:
    """The input of ``stage``; None when the stage needs an earlier mask that is empty.

    ``sources`` maps earlier stage names to their label maps on the image's grid;
    ``source_counts`` is the number of foreground labels of each (for one-hot channels);
    ``label`` is the already remapped stage label map on the image's grid (training).
    """
    image = _channels(image)
    spec = stage.input
    if isinstance(spec, CenterlinePatchesInput):
        raise VoxsegError(
            f"stage {stage.name!r} traces vessels from seeds: its input is not derived from "
            "the image alone; use 'voxseg pipeline predict PIPELINE IMAGES OUT --seeds SEEDS' "
            "or 'voxseg trace'"
        )
    if isinstance(spec, FullInput):
        return Derived(image, lambda seg: np.asarray(seg), label)
    source = sources[spec.source]
    if isinstance(spec, PreviousPredictionInput):
        n = (source_counts or {}).get(spec.source, max(1, int(source.max(initial=0))))
        extra = previous_channels(source, n, spec.fill, image.spacing)
        data = np.concatenate([image.array.astype(np.float32), extra])
        return Derived(image.with_array(data), lambda seg: np.asarray(seg), label)
    if not source.any():
        return None
    if isinstance(spec, BBoxCropInput):
        return crop_bbox(image, source > 0, spec.margin_mm, label)
    if isinstance(spec, CenterlineCropInput):
        return crop_centerline(image, source > 0, spec, label)
    raise TypeError(f"unknown input {spec!r}")


def crop_bbox(
    image: Image, mask: np.ndarray, margin_mm: list[float], label: np.ndarray | None = None
) -> Derived:
    """Crop to the box of ``mask`` grown by ``margin_mm`` (z, y, x); exact, no resampling."""
    image = _channels(image)
    margins = [math.ceil(m / s) for m, s in zip(margin_mm, image.spacing, strict=True)]
    box = bbox_of_mask(mask, margins)
    sl = tuple(slice(a, b) for a, b in box)
    origin = image.geometry.index_to_physical(np.array([a for a, _ in box], float))
    cropped = Image(
        np.ascontiguousarray(image.array[(slice(None), *sl)]),
        image.spacing,
        tuple(origin),
        image.direction.copy(),
    )
    full_shape = image.shape

    def restore(seg: np.ndarray) -> np.ndarray:
        return uncrop(np.asarray(seg), box, full_shape, fill=0)

    return Derived(cropped, restore, None if label is None else label[sl].copy())


def slice_centers(mask: np.ndarray, z_range: tuple[int, int]) -> np.ndarray:
    """Per-slice centre of mass ``(y, x)`` of ``mask`` along axis 0 for ``z`` in ``z_range``;
    slices without mask interpolate linearly between their neighbours (ends are held)."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    yy, xx = np.indices(mask.shape[1:], dtype=np.float64)
    centers = []
    for z in zs:
        m = mask[z]
        n = float(m.sum())
        centers.append(((yy * m).sum() / n, (xx * m).sum() / n))
    centers = np.asarray(centers)
    wanted = np.arange(*z_range)
    return np.stack([np.interp(wanted, zs, centers[:, i]) for i in range(2)], axis=1)


def centerline_box(
    mask: np.ndarray, spacing: np.ndarray, spec: CenterlineCropInput
) -> list[tuple[int, int]]:
    """The part of the (reoriented) grid that :func:`crop_centerline`'s windows can reach:
    the mask's box grown by half a window in-plane and ``margin_slices`` along z (in
    ``spec.spacing`` units, converted to this grid), plus two voxels of interpolation
    support, clipped to the image."""
    target = np.asarray(spec.spacing, float)
    reach = np.array(
        [
            spec.margin_slices * target[0],
            (spec.window[0] / 2 + 1) * target[1],
            (spec.window[1] / 2 + 1) * target[2],
        ]
    )
    margins = [int(math.ceil(m / s)) + 2 for m, s in zip(reach, spacing, strict=True)]
    return bbox_of_mask(mask, margins)


def crop_centerline(
    image: Image, mask: np.ndarray, spec: CenterlineCropInput, label: np.ndarray | None = None
) -> Derived:
    """SCT's crop around the cord centerline (see :class:`CenterlineCropInput`).

    Only the region the windows can reach (:func:`centerline_box`) is resampled to
    ``spec.spacing`` and back, not the whole field of view: on a 160×160 slice at 0.7 mm
    with 48×48 windows at 0.5 mm, about a tenth of the slice.
    """
    image = _channels(image)
    oriented, r = reorient(image, spec.orientation)
    old_spacing = np.asarray(oriented.spacing)
    oriented_mask = r.apply(mask.astype(np.uint8))
    box = centerline_box(oriented_mask > 0, old_spacing, spec)
    sub = tuple(slice(a, b) for a, b in box)
    sub_shape = tuple(b - a for a, b in box)
    new_shape = compute_new_shape(sub_shape, old_spacing, spec.spacing)
    sep = get_separate_z_axis(old_spacing, spec.spacing)
    data = resample_data(
        oriented.array[(slice(None), *sub)], new_shape, order=3, separate_z_axis=sep
    )
    m = resample_labels(oriented_mask[sub], new_shape, separate_z_axis=sep) > 0
    seg = None
    if label is not None:
        seg = resample_labels(r.apply(label)[sub], new_shape, separate_z_axis=sep)
    spacing = old_spacing * np.asarray(sub_shape) / np.asarray(new_shape)
    sub_origin = np.asarray(oriented.origin) + oriented.direction @ (
        old_spacing * np.array([a for a, _ in box], float)
    )
    origin = sub_origin + oriented.direction @ ((spacing - old_spacing) / 2)
    zs = np.flatnonzero(m.any(axis=(1, 2)))
    z0 = max(0, int(zs[0]) - spec.margin_slices)
    z1 = min(new_shape[0], int(zs[-1]) + 1 + spec.margin_slices)
    centers = slice_centers(m, (z0, z1))
    wy, wx = spec.window
    starts = np.rint(centers - np.array([wy, wx]) / 2.0).astype(int)

    def pairs():
        """Per slice with overlap: (index in the window stack, index in the resampled volume)."""
        for k, (y0, x0) in enumerate(starts):
            ys, xs = max(0, y0), max(0, x0)
            ye, xe = min(new_shape[1], y0 + wy), min(new_shape[2], x0 + wx)
            if ye > ys and xe > xs:
                inner = (k, slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))
                yield inner, (z0 + k, slice(ys, ye), slice(xs, xe))

    def windows(volume: np.ndarray, fill: float) -> np.ndarray:
        lead = volume.shape[:-3]
        out = np.full((*lead, z1 - z0, wy, wx), fill, dtype=volume.dtype)
        for inner, outer in pairs():
            out[(Ellipsis, *inner)] = volume[(Ellipsis, *outer)]
        return out

    first = np.array([z0, starts[0][0], starts[0][1]], float)
    crop_origin = origin + oriented.direction @ (spacing * first)
    derived = Image(windows(data, 0.0), tuple(spacing), tuple(crop_origin), oriented.direction)
    oriented_shape = oriented.shape

    def restore(pred: np.ndarray) -> np.ndarray:
        pred = np.asarray(pred)
        full = np.zeros(new_shape, dtype=pred.dtype)
        for inner, outer in pairs():
            full[outer] = pred[inner]
        back_sep = get_separate_z_axis(spacing, old_spacing)
        back = resample_labels(full, sub_shape, separate_z_axis=back_sep)
        return r.invert(uncrop(back, box, oriented_shape, fill=0))

    return Derived(derived, restore, None if seg is None else windows(seg, 0))
