"""Export predictions in the original geometry without materialising full-resolution logits.

Resampling logits back to the original spacing is where nnU-Net's inference spends its RAM
(``[classes, z, y, x]`` float32 at full resolution). Here the output is built one slice
at a time along the slab axis (the separate-z axis when there is one, else the first):
each output slice needs at most two input slices, interpolated in-plane (bilinear) and
blended along the slab axis (linear, or nearest for separate-z), then argmaxed at once.
Peak memory is the low-resolution logits plus ``classes × one output slice``; the result
equals full-volume trilinear resampling followed by argmax (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from voxseg.io import Geometry, Image


def _source_index(
    n_in: int, n_out: int, nearest: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two source indices and the weight of the second
    (half-pixel convention, as ``F.interpolate(align_corners=False)``)."""
    j = np.arange(n_out, dtype=np.float64)
    u = (j + 0.5) * (n_in / n_out) - 0.5
    if nearest:
        i0 = np.clip(np.floor((j + 0.5) * (n_in / n_out)), 0, n_in - 1).astype(int)
        return i0, i0, np.zeros(n_out)
    u = np.clip(u, 0, None)
    i0 = np.minimum(np.floor(u).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, u - i0


def resample_slices(
    logits: torch.Tensor,
    new_shape: Sequence[int],
    *,
    axis: int = 0,
    nearest_along_axis: bool = False,
):
    """Yield ``(index, slice [C, *in-plane new shape])`` along ``axis`` of the resampled
    ``logits`` ``[C, z, y, x]`` — never the whole resampled volume."""
    c = logits.shape[0]
    spatial = list(logits.shape[1:])
    moved = torch.movedim(logits, axis + 1, 1)  # [C, A, p, q]
    plane_out = [s for i, s in enumerate(new_shape) if i != axis]
    plane_in = [s for i, s in enumerate(spatial) if i != axis]
    i0s, i1s, ws = _source_index(spatial[axis], int(new_shape[axis]), nearest_along_axis)
    cache: dict[int, torch.Tensor] = {}

    def plane(i: int) -> torch.Tensor:
        if i not in cache:
            if len(cache) > 2:
                cache.pop(min(cache))
            src = moved[:, i].float()
            if list(plane_in) != list(plane_out):
                src = F.interpolate(
                    src[None], size=plane_out, mode="bilinear", align_corners=False
                )[0]
            cache[i] = src
        return cache[i]

    for j, (i0, i1, w) in enumerate(zip(i0s, i1s, ws, strict=True)):
        a = plane(int(i0))
        out = a if w == 0 or i0 == i1 else torch.lerp(a, plane(int(i1)), float(w))
        assert out.shape[0] == c
        yield j, out


def argmax_channels(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(0)`` for ``[C, ...]`` as uint8/int16, ties to the lowest channel.

    A running maximum over channels: elementwise, contiguous work, ~9× faster on a CPU than
    ``argmax`` over the outer dimension (a strided reduction: 30 ms vs 3 ms per
    4×512×512 slice on 2 cores).
    """
    dtype = torch.uint8 if x.shape[0] <= 256 else torch.int16
    best = x[0].clone()
    index = torch.zeros(x.shape[1:], dtype=dtype, device=x.device)
    for c in range(1, x.shape[0]):
        wins = x[c] > best
        index.masked_fill_(wins, c)
        torch.maximum(best, x[c], out=best)
    return index


def labels_from_logits(
    logits: torch.Tensor,
    new_shape: Sequence[int],
    *,
    axis: int = 0,
    nearest_along_axis: bool = False,
    region_values: Sequence[int] | None = None,
    dtype: np.dtype = np.uint8,
) -> np.ndarray:
    """Label map ``new_shape`` from low-resolution ``logits``, slice by slice: argmax
    (softmax classes), or for region-based models each region's sigmoid > 0.5 painted with
    ``region_values[i]`` in region order (nnU-Net's ``regions_class_order``)."""
    out = np.zeros(tuple(int(s) for s in new_shape), dtype=dtype)
    view = np.moveaxis(out, axis, 0)
    for j, sl in resample_slices(
        logits, new_shape, axis=axis, nearest_along_axis=nearest_along_axis
    ):
        if region_values is None:
            view[j] = argmax_channels(sl).cpu().numpy().astype(dtype, copy=False)
        else:
            masks = (sl > 0).cpu().numpy()  # sigmoid(x) > 0.5  <=>  x > 0
            plane = np.zeros(masks.shape[1:], dtype=dtype)
            for i, value in enumerate(region_values):
                plane[masks[i]] = value
            view[j] = plane
    return out


def probabilities_from_logits(
    logits: torch.Tensor,
    new_shape: Sequence[int],
    *,
    axis: int = 0,
    nearest_along_axis: bool = False,
    regions: bool = False,
) -> np.ndarray:
    """Full probabilities ``[C, *new_shape]`` float16 (only when the user asks for them)."""
    out = np.zeros((logits.shape[0], *new_shape), dtype=np.float16)
    view = np.moveaxis(out, axis + 1, 1)
    for j, sl in resample_slices(
        logits, new_shape, axis=axis, nearest_along_axis=nearest_along_axis
    ):
        p = torch.sigmoid(sl) if regions else torch.softmax(sl, 0)
        view[:, j] = p.cpu().numpy().astype(np.float16)
    return out


def place_in_original(array: np.ndarray, meta: Any, *, fill_background: bool = False) -> Image:
    """Put an array of the cropped (reoriented) grid back into the original image:
    uncrop (outside = background), undo the reorientation, attach the original geometry.

    ``array`` is ``[*shape_after_crop]`` or ``[C, *shape_after_crop]``; with
    ``fill_background`` channel 0 is set to 1 outside the crop (softmax probabilities).
    """
    from voxseg.spatial.crop import uncrop
    from voxseg.spatial.orientation import Reorientation

    full_shape = tuple(meta.shape_before_crop)
    bbox = [tuple(b) for b in meta.bbox]
    if array.ndim == 4:
        out = np.stack([uncrop(a, bbox, full_shape, fill=0) for a in array])
        if fill_background:
            inside = np.zeros(full_shape, dtype=bool)
            inside[tuple(slice(a, b) for a, b in bbox)] = True
            out[0][~inside] = 1
    else:
        out = uncrop(array, bbox, full_shape, fill=0)
    if meta.reorientation is not None:
        out = Reorientation.from_dict(meta.reorientation).invert(out)
    return Image.from_geometry(np.ascontiguousarray(out), Geometry.from_dict(meta.geometry))
