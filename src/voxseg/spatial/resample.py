"""Resampling of images and label maps in torch: separable, chunked, nnU-Net compatible.

Coordinate convention (the one of nnU-Net's ``skimage.transform.resize(mode="edge",
anti_aliasing=False)`` and of ``scipy.ndimage.zoom(grid_mode=True, mode="nearest")``): the
grid's outer edges are kept, so output index ``o`` samples input coordinate
``(o + 0.5) * n_in / n_out - 0.5`` (``align_corners=False``), and values beyond the border
repeat the edge voxel.

Interpolation orders:

* ``0`` nearest (index ``floor(x + 0.5)``, as ``scipy.ndimage.map_coordinates(order=0)``);
* ``1`` linear;
* ``3`` cubic B-spline *interpolation* — exactly scipy's ``order=3`` (B-spline prefilter,
  pole ``sqrt(3) - 2``, here an FIR truncated at ``|k| <= 16``, i.e. at 1e-9 relative), not
  the Keys kernel of ``torch``'s ``bicubic``. Agreement with ``scipy.ndimage.zoom(order=3,
  mode="nearest", grid_mode=True)``: max abs error below 1e-5 of the data range.

Each axis is a banded linear operator (a small dense matrix per block of output rows), so a
3D resampling is three matrix products along the three axes — the tensor product that the 3D
B-spline is. The volume is streamed along ``z``: input rows are converted to float32 and
resampled in-plane a chunk at a time, kept only while an output ``z`` block needs them, and
each output block is written straight into the result. Peak memory is the input, the float32
output and one chunk; no float64 copy of the volume is ever made. Blocks are fixed by the
shapes alone, so the result does not depend on ``max_slab_voxels`` (bit-identical on CPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voxseg.io.image import Image

#: Pole of the cubic B-spline prefilter and the truncation of its impulse response.
_POLE = float(np.sqrt(3.0) - 2.0)
_PREFILTER_HALF_WIDTH = 16
#: Output rows per block of the in-plane operators.
_INPLANE_BLOCK = 64


def compute_new_shape(
    shape: Sequence[int], spacing: Sequence[float], new_spacing: Sequence[float]
) -> tuple[int, ...]:
    """Shape covering the same extent at ``new_spacing``: ``round(shape * spacing / new)``, >= 1."""
    if not len(shape) == len(spacing) == len(new_spacing):
        raise ValueError(f"shape {shape}, spacing {spacing}, new spacing {new_spacing} differ")
    return tuple(
        max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, new_spacing, strict=True)
    )


def get_separate_z_axis(
    spacing: Sequence[float], new_spacing: Sequence[float], threshold: float = 3.0
) -> int | None:
    """The axis to resample separately (nnU-Net's rule), or ``None``.

    If ``max(spacing) / min(spacing) > threshold`` the axis of the largest old spacing; else if
    the same holds for ``new_spacing``, its largest axis; in both cases only when that axis is
    unique (spacings like ``(0.24, 1.25, 1.25)`` get ``None``).
    """
    for sp in (spacing, new_spacing):
        sp = np.asarray(sp, dtype=float)
        if sp.max() / sp.min() > threshold:
            axes = np.flatnonzero(sp == sp.max())
            return int(axes[0]) if len(axes) == 1 else None
    return None


# --------------------------------------------------------------------------- 1D operators


def _source_coords(n_in: int, n_out: int) -> np.ndarray:
    return (np.arange(n_out, dtype=float) + 0.5) * (n_in / n_out) - 0.5


def _bspline3(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(
        t < 1, 2 / 3 - t**2 + t**3 / 2, np.where(t < 2, (2 - np.minimum(t, 2)) ** 3 / 6, 0.0)
    )


def interpolation_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    """Dense ``(n_out, n_in)`` float64 matrix of the 1D resampling operator of ``order``."""
    x = _source_coords(n_in, n_out)
    rows = np.arange(n_out)
    w = np.zeros((n_out, n_in))
    if order == 0:
        w[rows, np.clip(np.floor(x + 0.5).astype(int), 0, n_in - 1)] = 1.0
    elif order == 1:
        j = np.floor(x).astype(int)
        t = x - j
        np.add.at(w, (rows, np.clip(j, 0, n_in - 1)), 1 - t)
        np.add.at(w, (rows, np.clip(j + 1, 0, n_in - 1)), t)
    elif order == 3:
        k = np.arange(-_PREFILTER_HALF_WIDTH, _PREFILTER_HALF_WIDTH + 1)
        h = -6 * _POLE / (1 - _POLE**2) * _POLE ** np.abs(k)  # inverse of [1, 4, 1] / 6
        j0 = np.floor(x).astype(int)
        for tap in range(-1, 3):
            j = j0 + tap
            cols = np.clip(j[:, None] + k[None, :], 0, n_in - 1)
            np.add.at(w, (rows[:, None], cols), _bspline3(x - j)[:, None] * h[None, :])
    else:
        raise ValueError(f"interpolation order must be 0, 1 or 3; got {order}")
    return w


@dataclass(frozen=True)
class _Block:
    out: tuple[int, int]
    src: tuple[int, int]
    weights: torch.Tensor | None  # (out rows, src rows) float32; None for order 0
    index: torch.Tensor | None  # (out rows,) int64 into the src range, order 0 only


@dataclass(frozen=True)
class _AxisOp:
    """The 1D operator of one axis, cut into blocks of output rows with their source band."""

    n_in: int
    n_out: int
    order: int
    blocks: tuple[_Block, ...]

    @classmethod
    def build(cls, n_in: int, n_out: int, order: int, block: int, device: torch.device):
        w = interpolation_matrix(n_in, n_out, order)
        blocks = []
        for o0 in range(0, n_out, block):
            o1 = min(n_out, o0 + block)
            cols = np.flatnonzero(np.any(w[o0:o1] != 0, axis=0))
            i0, i1 = int(cols[0]), int(cols[-1]) + 1
            part = w[o0:o1, i0:i1]
            if order == 0:
                idx = torch.as_tensor(np.argmax(part, axis=1), dtype=torch.int64, device=device)
                blocks.append(_Block((o0, o1), (i0, i1), None, idx))
            else:
                wt = torch.as_tensor(part, dtype=torch.float32, device=device)
                blocks.append(_Block((o0, o1), (i0, i1), wt, None))
        return cls(n_in, n_out, order, tuple(blocks))

    def apply(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Resample ``x`` along ``dim`` (-1 or -2)."""
        shape = list(x.shape)
        shape[dim] = self.n_out
        out = x.new_empty(shape)
        for b in self.blocks:
            src = x.narrow(dim, b.src[0], b.src[1] - b.src[0])
            dst = out.narrow(dim, b.out[0], b.out[1] - b.out[0])
            if b.index is not None:
                dst.copy_(src.index_select(dim, b.index))
            elif dim == -1:
                torch.matmul(src, b.weights.T, out=dst)
            else:  # (out= is slow for batched products)
                dst.copy_(torch.matmul(b.weights, src))
        return out


# --------------------------------------------------------------------------- streaming engine


RowSource = Callable[[int, int], torch.Tensor]  # (r0, r1) -> float32 [r1 - r0, y, x]


@dataclass
class _Plan:
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    z: _AxisOp | None
    inplane: list[tuple[int, _AxisOp]]  # (dim, op), applied in this order
    chunk_rows: int

    @classmethod
    def build(
        cls,
        in_shape: Sequence[int],
        out_shape: Sequence[int],
        orders: Sequence[int],
        device: torch.device,
        max_slab_voxels: int,
    ) -> _Plan:
        in_shape = tuple(int(s) for s in in_shape)
        out_shape = tuple(int(s) for s in out_shape)
        ops: list[_AxisOp | None] = []
        plane_out = out_shape[1] * out_shape[2]
        for a in range(3):
            if in_shape[a] == out_shape[a]:
                ops.append(None)
                continue
            block = _INPLANE_BLOCK if a else max(1, min(64, 2**22 // plane_out))
            ops.append(_AxisOp.build(in_shape[a], out_shape[a], orders[a], block, device))
        # shrink first: the cheaper order, fixed by the shapes alone
        inplane = [(a - 3, ops[a]) for a in (1, 2) if ops[a] is not None]
        inplane.sort(key=lambda p: p[1].n_out / p[1].n_in)
        chunk = max(1, max_slab_voxels // max(1, in_shape[1] * in_shape[2]))
        return cls(in_shape, out_shape, ops[0], inplane, chunk)

    def _inplane(self, rows: torch.Tensor) -> torch.Tensor:
        for dim, op in self.inplane:
            rows = op.apply(rows, dim)
        return rows

    def _rows(self, source: RowSource, r0: int, r1: int) -> torch.Tensor:
        parts = [
            self._inplane(source(a, min(r1, a + self.chunk_rows)))
            for a in range(r0, r1, self.chunk_rows)
        ]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def run(self, source: RowSource, sink: Callable[[int, int, torch.Tensor], None]) -> None:
        """Stream the volume: ``sink(o0, o1, block)`` receives output rows ``[o0, o1)``."""
        if self.z is None:
            for r0 in range(0, self.in_shape[0], self.chunk_rows):
                r1 = min(self.in_shape[0], r0 + self.chunk_rows)
                sink(r0, r1, self._rows(source, r0, r1))
            return
        buf, b0, b1 = None, 0, 0
        for blk in self.z.blocks:
            i0, i1 = blk.src
            if buf is None or i0 >= b1:
                buf, b0, b1 = self._rows(source, i0, i1), i0, i1
            else:
                keep = buf[i0 - b0 :]
                if i1 > b1:
                    keep = torch.cat([keep, self._rows(source, b1, i1)])
                buf, b0, b1 = keep, i0, max(i1, b1)
            src = buf[: i1 - b0]
            if blk.index is not None:
                res = src.index_select(0, blk.index)
            else:
                res = (blk.weights @ src.reshape(i1 - i0, -1)).reshape(-1, *src.shape[1:])
            sink(*blk.out, res)


def _as_device(device: str | torch.device) -> torch.device:
    return torch.device(device)


def _float_rows(volume: np.ndarray, device: torch.device) -> RowSource:
    def rows(r0: int, r1: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(volume[r0:r1], dtype=np.float32)).to(device)

    return rows


def _check_shape(new_shape: Sequence[int]) -> tuple[int, int, int]:
    new_shape = tuple(int(s) for s in new_shape)
    if len(new_shape) != 3 or min(new_shape) < 1:
        raise ValueError(f"new_shape must be 3 positive sizes (z, y, x); got {new_shape}")
    return new_shape


def _orders(order: int, separate_z_axis: int | None, order_z: int) -> list[int]:
    if separate_z_axis is not None and separate_z_axis not in (0, 1, 2):
        raise ValueError(f"separate_z_axis must be 0, 1, 2 or None; got {separate_z_axis}")
    if separate_z_axis is not None and order_z not in (0, 1):
        raise ValueError(f"order_z must be 0 (nearest) or 1 (linear); got {order_z}")
    return [order_z if a == separate_z_axis else order for a in range(3)]


# --------------------------------------------------------------------------- public API


def resample_data(
    data: np.ndarray,
    new_shape: Sequence[int],
    *,
    order: int = 3,
    separate_z_axis: int | None = None,
    order_z: int = 0,
    clip: bool = True,
    device: str | torch.device = "cpu",
    max_slab_voxels: int = 2**25,
) -> np.ndarray:
    """Resample image data ``[c, z, y, x]`` (or ``[z, y, x]``) to float32 ``[c, *new_shape]``.

    ``order`` 0/1/3 as in scipy. With ``separate_z_axis`` that axis is interpolated with
    ``order_z`` (0 nearest, 1 linear) and the other two with ``order`` — nnU-Net's rule for
    anisotropic data. ``clip`` limits the result to each channel's input range, as nnU-Net's
    ``skimage`` resize does (``clip=True``); for separate-z nnU-Net clips per slice, voxseg per
    channel. Chunked along ``z``: ``max_slab_voxels`` bounds the input voxels converted and
    processed at once.
    """
    squeeze = data.ndim == 3
    if squeeze:
        data = data[None]
    if data.ndim != 4:
        raise ValueError(f"data must be [c, z, y, x] or [z, y, x]; got shape {data.shape}")
    new_shape = _check_shape(new_shape)
    orders = _orders(order, separate_z_axis, order_z)
    if order not in (0, 1, 3):
        raise ValueError(f"interpolation order must be 0, 1 or 3; got {order}")
    if tuple(data.shape[1:]) == new_shape:
        out = data.astype(np.float32, copy=True)
        return out[0] if squeeze else out
    dev = _as_device(device)
    plan = _Plan.build(data.shape[1:], new_shape, orders, dev, max_slab_voxels)
    out = np.empty((data.shape[0], *new_shape), dtype=np.float32)
    for c in range(data.shape[0]):
        lo, hi = (float(data[c].min()), float(data[c].max())) if clip else (None, None)

        def sink(o0: int, o1: int, block: torch.Tensor, c: int = c, lo=lo, hi=hi) -> None:
            if clip:
                block = block.clamp_(lo, hi)
            out[c, o0:o1] = block.cpu().numpy()

        plan.run(_float_rows(data[c], dev), sink)
    return out[0] if squeeze else out


def _as_unsigned(seg: np.ndarray) -> tuple[np.ndarray, int]:
    """``(labels - lo as an unsigned array, lo)`` without copying when already ≥ 0."""
    if seg.dtype == bool:
        return np.ascontiguousarray(seg).view(np.uint8), 0
    lo = min(0, int(seg.min()))
    if lo == 0 and seg.dtype.kind == "u":
        return np.ascontiguousarray(seg), 0
    if lo == 0:
        return np.ascontiguousarray(seg).view(seg.dtype.str.replace("i", "u")), 0
    shifted = seg.astype(np.int64) - lo
    return shifted.astype(np.min_scalar_type(int(shifted.max()))), lo


def _class_boxes(seg: np.ndarray) -> dict[int, list[tuple[int, int]]]:
    """Bounding box ``[(start, stop)] * 3`` of every label present, in one C pass
    (``cc3d.statistics``, which counts and boxes every value of a label image)."""
    import cc3d

    u, lo = _as_unsigned(seg)
    stats = cc3d.statistics(u)
    counts = stats["voxel_counts"]
    return {
        int(i) + lo: [(sl.start, sl.stop) for sl in stats["bounding_boxes"][i]]
        for i in np.flatnonzero(counts)
    }


def _box_size(box: list[tuple[int, int]]) -> int:
    return int(np.prod([b - a for a, b in box]))


def _box_scores(seg, value, box, mats, max_slab_voxels):
    """Yield ``(output region, linear score)`` of one class's indicator, computed from its
    bounding box only and in slabs along the first output axis."""
    out_ranges = []
    for (a, b), m in zip(box, mats, strict=True):
        rows = torch.nonzero((m[:, a:b] != 0).any(1)).flatten()
        if rows.numel() == 0:  # the class sits between the samples of a downsampling
            return
        out_ranges.append((int(rows[0]), int(rows[-1]) + 1))
    (oz0, oz1), (oy0, oy1), (ox0, ox1) = out_ranges
    (z0, z1), (y0, y1), (x0, x1) = box
    mz, my, mx = mats
    my_sub, mx_sub = my[oy0:oy1, y0:y1], mx[ox0:ox1, x0:x1]
    step = max(1, max_slab_voxels // max(1, (oy1 - oy0) * (ox1 - ox0)))
    dev = mz.device
    for c0 in range(oz0, oz1, step):
        c1 = min(c0 + step, oz1)
        cols = torch.nonzero((mz[c0:c1, z0:z1] != 0).any(0)).flatten()
        if cols.numel() == 0:
            continue
        a0, a1 = z0 + int(cols[0]), z0 + int(cols[-1]) + 1
        x = torch.from_numpy((seg[a0:a1, y0:y1, x0:x1] == value).astype(np.float32)).to(dev)
        t = x @ mx_sub.T
        t = torch.einsum("yk,zkx->zyx", my_sub, t)
        t = torch.einsum("zk,kyx->zyx", mz[c0:c1, a0:a1], t)
        yield (slice(c0, c1), slice(oy0, oy1), slice(ox0, ox1)), t.cpu().numpy()


def resample_labels(
    seg: np.ndarray,
    new_shape: Sequence[int],
    *,
    separate_z_axis: int | None = None,
    order_z: int = 0,
    device: str | torch.device = "cpu",
    max_slab_voxels: int = 2**25,
) -> np.ndarray:
    """Resample a label map ``[z, y, x]`` (integer) to ``new_shape``, keeping its dtype.

    Each class's indicator is interpolated linearly (``order_z`` along ``separate_z_axis``)
    and every voxel takes the class of highest score (ties: the lowest label), streaming over
    classes with a running maximum, so memory stays at about two output arrays. No class
    present in the input is lost: a class that no output voxel takes (a structure smaller
    than the new voxels) is put back at the voxel of its highest score — or, when it scored
    zero everywhere, at the output voxel containing its first input voxel.
    """
    if seg.ndim == 4 and seg.shape[0] == 1:
        return resample_labels(
            seg[0],
            new_shape,
            separate_z_axis=separate_z_axis,
            order_z=order_z,
            device=device,
            max_slab_voxels=max_slab_voxels,
        )[None]
    if seg.ndim != 3:
        raise ValueError(f"label map must be [z, y, x]; got shape {seg.shape}")
    if not np.issubdtype(seg.dtype, np.integer) and seg.dtype != bool:
        raise ValueError(f"label map must be an integer array; got {seg.dtype}")
    new_shape = _check_shape(new_shape)
    if tuple(seg.shape) == new_shape:
        return seg.copy()
    orders = _orders(1, separate_z_axis, order_z)
    dev = _as_device(device)
    mats = [
        torch.from_numpy(interpolation_matrix(n_in, n_out, o)).to(dev, torch.float32)
        for n_in, n_out, o in zip(seg.shape, new_shape, orders, strict=True)
    ]
    boxes = _class_boxes(seg)
    classes = np.array(sorted(boxes), dtype=seg.dtype)
    # The class with the largest box (usually background) gets no pass of its own: the class
    # indicators sum to 1 and every interpolation row sums to 1, so its score is 1 - the sum
    # of the others. Every other class is interpolated only inside its bounding box.
    rest = max(classes, key=lambda c: (_box_size(boxes[c.item()]), -c.item())).item()
    out = np.full(new_shape, rest, dtype=seg.dtype)
    best = np.zeros(new_shape, dtype=np.float32)
    total = np.zeros(new_shape, dtype=np.float32)
    peak: dict[int, tuple[float, int]] = {}
    for cls in classes:
        value = cls.item()
        if value == rest:
            continue
        for region, score in _box_scores(seg, value, boxes[value], mats, max_slab_voxels):
            wins = score > best[region]  # ascending classes: ties keep the lower label
            np.copyto(best[region], score, where=wins)
            np.copyto(out[region], value, where=wins)
            total[region] += score
            i = int(np.argmax(score))
            if score.flat[i] > peak.get(value, (-1.0, 0))[0]:
                index = np.unravel_index(i, score.shape)
                flat = np.ravel_multi_index(
                    tuple(r.start + k for r, k in zip(region, index, strict=True)), new_shape
                )
                peak[value] = (float(score.flat[i]), int(flat))
    rest_score = 1.0 - total
    total = None
    takes_rest = (rest_score > best) | ((rest_score == best) & (out > rest))
    np.copyto(out, rest, where=takes_rest)
    peak[rest] = (1.0, int(np.argmax(rest_score)))
    rest_score = takes_rest = None
    best = None  # free the running maximum before the checks below
    missing = np.setdiff1d(classes, np.unique(out))
    for cls in missing:
        value = cls.item()
        score, flat = peak.get(value, (0.0, 0))
        if score > 0:
            out.flat[flat] = value
        else:
            first = np.unravel_index(int(np.argmax(seg == value)), seg.shape)
            pos = tuple(
                min(n_out - 1, int((i + 0.5) * n_out / n_in))
                for i, n_in, n_out in zip(first, seg.shape, new_shape, strict=True)
            )
            out[pos] = value
    return out


def resample_image(
    image: Image, new_spacing: Sequence[float], *, is_label: bool = False, **kw: Any
) -> Image:
    """Resample an :class:`Image` to ``new_spacing`` (array axis order ``z, y, x``).

    The grid's outer edges stay where they were: the new spacing is ``extent / new_shape``
    (the requested spacing up to rounding of the shape) and the origin — the centre of voxel
    0 — moves by half the change of spacing. Direction is kept. ``separate_z_axis`` defaults
    to :func:`get_separate_z_axis`; other keywords go to :func:`resample_data` or
    :func:`resample_labels`.
    """
    old_spacing = np.asarray(image.spacing, dtype=float)
    new_shape = compute_new_shape(image.shape, old_spacing, new_spacing)
    kw.setdefault("separate_z_axis", get_separate_z_axis(old_spacing, new_spacing))
    if is_label:
        array = resample_labels(image.array, new_shape, **kw)
    else:
        array = resample_data(image.array, new_shape, **kw)
    spacing = old_spacing * np.asarray(image.shape) / np.asarray(new_shape)
    origin = np.asarray(image.origin) + image.direction @ ((spacing - old_spacing) / 2)
    return Image(array, tuple(spacing), tuple(origin), image.direction.copy())
