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

import itertools
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

#: Masks with more voxels are skeletonized in slabs of about this many voxels: kimimaro's
#: TEASAR needs roughly 20 bytes per voxel of what it is given (distance fields, path costs).
CHUNK_VOXELS = 8_000_000
#: Fewest planes per slab: TEASAR near a slab's face sees only one side of the vessel.
MIN_SLAB = 16


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
    chunk_voxels: int | None = CHUNK_VOXELS,
) -> Centerline:
    """Centerline of a vessel mask, in physical LPS millimetres with radii in mm.

    ``label`` selects the vessel label(s) (default: every non-zero voxel). ``root`` (LPS
    mm) picks the inlet: the skeleton end point nearest to it; by default each tree starts
    at its end point of largest radius. ``scale`` and ``const_mm`` are TEASAR's invalidation
    ball ``scale·r + const`` (``const`` defaults to two mean voxel sizes). Terminal branches
    shorter than ``spur_factor`` × the radius at their branching point are pruned.
    ``smoothing`` is the Gaussian sigma, in skeleton points, applied along each branch.
    Components smaller than ``dust_voxels`` are ignored.

    A mask with more than ``chunk_voxels`` voxels (``None``: no limit) is skeletonized in
    slabs along its longest axis (:func:`_skeleton_in_slabs`) and its distance transform is
    computed slab by slab, so memory stays bounded on a large field of view.
    """
    arr = mask.array[0] if mask.array.ndim == 4 else mask.array
    if label is None and arr.dtype in (np.bool_, np.uint8) and arr.size and arr.max() <= 1:
        binary = arr.view(bool)  # already 0/1: no copy (it is only read)
    elif label is None:
        binary = arr > 0
    else:
        binary = np.isin(arr, np.atleast_1d(np.asarray(label)))
    geometry = mask.geometry
    if not binary.any():
        return Centerline([], geometry)
    spacing = np.asarray(mask.spacing, dtype=float)
    const = float(2.0 * spacing.mean() if const_mm is None else const_mm)
    params = {
        "scale": scale,
        "const": const,
        "pdrf_scale": 100000,
        "pdrf_exponent": 4,
        "soma_detection_threshold": 1e9,
        "soma_acceptance_threshold": 1e9,
    }
    axis = int(np.argmax(binary.shape))
    plane = binary.size // binary.shape[axis]
    if chunk_voxels is None or binary.size <= chunk_voxels:
        thickness = binary.shape[axis]
        skeleton = _skeleton(binary, spacing, params, dust_voxels)
    else:
        thickness = max(int(chunk_voxels) // plane, MIN_SLAB)
        skeleton = _skeleton_in_slabs(binary, spacing, params, dust_voxels, axis, thickness)
    if skeleton is None:
        return Centerline([], geometry)
    index, edges, max_radius = skeleton
    # The distance transform is exact at a point whose nearest background voxel lies within
    # the slab's margin; no skeleton point (nor a point moved from one by the refinement)
    # lies deeper than the largest skeleton radius, an upper bound from the skeletonization.
    margin = int(np.ceil(max_radius / spacing[axis])) + 4
    dist = SlabDistance(binary, spacing, axis, thickness, margin)
    radii = inscribed_radius(dist, index, spacing)
    points = geometry.index_to_physical(index)

    graph = nx.Graph()
    graph.add_nodes_from(range(len(points)))
    graph.add_edges_from((int(a), int(b)) for a, b in edges if a != b)
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


def inscribed_radius(
    dist: np.ndarray | SlabDistance, index: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """Radius (mm) at continuous indices: the distance transform, less half a voxel."""
    values = sample_distance(dist, index)
    return np.maximum(values - 0.5 * float(np.min(spacing)), 0.5 * float(np.min(spacing)))


def sample_distance(dist: np.ndarray | SlabDistance, index: np.ndarray) -> np.ndarray:
    """The distance transform (an array or a :class:`SlabDistance`) at continuous indices
    ``(n, 3)``, trilinear."""
    if isinstance(dist, SlabDistance):
        return dist(index)
    return map_coordinates(dist, np.asarray(index, dtype=float).T, order=1, mode="nearest")


class SlabDistance:
    """The anisotropic Euclidean distance transform of ``binary`` (mm), evaluated at points
    slab by slab along ``axis``: slabs of ``thickness`` voxels with ``margin`` voxels on
    either side, one slab in memory at a time (the last one is kept for the next call).
    Exact at a point whose nearest background voxel is within the margin, as with the
    transform of the whole mask (the grid's faces are not background in either)."""

    def __init__(
        self, binary: np.ndarray, spacing: np.ndarray, axis: int, thickness: int, margin: int
    ) -> None:
        self.binary, self.spacing = binary, tuple(float(s) for s in spacing)
        self.axis, self.thickness, self.margin = axis, max(int(thickness), 1), max(int(margin), 1)
        self._cached: tuple[int, int, np.ndarray] | None = None

    def _slab(self, k: int) -> tuple[int, np.ndarray]:
        if self._cached is None or self._cached[0] != k:
            self._cached = None  # free the previous slab first
            n = self.binary.shape[self.axis]
            lo = max(k * self.thickness - self.margin, 0)
            hi = min((k + 1) * self.thickness + self.margin, n)
            sl = [slice(None)] * 3
            sl[self.axis] = slice(lo, hi)
            part = np.ascontiguousarray(self.binary[tuple(sl)])
            self._cached = (k, lo, edt.edt(part, anisotropy=self.spacing, parallel=1))
        return self._cached[1], self._cached[2]

    def __call__(self, index: np.ndarray) -> np.ndarray:
        index = np.asarray(index, dtype=float).reshape(-1, 3)
        out = np.zeros(len(index))
        n = self.binary.shape[self.axis]
        along = np.clip(np.floor(index[:, self.axis] + 0.5), 0, n - 1).astype(int)
        slab = along // self.thickness
        order = np.unique(slab)
        if self._cached is not None and self._cached[0] in order:  # the kept slab first
            order = np.r_[self._cached[0], order[order != self._cached[0]]]
        for k in order:
            sel = slab == k
            lo, dist = self._slab(int(k))
            shifted = index[sel].copy()
            shifted[:, self.axis] -= lo
            out[sel] = map_coordinates(dist, shifted.T, order=1, mode="nearest")
        return out


def _teasar(
    binary: np.ndarray, spacing: np.ndarray, params: dict[str, Any], dust_voxels: int
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """kimimaro's TEASAR skeleton of a binary array: integer voxel indices ``(n, 3)``, edges
    ``(m, 2)`` and the largest radius (mm); None when it is empty."""
    skeletons = kimimaro.skeletonize(
        np.ascontiguousarray(binary, dtype=np.uint8),
        teasar_params=params,
        anisotropy=tuple(spacing),
        dust_threshold=dust_voxels,
        fix_branching=True,
        fix_borders=True,
        progress=False,
        parallel=1,
    )
    skel = skeletons.get(1)
    if skel is None or len(skel.vertices) == 0:
        return None
    index = np.rint(np.asarray(skel.vertices, dtype=float) / spacing).astype(np.int64)
    radius = float(np.max(skel.radii)) if len(skel.radii) else 0.0
    return index, np.asarray(skel.edges, dtype=np.int64).reshape(-1, 2), radius


def _skeleton(
    binary: np.ndarray, spacing: np.ndarray, params: dict[str, Any], dust_voxels: int
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The skeleton of the whole mask in one call (see :func:`_teasar`); indices as floats."""
    out = _teasar(binary, spacing, params, dust_voxels)
    return None if out is None else (out[0].astype(float), out[1], out[2])


def _skeleton_in_slabs(
    binary: np.ndarray,
    spacing: np.ndarray,
    params: dict[str, Any],
    dust_voxels: int,
    axis: int,
    thickness: int,
) -> tuple[np.ndarray, np.ndarray, float] | None:
    """The skeleton of a large mask from slabs of ``thickness`` voxels along ``axis``.

    Neighbouring slabs share one plane. kimimaro's ``fix_borders`` puts a skeleton point at
    the same place of every piece of the mask cut by a slab's face (the maximum of the
    piece's 2-D distance transform in that plane), from the plane alone, so both slabs
    reach the same voxel there: the slab skeletons are joined at the vertices they share.
    A slab drops its components of ``dust_voxels`` or fewer voxels that touch no shared
    plane (whole components, as in the single call); a piece that touches one belongs to a
    component reaching into the next slab and is kept."""
    n = binary.shape[axis]
    pieces, edges, offset, radius = [], [], 0, 0.0
    cuts = [0, *_cut_planes(binary, axis, thickness), n - 1]
    for lo, last in itertools.pairwise(cuts):
        hi = last + 1
        sl = [slice(None)] * 3
        sl[axis] = slice(lo, hi)
        slab = np.ascontiguousarray(binary[tuple(sl)], dtype=np.uint8)
        if dust_voxels > 0:
            _dust_inside(slab, dust_voxels, axis, lo > 0, hi < n)
        part = _teasar(slab, spacing, params, 0)
        del slab
        if part is None:
            continue
        index, e, r = part
        index[:, axis] += lo
        pieces.append(index)
        edges.append(e + offset)
        offset += len(index)
        radius = max(radius, r)
    if not pieces:
        return None
    index, inverse = np.unique(np.concatenate(pieces), axis=0, return_inverse=True)
    e = inverse.reshape(-1)[np.concatenate(edges)]
    e = np.unique(np.sort(e[e[:, 0] != e[:, 1]], axis=1), axis=0)
    return index.astype(float), e, radius


def _cut_planes(binary: np.ndarray, axis: int, thickness: int) -> list[int]:
    """Planes along ``axis`` where neighbouring slabs meet: about every ``thickness`` planes,
    each the plane with the fewest mask voxels within a quarter slab of that, so that a
    slab's face crosses vessels rather than running along one (a vessel cut lengthwise has
    a skeleton in the face itself in both slabs, two paths side by side)."""
    n = binary.shape[axis]
    counts = np.count_nonzero(binary, axis=tuple(a for a in range(3) if a != axis))
    reach = thickness // 4
    cuts = []
    for nominal in range(thickness, n - 1, thickness):
        lo, hi = max(nominal - reach, 1), min(nominal + reach + 1, n - 1)
        if hi <= lo:
            continue
        window = np.arange(lo, hi)
        cuts.append(int(window[np.lexsort((np.abs(window - nominal), counts[lo:hi]))[0]]))
    return cuts


def _dust_inside(slab: np.ndarray, dust_voxels: int, axis: int, first: bool, last: bool) -> None:
    """Zero, in place, the components (26-connected) of ``slab`` with at most ``dust_voxels``
    voxels that touch neither its first nor its last plane along ``axis`` (those shared with
    a neighbouring slab, as ``first`` and ``last`` say)."""
    labels, n = cc3d.connected_components(slab, connectivity=26, return_N=True)
    if n == 0:
        return
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    small = counts <= dust_voxels
    small[0] = False
    for face, shared in ((0, first), (-1, last)):
        if shared:
            small[np.take(labels, face, axis=axis)] = False
    if small.any():
        slab[small[labels]] = 0


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
    dist: np.ndarray | SlabDistance,
    geometry: Geometry,
) -> tuple[np.ndarray, np.ndarray]:
    """Sub-voxel centring and radius from the cross-section of the mask at each point.

    A skeleton runs through voxel centres, up to half a voxel off the true axis. At each
    point the voxels of a disc one voxel thick normal to the local tangent are gathered:
    the centroid of those inside the mask recentres the point in that plane (the shift is
    capped at one voxel), and their share of the disc's area gives the cross-section area
    ``A`` and the equivalent radius ``sqrt(A / π)``. At a branching
    point the cross-section covers several vessels, so the radius is capped at the distance
    transform ``dist`` (mm; an array or a :class:`SlabDistance`) at the point plus half a
    voxel, an upper bound of the maximum inscribed sphere.
    """
    if len(points) < 2:
        return points, radii
    spacing = np.asarray(geometry.spacing)
    thick = float(spacing.max())
    tangents = np.gradient(points, axis=0)
    tangents /= np.maximum(np.linalg.norm(tangents, axis=1, keepdims=True), 1e-12)
    shape = np.asarray(binary.shape)
    out_p, out_r = points.copy(), radii.copy()
    refined: list[int] = []
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
        out_r[i] = float(np.sqrt(area / np.pi))
        refined.append(i)
    if refined:
        bound = sample_distance(dist, geometry.physical_to_index(out_p[refined]))
        out_r[refined] = np.minimum(out_r[refined], bound + 0.5 * thick)
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


def components_at(
    mask: np.ndarray, points: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """The connected components (26-connectivity) of the bool ``mask`` that hold one of the
    voxels ``points`` (integer indices ``(n, 3)``), as a bool array: ``out`` when given (it
    may be ``mask`` itself, which is then overwritten), else a new one. Holds one label
    volume (cc3d's smallest sufficient integer type) beside the mask."""
    labels, n = cc3d.connected_components(
        mask.view(np.uint8) if mask.dtype == bool else (mask != 0).view(np.uint8),
        connectivity=26,
        return_N=True,
    )
    keep = np.zeros(n + 1, dtype=bool)
    pts = np.asarray(points, dtype=np.int64).reshape(-1, 3)
    keep[labels[tuple(pts.T)]] = True
    keep[0] = False
    if out is None:
        out = np.empty(mask.shape, dtype=bool)
    # The lookup casts the labels it reads to 8-byte indices: a few planes at a time.
    step = max(1, (1 << 21) // max(1, labels[0].size))
    for z in range(0, labels.shape[0], step):
        out[z : z + step] = keep[labels[z : z + step]]
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
