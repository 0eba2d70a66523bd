"""Planar contours ↔ voxel masks on an image grid (the geometry of DICOM RTSTRUCT).

Convention, the same both ways: **a voxel is inside when its centre is inside the polygon**.
Contours of one slice combine by the even-odd rule (XOR), as planning systems draw holes
and islands: a contour inside another cuts a hole, a contour inside that hole is an island.
A centre exactly on a vertical edge counts as inside on the right edge and outside on the
left one (half-open, so two polygons sharing an edge never both claim a voxel).

:func:`mask_to_contours` traces the boundary between inside and outside voxel centres
(marching squares at level 0.5), so every inside centre lies half a voxel inside its contour
and :func:`contours_to_mask` returns the same mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from voxseg.io.image import Geometry

#: Largest distance (in slice spacings) a contour may lie off its slice's plane.
PLANE_TOLERANCE = 0.25


@dataclass
class RasterReport:
    """What :func:`contours_to_mask` could not place, one line per contour."""

    placed: int = 0
    problems: list[str] = field(default_factory=list)


def fill_polygons(polygons: Sequence[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Even-odd fill of polygons ``(N, 2)`` in ``(y, x)`` index coordinates on a ``shape``
    grid of voxel centres; a bool ``[y, x]`` array (points outside the grid are clipped)."""
    ny, nx = shape
    all_rows, all_cols = [], []
    for poly in polygons:
        poly = np.asarray(poly, dtype=float)
        if len(poly) < 3:
            continue
        y0, x0 = poly[:, 0], poly[:, 1]
        y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
        # Rows r crossed by an edge, half-open: min(y0, y1) <= r < max(y0, y1).
        lo = np.ceil(np.minimum(y0, y1))
        hi = np.ceil(np.maximum(y0, y1))
        lo, hi = np.clip(lo, 0, ny), np.clip(hi, 0, ny)
        counts = (hi - lo).astype(np.int64)
        keep = counts > 0
        if not keep.any():
            continue
        counts = counts[keep]
        edge = np.repeat(np.flatnonzero(keep), counts)
        starts = np.repeat(lo[keep], counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        rows = (starts + offsets).astype(np.int64)
        t = (rows - y0[edge]) / (y1[edge] - y0[edge])
        xc = x0[edge] + t * (x1[edge] - x0[edge])
        # A centre c is right of the crossing when c > xc: the toggle starts at floor(xc) + 1.
        all_rows.append(rows)
        all_cols.append(np.clip(np.floor(xc).astype(np.int64) + 1, 0, nx))
    out = np.zeros(shape, dtype=bool)
    if not all_rows:
        return out
    rows, cols = np.concatenate(all_rows), np.concatenate(all_cols)
    r0, r1 = int(rows.min()), int(rows.max()) + 1  # only the rows the polygons cross
    counts = np.bincount((rows - r0) * (nx + 1) + cols, minlength=(r1 - r0) * (nx + 1))
    toggles = counts.reshape(r1 - r0, nx + 1)
    out[r0:r1] = (np.cumsum(toggles, axis=1)[:, :nx] % 2).astype(bool)
    return out


def contours_to_mask(
    contours: Iterable[np.ndarray],
    geometry: Geometry,
    *,
    plane_tolerance: float = PLANE_TOLERANCE,
    name: str = "contour",
) -> tuple[np.ndarray, RasterReport]:
    """Rasterise closed planar contours (each ``(N, 3)`` LPS millimetres) onto ``geometry``.

    Each contour is placed on the slice nearest to its points (geometry only: no image
    references needed); a contour further than ``plane_tolerance`` slice spacings from
    every slice plane, outside the grid, or with fewer than 3 points is reported and left
    out. Returns a bool ``[z, y, x]`` mask and the report.
    """
    nz, ny, nx = geometry.shape
    per_slice: dict[int, list[np.ndarray]] = {}
    report = RasterReport()
    for i, points in enumerate(contours):
        points = np.asarray(points, dtype=float).reshape(-1, 3)
        if len(points) < 3:
            report.problems.append(f"{name} {i}: {len(points)} point(s), not an area (left out)")
            continue
        index = geometry.physical_to_index(points)
        z = index[:, 0]
        k = int(np.rint(z.mean()))
        off = float(np.abs(z - k).max())
        if k < 0 or k >= nz:
            report.problems.append(
                f"{name} {i}: lies outside the image (slice {z.mean():.2f} of 0..{nz - 1})"
            )
            continue
        if off > plane_tolerance:
            report.problems.append(
                f"{name} {i}: points lie up to {off:.2f} slice spacings off the plane of "
                f"slice {k} (is it drawn on this series?)"
            )
            continue
        yx = index[:, 1:]
        if (
            yx[:, 0].max() < -0.5
            or yx[:, 0].min() > ny - 0.5
            or yx[:, 1].max() < -0.5
            or yx[:, 1].min() > nx - 0.5
        ):
            report.problems.append(f"{name} {i}: lies outside the image in slice {k}")
            continue
        per_slice.setdefault(k, []).append(yx)
        report.placed += 1
    mask = np.zeros(geometry.shape, dtype=bool)
    for k, polys in per_slice.items():
        mask[k] = fill_polygons(polys, (ny, nx))
    return mask, report


def mask_to_contours(mask: np.ndarray, geometry: Geometry) -> list[tuple[int, np.ndarray]]:
    """Closed contours ``(slice index, (N, 3) LPS points)`` around the inside voxel centres
    of a ``[z, y, x]`` mask; holes are separate contours (read back with the even-odd rule).

    Each slice is traced on its foreground's bounding box (the same segments, in the same
    order, as on the whole slice), and the contours of a slice are thinned and placed
    together: per-contour NumPy calls cost more than tracing on noisy maps."""
    from skimage.measure import find_contours

    out: list[tuple[int, np.ndarray]] = []
    mask = np.asarray(mask, dtype=bool)
    for k in np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1)):
        rows = np.flatnonzero(mask[k].any(axis=1))
        cols = np.flatnonzero(mask[k].any(axis=0))
        box = mask[k, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        traced = find_contours(np.pad(box, 1).astype(np.float64), 0.5)
        # Index coordinates of the slice: the box's padding and offset undone (exact: the
        # traced points are multiples of 0.5).
        offset = np.array([rows[0] - 1.0, cols[0] - 1.0])
        yx, lengths = _drop_collinear([c[:-1] for c in traced if len(c) > 1])
        if not len(lengths):
            continue
        index = np.column_stack([np.full(len(yx), float(k)), yx + offset])
        points = geometry.index_to_physical(index)
        ends = np.cumsum(lengths).tolist()
        out.extend((int(k), points[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True))
    return out


def _drop_collinear(polygons: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of closed polygons without the ones on a straight line between neighbours,
    concatenated, and the vertex count of each polygon that keeps at least three (none
    given, none kept)."""
    if not polygons:
        return np.zeros((0, 2)), np.zeros(0, dtype=np.int64)
    lengths = np.array([len(p) for p in polygons])
    points = np.concatenate(polygons)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    # Cyclic neighbours within each polygon.
    prev = np.arange(-1, len(points) - 1)
    prev[starts] = ends - 1
    nxt = np.arange(1, len(points) + 1)
    nxt[ends - 1] = starts
    a, b = points - points[prev], points[nxt] - points
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    keep = np.abs(cross) > 1e-9
    kept = np.add.reduceat(keep.astype(np.int64), starts)
    enough = kept >= 3
    keep &= np.repeat(enough, lengths)
    return points[keep], kept[enough]
