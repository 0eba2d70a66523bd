"""Centerlines from vessel masks: TEASAR skeleton → branch tree → VMTK-style polylines.

The skeleton is kimimaro's TEASAR (Sato et al. 2000, as in kimimaro) run on the mask with
the spacing as anisotropy, so path costs and the invalidation balls are in millimetres.
The radius at a skeleton point is the Euclidean distance transform (``edt``, anisotropic)
minus half a voxel: the transform measures the distance to the nearest *background voxel
centre*, which lies on average half a voxel beyond the true wall. Points are then placed in
physical LPS space with :meth:`voxseg.io.Geometry.index_to_physical`, so oblique and
flipped directions need nothing special.

The skeleton graph is made a tree rooted at the inlet (the end point with the largest
radius, or the one nearest a given point), cut into branches between branching points,
short terminal spurs are pruned, and each branch is lightly smoothed along its length.
:meth:`Centerline.to_polydata` writes the VMTK/SeqSeg convention (one polyline per
root→outlet path, ``MaximumInscribedSphereRadius``, ``CenterlineId``, ``BifurcationIdTmp``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cc3d
import edt
import kimimaro
import networkx as nx
import numpy as np
from scipy.ndimage import gaussian_filter1d, map_coordinates

from voxseg.config import read_json, write_json
from voxseg.errors import VoxsegError
from voxseg.io import Geometry, Image, PolyData, write_vtp
from voxseg.io.vtp import CENTERLINE_RADIUS, tree_polydata


@dataclass
class CenterlineBranch:
    """One branch, proximal to distal: LPS points (mm) and radii (mm).

    A child's first point is its parent's last point (the branching point), as in VMTK.
    """

    id: int
    parent: int
    points: np.ndarray
    radii: np.ndarray
    children: list[int] = field(default_factory=list)

    @property
    def length(self) -> float:
        """Arc length in mm."""
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


@dataclass
class Centerline:
    """A forest of branch trees; roots have ``parent == -1``."""

    branches: list[CenterlineBranch]
    geometry: Geometry | None = None

    @property
    def graph(self) -> nx.DiGraph:
        """Branch graph: one node per branch (``length``, ``mean_radius``), parent → child."""
        g = nx.DiGraph()
        for b in self.branches:
            g.add_node(b.id, length=b.length, mean_radius=float(np.mean(b.radii)))
        for b in self.branches:
            if b.parent >= 0:
                g.add_edge(b.parent, b.id)
        return g

    @property
    def length(self) -> float:
        return float(sum(b.length for b in self.branches))

    def paths(self) -> list[list[int]]:
        """Branch ids of every root → outlet path."""
        by_id = {b.id: b for b in self.branches}
        out = []
        for leaf in (b for b in self.branches if not b.children):
            path, node = [leaf.id], leaf
            while node.parent >= 0:
                node = by_id[node.parent]
                path.insert(0, node.id)
            out.append(path)
        return out

    def to_polydata(self) -> PolyData:
        """VMTK/SeqSeg centerline: one polyline per root → outlet path, shared trunk points."""
        return centerline_polydata(self.branches)

    def to_json(self) -> dict[str, Any]:
        """The branch graph as JSON (points LPS mm, radii mm)."""
        return {
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
            "branches": [
                {
                    "id": b.id,
                    "parent": b.parent,
                    "children": list(b.children),
                    "length": round(b.length, 6),
                    "points": np.round(b.points, 6).tolist(),
                    "radii": np.round(b.radii, 6).tolist(),
                }
                for b in self.branches
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Centerline:
        geometry = data.get("geometry")
        return cls(
            [
                CenterlineBranch(
                    int(b["id"]),
                    int(b["parent"]),
                    np.asarray(b["points"], dtype=float).reshape(-1, 3),
                    np.asarray(b["radii"], dtype=float),
                    [int(c) for c in b.get("children", [])],
                )
                for b in data["branches"]
            ],
            None if geometry is None else Geometry.from_dict(geometry),
        )

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write ``path`` (``.vtp``) and the graph next to it as ``.json``; returns the VTP."""
        path = Path(path)
        write_vtp(self.to_polydata(), path)
        write_json(path.with_suffix(".json"), self.to_json())
        return path


def read_centerline_json(path: str | os.PathLike[str]) -> Centerline:
    return Centerline.from_json(read_json(path))


def extract_centerline(
    mask: Image,
    *,
    label: int | Sequence[int] | None = None,
    root: Sequence[float] | None = None,
    scale: float = 1.5,
    const_mm: float | None = None,
    spur_factor: float = 2.0,
    smoothing: float = 1.5,
    dust_voxels: int = 20,
) -> Centerline:
    """Centerline of a vessel mask, in physical LPS millimetres with radii in mm.

    ``label`` selects the vessel label(s) (default: every non-zero voxel). ``root`` (LPS
    mm) picks the inlet: the skeleton end point nearest to it; by default each tree starts
    at its end point of largest radius. ``scale`` and ``const_mm`` are TEASAR's invalidation
    ball ``scale·r + const`` (``const`` defaults to two mean voxel sizes). Terminal branches
    shorter than ``spur_factor`` × the radius at their branching point are pruned.
    ``smoothing`` is the Gaussian sigma, in skeleton points, applied along each branch.
    Components smaller than ``dust_voxels`` are ignored.
    """
    arr = mask.array[0] if mask.array.ndim == 4 else mask.array
    if label is None:
        binary = arr > 0
    else:
        binary = np.isin(arr, np.atleast_1d(np.asarray(label)))
    geometry = mask.geometry
    if not binary.any():
        return Centerline([], geometry)
    spacing = np.asarray(mask.spacing, dtype=float)
    const = float(2.0 * spacing.mean() if const_mm is None else const_mm)
    skeletons = kimimaro.skeletonize(
        np.ascontiguousarray(binary, dtype=np.uint8),
        teasar_params={
            "scale": scale,
            "const": const,
            "pdrf_scale": 100000,
            "pdrf_exponent": 4,
            "soma_detection_threshold": 1e9,
            "soma_acceptance_threshold": 1e9,
        },
        anisotropy=tuple(spacing),
        dust_threshold=dust_voxels,
        fix_branching=True,
        fix_borders=True,
        progress=False,
        parallel=1,
    )
    skel = skeletons.get(1)
    if skel is None or len(skel.vertices) == 0:
        return Centerline([], geometry)
    index = np.asarray(skel.vertices, dtype=float) / spacing
    dist = edt.edt(binary, anisotropy=tuple(spacing), parallel=1)
    radii = inscribed_radius(dist, index, spacing)
    points = geometry.index_to_physical(index)

    graph = nx.Graph()
    graph.add_nodes_from(range(len(points)))
    graph.add_edges_from((int(a), int(b)) for a, b in skel.edges if a != b)
    branches: list[CenterlineBranch] = []
    components = sorted(nx.connected_components(graph), key=len, reverse=True)
    root_pt = None if root is None else np.asarray(root, dtype=float)
    root_component = None
    if root_pt is not None:
        nearest = int(np.argmin(np.linalg.norm(points - root_pt, axis=1)))
        root_component = next(i for i, c in enumerate(components) if nearest in c)
    for i, nodes in enumerate(components):
        if len(nodes) < 2:
            continue
        sub = graph.subgraph(nodes)
        ends = [n for n in sub.nodes if sub.degree(n) <= 1] or list(sub.nodes)
        if i == root_component:
            start = min(ends, key=lambda n: np.linalg.norm(points[n] - root_pt))
        else:
            start = max(ends, key=lambda n: radii[n])
        tree = nx.bfs_tree(sub, start)
        _tree_branches(tree, start, points, radii, branches)
    branches = _prune_spurs(branches, spur_factor)
    on_border = _on_border(geometry)
    for b in branches:
        if not b.children:
            b.points, b.radii = _trim_tip(b.points, b.radii, on_border)
        if b.parent < 0:
            pts, rad = _trim_tip(b.points[::-1], b.radii[::-1], on_border)
            b.points, b.radii = pts[::-1].copy(), rad[::-1].copy()
    for b in branches:
        if smoothing > 0:
            b.points = _smooth(b.points, smoothing)
        b.points, b.radii = refine_cross_sections(b.points, b.radii, binary, dist, geometry)
    return Centerline(branches, geometry)


def inscribed_radius(dist: np.ndarray, index: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Radius (mm) at continuous indices: the distance transform, less half a voxel."""
    values = map_coordinates(dist, index.T, order=1, mode="nearest")
    return np.maximum(values - 0.5 * float(np.min(spacing)), 0.5 * float(np.min(spacing)))


def _tree_branches(
    tree: nx.DiGraph,
    start: int,
    points: np.ndarray,
    radii: np.ndarray,
    out: list[CenterlineBranch],
) -> None:
    """Cut a rooted vertex tree into branches between branching points (appended to out)."""
    stack: list[tuple[int, int | None, int]] = [(start, None, -1)]
    while stack:
        node, first, parent = stack.pop()
        if first is None and tree.out_degree(node) >= 2:
            stack.extend((node, s, parent) for s in tree.successors(node))
            continue
        chain = [node] if first is None else [node, first]
        while tree.out_degree(chain[-1]) == 1:
            chain.append(next(iter(tree.successors(chain[-1]))))
        branch = CenterlineBranch(len(out), parent, points[chain], radii[chain])
        out.append(branch)
        if parent >= 0:
            out[parent].children.append(branch.id)
        stack.extend((chain[-1], s, branch.id) for s in tree.successors(chain[-1]))


def _prune_spurs(branches: list[CenterlineBranch], factor: float) -> list[CenterlineBranch]:
    """Drop terminal branches shorter than ``factor`` × their start radius, merge a parent
    left with one child into it, repeat until stable; ids are renumbered (parents first)."""
    by_id = {b.id: b for b in branches}
    changed = True
    while changed:
        changed = False
        for b in list(by_id.values()):
            if b.parent >= 0 and not b.children and b.length < factor * b.radii[0]:
                parent = by_id[b.parent]
                if len(parent.children) < 2:
                    continue
                parent.children.remove(b.id)
                del by_id[b.id]
                changed = True
        for b in list(by_id.values()):
            if b.id in by_id and len(b.children) == 1:
                child = by_id.pop(b.children[0])
                b.points = np.concatenate([b.points, child.points[1:]])
                b.radii = np.concatenate([b.radii, child.radii[1:]])
                b.children = child.children
                for c in b.children:
                    by_id[c].parent = b.id
                changed = True
    order: list[CenterlineBranch] = []
    queue = [b for b in by_id.values() if b.parent < 0]
    while queue:
        b = queue.pop(0)
        order.append(b)
        queue.extend(by_id[c] for c in b.children)
    new_id = {b.id: i for i, b in enumerate(order)}
    for b in order:
        b.id = new_id[b.id]
        b.parent = new_id.get(b.parent, -1)
        b.children = [new_id[c] for c in b.children]
    return order


def refine_cross_sections(
    points: np.ndarray,
    radii: np.ndarray,
    binary: np.ndarray,
    dist: np.ndarray,
    geometry: Geometry,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel centring and radius from the cross-section of the mask at each point.

    A skeleton runs through voxel centres, up to half a voxel off the true axis. At each
    point the voxels of a disc one voxel thick normal to the local tangent are gathered:
    the centroid of those inside the mask recentres the point in that plane (the shift is
    capped at one voxel), and their share of the disc's area gives the cross-section area
    ``A`` and the equivalent radius ``sqrt(A / π)``. At a branching
    point the cross-section covers several vessels, so the radius is capped at the distance
    transform ``dist`` (mm) at the point plus half a voxel, an upper bound of the maximum
    inscribed sphere.
    """
    if len(points) < 2:
        return points, radii
    spacing = np.asarray(geometry.spacing)
    thick = float(spacing.max())
    tangents = np.gradient(points, axis=0)
    tangents /= np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-12)
    shape = np.asarray(binary.shape)
    out_p, out_r = points.copy(), radii.copy()
    for i, (p, t, r) in enumerate(zip(points, tangents, radii, strict=True)):
        reach = 1.5 * r + thick
        centre = geometry.physical_to_index(p)
        lo = np.maximum(np.floor(centre - reach / spacing).astype(int), 0)
        hi = np.minimum(np.ceil(centre + reach / spacing).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        inside = binary[box].ravel()
        if not inside.any():
            continue
        idx = np.indices(tuple(hi - lo)).reshape(3, -1).T + lo
        rel = geometry.index_to_physical(idx) - p
        along = rel @ t
        perp = rel - along[:, None] * t
        in_disc = (np.abs(along) <= thick / 2) & (np.linalg.norm(perp, axis=1) <= reach)
        sel = in_disc & inside
        if sel.sum() < 3:
            continue
        shift = perp[sel].mean(axis=0)
        norm = float(np.linalg.norm(shift))
        if norm > thick:
            shift *= thick / norm
        out_p[i] = p + shift
        # Share of the disc's voxels inside the vessel × the disc's area: the grid border
        # clips numerator and denominator alike.
        area = sel.sum() / in_disc.sum() * np.pi * reach**2
        area_radius = float(np.sqrt(area / np.pi))
        bound = map_coordinates(
            dist, geometry.physical_to_index(out_p[i])[:, None], order=1, mode="nearest"
        )[0]
        out_r[i] = min(area_radius, float(bound) + 0.5 * thick)
    return out_p, out_r


def _on_border(geometry: Geometry):
    """Predicate: is an LPS point within one voxel of the grid's faces?"""

    def check(point: np.ndarray) -> bool:
        idx = geometry.physical_to_index(point)
        return bool(np.any(idx < 1.0) or np.any(idx > np.asarray(geometry.shape) - 2.0))

    return check


def _trim_tip(points: np.ndarray, radii: np.ndarray, on_border) -> tuple[np.ndarray, np.ndarray]:
    """Cut a closed vessel end back to the centre of its last inscribed sphere (as VMTK's
    centerlines end): drop tip points closer to the tip than their radius. Ends cut by the
    image border are kept."""
    if len(points) < 3 or on_border(points[-1]):
        return points, radii
    dist = np.linalg.norm(points - points[-1], axis=1)
    keep = len(points)
    while keep > 2 and dist[keep - 1] < radii[keep - 1]:
        keep -= 1
    return points[:keep], radii[:keep]


def _smooth(points: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along a polyline with both end points kept."""
    if len(points) < 3:
        return points
    out = gaussian_filter1d(points, sigma, axis=0, mode="nearest")
    out[0], out[-1] = points[0], points[-1]
    return out


def centerline_polydata(branches: Sequence[CenterlineBranch]) -> PolyData:
    """VMTK-style polylines of the branch tree (see :func:`voxseg.io.vtp.tree_polydata`)."""
    return tree_polydata(branches)


def polyline_segments(poly: PolyData) -> tuple[np.ndarray, np.ndarray]:
    """Unique segments ``(a, b)`` (LPS mm, ``(m, 3)`` each) of every polyline; a trunk shared
    by several VMTK centerlines counts once."""
    pairs = set()
    for line in poly.lines:
        for i, j in zip(line[:-1], line[1:], strict=True):
            if i != j:
                pairs.add((min(int(i), int(j)), max(int(i), int(j))))
    if not pairs:
        return np.zeros((0, 3)), np.zeros((0, 3))
    idx = np.array(sorted(pairs))
    return poly.points[idx[:, 0]], poly.points[idx[:, 1]]


def resample_segments(a: np.ndarray, b: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ≤ ``step`` mm along segments, each with the length it stands for (mm)."""
    if len(a) == 0:
        return np.zeros((0, 3)), np.zeros(0)
    lengths = np.linalg.norm(b - a, axis=1)
    counts = np.maximum(np.ceil(lengths / step).astype(int), 1)
    seg = np.repeat(np.arange(len(a)), counts)
    offsets = np.concatenate([np.arange(c) for c in counts])
    t = (offsets + 0.5) / counts[seg]
    pts = a[seg] + t[:, None] * (b[seg] - a[seg])
    return pts, lengths[seg] / counts[seg]


def components_at(mask: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """The connected components (26-connectivity) of ``mask`` that contain a ``keep`` voxel."""
    labels = cc3d.connected_components(
        mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8), connectivity=26
    )
    ids = np.unique(labels[keep & mask])
    ids = ids[ids > 0]
    if len(ids) > 8:
        return np.isin(labels, ids)
    out = np.zeros(mask.shape, dtype=bool)  # a few components: no sorted copy of the labels
    for i in ids:
        out |= labels == i
    return out


def require_centerline(poly: PolyData, source: str) -> None:
    """Raise a clear error unless ``poly`` is a centerline with radii."""
    if not poly.lines:
        raise VoxsegError(f"{source}: holds no polylines; it is not a centerline")
    if CENTERLINE_RADIUS not in poly.point_data:
        raise VoxsegError(
            f"{source}: has no {CENTERLINE_RADIUS!r} point array; extract centerlines with "
            "'voxseg centerline MASK -o CL.vtp' (or VMTK) to get radii"
        )
