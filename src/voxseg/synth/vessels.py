"""``vessels``: a branching tree of tubes with its analytic centerline (MR-angiography-like).

The tree is a trunk entering through the first slice and 2–3 levels of bifurcation; each
branch follows a smooth random curve, its radius tapers along it and shrinks at each
bifurcation. The lumen is the union of capsules (segments with linearly varying radius)
around the centerline, so the mask, the partial-volume fraction and the centerline radii
all come from one signed distance. Unlabelled bright blobs, a smooth bias field and
Rician noise keep thresholding imperfect.

A CTA-like field of view (``other_trees``, ``bright_structures``) adds what a tracer must
ignore and a whole-image model sees: unlabelled vessel trees that never touch the labelled
one, bone-like bright plates and contrast-filled chambers away from it; their map is
written as ``distractors/{case}`` (1 other vessels, 2 bright structures, 3 blobs).

Per case, besides image and label: ``centerlines/{case}.vtp`` (VMTK/SeqSeg convention,
physical LPS mm, one polyline per path from the inlet to each outlet, point arrays
``MaximumInscribedSphereRadius``, ``CenterlineId``, ``BifurcationIdTmp``,
``BranchIdTmp``), ``centerlines/{case}.json`` (the branches themselves) and
``seeds/{case}.json`` as voxseg's seed list ``[[[x, y, z], [dx, dy, dz], radius]]``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from voxseg.config import write_json
from voxseg.errors import VoxsegError
from voxseg.io import Geometry, Image, write_image
from voxseg.io.vtp import PolyData, tree_polydata, write_vtp
from voxseg.synth._common import (
    SYNTH,
    Blob,
    Phantom,
    SynthCase,
    centred_geometry,
    partial_volume,
    random_rotation,
    rician,
    smooth_field,
    uniform,
    wobble,
)


@dataclass
class Branch:
    """One branch: points in the grid's millimetre frame (``spacing * index``) and radii."""

    id: int
    parent: int
    level: int
    points: np.ndarray
    radii: np.ndarray
    children: list[int] = field(default_factory=list)


@SYNTH.register("vessels")
@dataclass(frozen=True)
class Vessels(Phantom):
    """Vessel-tree phantom: label vessel 1 (channel ``MR``), centerlines and seeds."""

    num_train: int = 16
    num_test: int = 4
    spacing: tuple[float, float] = (0.5, 0.8)
    levels: tuple[int, int] = (2, 3)
    other_trees: int = 0
    bright_structures: int = 0

    kind: ClassVar[str] = "vessels"
    default_shape: ClassVar[tuple[int, int, int]] = (64, 64, 64)
    min_shape: ClassVar[tuple[int, int, int]] = (24, 24, 24)
    channel_names: ClassVar[dict[str, str]] = {"0": "MR"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.other_trees < 0 or self.bright_structures < 0:
            raise VoxsegError(
                "synth vessels: other_trees and bright_structures must be >= 0, got "
                f"{self.other_trees} and {self.bright_structures}"
            )

    def labels(self) -> dict[str, int]:
        return {"background": 0, "vessel": 1}

    def make_case(self, rng: np.random.Generator, index: int) -> SynthCase:
        shape = self.grid_shape()
        spacing = tuple(uniform(rng, self.spacing) for _ in range(3))
        centre = rng.uniform(-50, 50, 3)
        geometry = centred_geometry(shape, spacing, centre)
        branches = grow_tree(
            rng, shape, spacing, int(rng.integers(self.levels[0], self.levels[1] + 1))
        )
        phi = tube_distance(branches, shape, spacing)
        label = (phi > 0).astype(np.uint8)
        cta = self.other_trees > 0 or self.bright_structures > 0
        # a separate stream: without these options the arrays stay those of earlier versions
        extra = np.random.default_rng(rng.integers(2**63)) if cta else None
        distractors = np.zeros(shape, np.uint8) if cta else None
        phi_all = phi
        if extra is not None and self.other_trees:
            others = grow_other_trees(
                extra, shape, spacing, self.levels, branches, self.other_trees
            )
            phi_other = tube_distance(others, shape, spacing)
            distractors[phi_other > 0] = 1
            phi_all = np.maximum(phi, phi_other)
            del phi_other

        vox = float(np.mean(spacing))
        lumen = np.clip(0.5 + phi_all / vox, 0.0, 1.0)
        background = 0.28 + 0.06 * smooth_field(rng, shape, cell=6.0)
        vessel_value = uniform(rng, (0.85, 1.0))
        bright = vessel_value * (1.0 + 0.06 * smooth_field(rng, shape, cell=10.0))
        clean = background * (1 - lumen) + bright * lumen
        del lumen, background, bright
        _distractors(rng, clean, phi_all, spacing, distractors)
        if extra is not None and self.bright_structures:
            paint_bright_structures(
                extra, clean, phi, phi_all, spacing, vessel_value, self.bright_structures,
                distractors,
            )  # fmt: skip
        del phi_all
        signal = partial_volume(clean.astype(np.float32), 0.5)
        signal *= (1.0 + 0.15 * smooth_field(rng, shape, cell=24.0)).astype(np.float32)
        image = rician(rng, signal, uniform(rng, (0.04, 0.07))).astype(np.float32)

        img = Image(image, geometry.spacing, geometry.origin, geometry.direction_matrix)
        extras: dict[str, Any] = {"branches": branches}
        if distractors is not None:
            extras["distractors"] = img.with_array(distractors)
        return SynthCase(img, img.with_array(label), extras)

    def write_extras(self, root: Path, split: str, case_id: str, case: SynthCase) -> None:
        geometry = case.image.geometry
        branches: list[Branch] = case.extras["branches"]
        write_vtp(centerline_polydata(branches, geometry), root / "centerlines" / f"{case_id}.vtp")
        write_json(root / "centerlines" / f"{case_id}.json", tree_json(branches, geometry))
        write_json(root / "seeds" / f"{case_id}.json", [seed_point(branches, geometry)])
        if "distractors" in case.extras:
            write_image(
                case.extras["distractors"], root / "distractors" / f"{case_id}{self.file_ending}"
            )


# --------------------------------------------------------------------------- the tree


def grow_tree(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    levels: int,
    *,
    start_yx: tuple[float, float] | None = None,
    radius_scale: float = 1.0,
    avoid: list[Branch] | None = None,
    avoid_gap: float = 0.0,
) -> list[Branch]:
    """Trunk from the first slice plus ``levels`` levels of bifurcation, non-touching.

    ``start_yx`` (fractions of the field) places the trunk's entry, ``radius_scale``
    scales its radius; branches stay ``avoid_gap`` mm clear of the tubes in ``avoid``.
    """
    spacing_arr = np.asarray(spacing)
    hi = (np.asarray(shape) - 1) * spacing_arr
    vox = float(spacing_arr.min())
    step = 0.5 * vox
    r0 = uniform(rng, (0.05, 0.065)) * float(hi.min()) * radius_scale
    yx = rng.uniform(0.35, 0.65, 2) if start_yx is None else np.asarray(start_yx)
    start = np.array([0.0, *(hi[1:] * yx)])
    heading = np.array([1.0, *rng.normal(0, 0.2, 2)])
    trunk_len = uniform(rng, (0.4, 0.5)) * hi[0]
    blocked = _other_points(avoid or [], None)
    blocked = (blocked[0], blocked[1] + avoid_gap)
    branches: list[Branch] = []
    queue = [(-1, 0, start, heading / np.linalg.norm(heading), r0, trunk_len)]
    while queue:
        parent, level, p0, d0, r_start, length = queue.pop(0)
        exclude = (p0, 3.0 * r_start) if parent >= 0 else None
        pts, radii = _grow_branch(
            rng, p0, d0, r_start, length, step, hi, vox, branches, exclude, blocked
        )
        if len(pts) < 2 or (parent >= 0 and _arc_length(pts) < 3.0 * r_start):
            continue
        branch = Branch(len(branches), parent, level, pts, radii)
        branches.append(branch)
        if parent >= 0:
            branches[parent].children.append(branch.id)
        r_child = radii[-1] * rng.uniform(0.72, 0.85)
        if level >= levels or r_child < 1.3 * vox:
            continue
        d = _tangent(pts)
        normal = np.cross(d, rng.normal(size=3))
        normal /= np.linalg.norm(normal)
        for sign in (1.0, -1.0):
            angle = np.deg2rad(rng.uniform(30, 50))
            child_dir = np.cos(angle) * d + sign * np.sin(angle) * normal
            child_len = _arc_length(pts) * rng.uniform(0.75, 1.0)
            queue.append((branch.id, level + 1, pts[-1], child_dir, r_child, child_len))
    return branches


def _grow_branch(
    rng: np.random.Generator,
    p0: np.ndarray,
    d0: np.ndarray,
    r_start: float,
    length: float,
    step: float,
    hi: np.ndarray,
    vox: float,
    others: list[Branch],
    exclude: tuple[np.ndarray, float] | None,
    blocked: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Integrate a smooth random curve; stop at the border or near another branch (or a
    ``blocked`` tube: points and radii)."""
    n = max(2, int(length / step))
    radii = np.linspace(r_start, r_start * rng.uniform(0.8, 0.9), n)
    other_pts, other_r = _other_points(others, exclude)
    other_pts = np.concatenate([other_pts, blocked[0]])
    other_r = np.concatenate([other_r, blocked[1]])
    pts = [np.asarray(p0, dtype=float)]
    d = np.asarray(d0, dtype=float)
    turn = np.zeros(3)
    curl = 0.6 / max(length, 1e-6)
    for k in range(1, n):
        r = radii[k]
        p = pts[-1]
        turn = 0.9 * turn + rng.normal(0, curl, 3)
        turn -= turn.dot(d) * d
        margin = r + 3 * vox
        push = np.clip((margin - p) / margin, 0, None) - np.clip(
            (margin - (hi - p)) / margin, 0, None
        )
        if exclude is None and k * step < margin:
            push[0] = 0.0  # the trunk enters through the first slice
        d = d + step * turn + 0.3 * push
        d /= np.linalg.norm(d)
        q = p + step * d
        entering = exclude is None and k * step < margin
        inside = np.all(q >= r + vox) and np.all(q <= hi - r - vox)
        if not (
            inside or (entering and np.all(q[1:] >= r + vox) and np.all(q[1:] <= hi[1:] - r - vox))
        ):
            break
        if len(other_pts):
            gap = np.linalg.norm(other_pts - q, axis=1) - other_r - r
            if gap.min() < 1.5 * vox:
                break
        pts.append(q)
    return np.array(pts), radii[: len(pts)]


def grow_other_trees(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    levels: tuple[int, int],
    target: list[Branch],
    count: int,
    tries: int = 12,
) -> list[Branch]:
    """Up to ``count`` unlabelled trees (0.5–0.9 of the labelled trunk's radius) entering
    through the first slice, never closer than 4 voxels to each other or to ``target``."""
    gap = 4.0 * float(np.max(spacing))
    others: list[Branch] = []
    for _ in range(count):
        for _ in range(tries):
            tree = grow_tree(
                rng, shape, spacing, int(rng.integers(levels[0], levels[1] + 1)),
                start_yx=tuple(rng.uniform(0.1, 0.9, 2)), radius_scale=uniform(rng, (0.5, 0.9)),
                avoid=[*target, *others], avoid_gap=gap,
            )  # fmt: skip
            if tree and _arc_length(tree[0].points) > 10.0 * tree[0].radii[0]:
                offset = len(others)
                for b in tree:
                    b.id += offset
                    b.parent = b.parent + offset if b.parent >= 0 else -1
                    b.children = [c + offset for c in b.children]
                others.extend(tree)
                break
    return others


def paint_bright_structures(
    rng: np.random.Generator,
    clean: np.ndarray,
    phi_target: np.ndarray,
    phi_all: np.ndarray,
    spacing: tuple[float, float, float],
    vessel_value: float,
    count: int,
    record: np.ndarray,
    tries: int = 30,
) -> None:
    """Paint ``count`` bright structures that are not the labelled tree: bone-like plates
    (thin, brighter than the vessels) and contrast-filled chambers (round, as bright as the
    vessels), each at least 3 mm from the labelled tree and never over another vessel;
    ``record`` gets 2 where they are."""
    spacing_arr = np.asarray(spacing)
    extent = (np.asarray(clean.shape) - 1) * spacing_arr
    size = float(extent.min())
    clear = 3.0 + 2.0 * float(spacing_arr.max())
    for k in range(count):
        if k % 2 == 0:  # plate: half-thickness 1-2 % of the field, span 6-18 %
            radii = np.array([uniform(rng, (0.01, 0.02)), *rng.uniform(0.06, 0.18, 2)]) * size
            radii[0] = max(radii[0], 1.5 * float(spacing_arr.max()))
            value = uniform(rng, (1.1, 1.4))
        else:  # chamber: 5-12 % of the field
            radii = rng.uniform(0.05, 0.12, 3) * size
            value = vessel_value
        blob = Blob(np.zeros(3), radii, random_rotation(rng, np.pi), wobble(rng, 3, 0.1))
        for _ in range(tries):
            centre = extent * rng.uniform(0.1, 0.9, 3)
            lo = np.maximum(np.floor((centre - blob.extent) / spacing_arr), 0).astype(int)
            hi = np.minimum(np.ceil((centre + blob.extent) / spacing_arr) + 1, clean.shape)
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi.astype(int), strict=True))
            if phi_target[box].max() > -clear:
                continue
            axes = [
                np.arange(b.start, b.stop) * s - c
                for b, s, c in zip(box, spacing_arr, centre, strict=True)
            ]
            points = np.stack(np.broadcast_arrays(*np.ix_(*axes)), axis=-1).astype(np.float32)
            inside = blob.inside(points) & (phi_all[box] < -2.0 * float(spacing_arr.max()))
            clean[box][inside] = value
            record[box][inside] = 2
            break


def _other_points(
    branches: list[Branch], exclude: tuple[np.ndarray, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    if not branches:
        return np.zeros((0, 3)), np.zeros(0)
    pts = np.concatenate([b.points for b in branches])
    radii = np.concatenate([b.radii for b in branches])
    if exclude is not None:
        keep = np.linalg.norm(pts - exclude[0], axis=1) > exclude[1]
        pts, radii = pts[keep], radii[keep]
    return pts, radii


def _arc_length(pts: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(pts, axis=0), axis=1).sum())


def _tangent(pts: np.ndarray, back: int = 4) -> np.ndarray:
    d = pts[-1] - pts[max(0, len(pts) - 1 - back)]
    return d / np.linalg.norm(d)


def tube_distance(
    branches: list[Branch], shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> np.ndarray:
    """Signed distance-like field ``max_segments (r(t) - |x - c(t)|)`` in mm (> 0 inside).

    Each centerline segment is a capsule whose radius varies linearly along it; only the
    box around each segment is evaluated.
    """
    spacing_arr = np.asarray(spacing)
    phi = np.full(shape, -1e3, dtype=np.float32)
    reach = 2.0 * float(spacing_arr.max())
    for b in branches:
        keep = np.unique(np.r_[np.arange(0, len(b.points), 2), len(b.points) - 1])
        pts, radii = b.points[keep], b.radii[keep]
        for a, c, ra, rc in zip(pts[:-1], pts[1:], radii[:-1], radii[1:], strict=True):
            r_max = max(ra, rc) + reach
            lo = np.maximum(np.floor((np.minimum(a, c) - r_max) / spacing_arr), 0).astype(int)
            hi = np.minimum(np.ceil((np.maximum(a, c) + r_max) / spacing_arr) + 1, shape).astype(
                int
            )
            if np.any(hi <= lo):
                continue
            axes = [np.arange(lo[i], hi[i]) * spacing_arr[i] - a[i] for i in range(3)]
            grids = np.ix_(*axes)
            seg = c - a
            t = (grids[0] * seg[0] + grids[1] * seg[1] + grids[2] * seg[2]) / max(seg @ seg, 1e-12)
            t = np.clip(t, 0.0, 1.0)
            dist = np.sqrt(sum((grids[i] - t * seg[i]) ** 2 for i in range(3)))
            box = tuple(slice(lo[i], hi[i]) for i in range(3))
            np.maximum(phi[box], (ra + t * (rc - ra) - dist).astype(np.float32), out=phi[box])
    return phi


def _distractors(
    rng: np.random.Generator,
    clean: np.ndarray,
    phi: np.ndarray,
    spacing: tuple[float, ...],
    record: np.ndarray | None = None,
) -> None:
    """Paint 2–5 unlabelled bright blobs away from the vessels (3 in ``record``)."""
    spacing_arr = np.asarray(spacing)
    extent = (np.asarray(clean.shape) - 1) * spacing_arr
    for _ in range(int(rng.integers(2, 6))):
        size = extent.min() * rng.uniform(0.04, 0.08)
        blob = Blob(
            extent * rng.uniform(0.15, 0.85, 3),
            size * rng.uniform(0.6, 1.4, 3),
            random_rotation(rng, np.pi),
            wobble(rng, 3, 0.15),
        )
        value = uniform(rng, (0.45, 0.8))
        lo = np.maximum(np.floor((blob.centre - blob.extent) / spacing_arr), 0).astype(int)
        hi = np.minimum(np.ceil((blob.centre + blob.extent) / spacing_arr) + 1, clean.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi.astype(int), strict=True))
        axes = [np.arange(b.start, b.stop) * s for b, s in zip(box, spacing_arr, strict=True)]
        points = np.stack(np.broadcast_arrays(*np.ix_(*axes)), axis=-1).astype(np.float32)
        inside = blob.inside(points) & (phi[box] < -2.0 * float(spacing_arr.max()))
        clean[box][inside] = value
        if record is not None:
            record[box][inside] = 3


# --------------------------------------------------------------------------- outputs


def _to_physical(points: np.ndarray, geometry: Geometry) -> np.ndarray:
    return geometry.index_to_physical(np.asarray(points) / np.asarray(geometry.spacing))


def centerline_polydata(branches: list[Branch], geometry: Geometry) -> PolyData:
    """VMTK-style centerline of the analytic tree, in physical LPS millimetres."""
    return tree_polydata(
        [dataclasses.replace(b, points=_to_physical(b.points, geometry)) for b in branches]
    )


def tree_json(branches: list[Branch], geometry: Geometry) -> dict[str, Any]:
    """The analytic tree: per branch its parent, children, LPS points and radii (mm)."""
    return {
        "geometry": geometry.to_dict(),
        "branches": [
            {
                "id": b.id,
                "parent": b.parent,
                "level": b.level,
                "children": list(b.children),
                "points": _to_physical(b.points, geometry).round(6).tolist(),
                "radii": b.radii.round(6).tolist(),
            }
            for b in branches
        ],
    }


def seed_point(branches: list[Branch], geometry: Geometry) -> list[Any]:
    """Seed ``[[x, y, z], [dx, dy, dz], radius]`` (voxseg's list) two radii into the trunk."""
    trunk = branches[0]
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(trunk.points, axis=0), axis=1))]
    k = int(min(np.searchsorted(arc, 2.0 * trunk.radii[0]), len(arc) - 2))
    d = trunk.points[k + 1] - trunk.points[k]
    d_phys = geometry.direction_matrix @ (d / np.linalg.norm(d))
    point = _to_physical(trunk.points[k], geometry)
    return [point.round(6).tolist(), d_phys.round(6).tolist(), round(float(trunk.radii[k]), 6)]
