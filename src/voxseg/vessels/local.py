"""One tracing step's local analysis (SeqSeg): the vessel piece at the box centre, its open
ends ("caps") on the box faces, local centerlines from the entry cap to every other cap,
and the next point, direction and radius along each."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import cc3d
import edt
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import csgraph

from voxseg.io import Geometry, Image
from voxseg.vessels.centerline import refine_cross_sections
from voxseg.vessels.subvolume import Box


@dataclass
class Cap:
    """An open end: the vessel voxels on the box faces, one connected piece."""

    centroid: np.ndarray
    voxels: int
    on_image_border: bool
    deepest: tuple[int, int, int]


@dataclass
class Candidate:
    """A possible next point along the local centerline towards one exit cap."""

    point: np.ndarray
    direction: np.ndarray
    radius: float
    angle_deg: float
    on_image_border: bool
    path: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 3)))


@dataclass
class LocalResult:
    """The outcome of analysing one local prediction."""

    component: np.ndarray | None
    caps: list[Cap]
    entry: int | None
    candidates: list[Candidate]
    reason: str | None = None
    probability: np.ndarray | None = field(default=None, repr=False)

    @property
    def found_vessel(self) -> bool:
        return self.component is not None


@dataclass(frozen=True)
class LocalSettings:
    """The constants of the local analysis: the fields of the same names of
    :class:`voxseg.vessels.TracingConfig` (their defaults and meaning)."""

    threshold: float
    centre_tolerance: float
    min_cap_voxels: int
    next_point_fraction: float
    max_angle_deg: float
    path_penalty_scale: float
    path_penalty_exponent: float


def analyse(
    prob: Image,
    box: Box,
    point: np.ndarray,
    direction: np.ndarray | None,
    radius: float,
    settings: LocalSettings,
) -> LocalResult:
    """Analyse the local probability map ``prob`` of the box around ``point``."""
    done = partial(LocalResult, probability=np.asarray(prob.array, dtype=np.float32))
    g = prob.geometry
    spacing = np.asarray(g.spacing)
    mask = np.asarray(prob.array) >= settings.threshold
    component = component_at_centre(mask, g, point, settings.centre_tolerance * radius)
    if component is None:
        return done(None, [], None, [], "no vessel at the box centre")
    dist = edt.edt(component, anisotropy=tuple(spacing), parallel=1)
    caps = find_caps(component, dist, g, box, settings.min_cap_voxels)
    entry = entry_cap(caps, point, direction)
    exits = [i for i in range(len(caps)) if i != entry]
    if not exits:
        reason = "dead end (fewer than 2 caps)" if entry is not None else "dead end (no open end)"
        return done(component, caps, entry, [], reason)
    if entry is not None:
        source = caps[entry].deepest
    else:
        source = _nearest_voxel(component, g, point)
    paths = shortest_paths(
        component, dist, spacing, source, [caps[i].deepest for i in exits], settings
    )
    candidates = []
    for i, path in zip(exits, paths, strict=True):
        if path is None or len(path) < 2:
            continue
        cand = candidate_on_path(path, component, dist, g, point, direction, radius, settings)
        cand.on_image_border = caps[i].on_image_border
        if cand.angle_deg < settings.max_angle_deg:
            candidates.append(cand)
    candidates.sort(key=lambda c: c.angle_deg)
    reason = None if candidates else "no next point within the angle limit"
    return done(component, caps, entry, candidates, reason)


def entry_cap(caps: list[Cap], point: np.ndarray, direction: np.ndarray | None) -> int | None:
    """The open end the vessel comes from: the cap furthest behind ``point`` along
    ``direction``, if any lies behind it. A seed at a closed inlet (the vessel starts inside
    the box, as where a user clicks the root of a tree) has none: every cap is then an exit
    and the paths start at the vessel voxel nearest ``point``."""
    if direction is None or not caps:
        return None
    behind = [float(np.dot(_unit(c.centroid - point), direction)) for c in caps]
    k = int(np.argmin(behind))
    return k if behind[k] < 0 else None


def component_at_centre(
    mask: np.ndarray, g: Geometry, point: np.ndarray, tolerance_mm: float
) -> np.ndarray | None:
    """The connected piece (26-connectivity) at ``point``, or nearest to it within
    ``tolerance_mm``; ``None`` when there is none."""
    if not mask.any():
        return None
    labels = cc3d.connected_components(mask.astype(np.uint8), connectivity=26)
    idx = np.argwhere(labels > 0)
    d = np.linalg.norm(g.index_to_physical(idx) - point, axis=1)
    k = int(np.argmin(d))
    if d[k] > max(tolerance_mm, float(np.max(g.spacing))):
        return None
    return labels == labels[tuple(idx[k])]


def find_caps(
    component: np.ndarray, dist: np.ndarray, g: Geometry, box: Box, min_voxels: int
) -> list[Cap]:
    """Connected pieces (26-connectivity) of the component's voxels on the box faces;
    ``dist`` is the component's distance transform (picks each cap's deepest voxel)."""
    shell = np.zeros_like(component)
    border_face = np.zeros_like(component)
    on_border = box.on_image_border
    for a in range(3):
        for side, sl in ((0, 0), (1, component.shape[a] - 1)):
            index = [slice(None)] * 3
            index[a] = sl
            shell[tuple(index)] = True
            if on_border[a, side]:
                border_face[tuple(index)] = True
    on_shell = component & shell
    if not on_shell.any():
        return []
    labels, n = ndimage.label(on_shell, structure=np.ones((3, 3, 3)))
    caps = []
    for k in range(1, n + 1):
        vox = np.argwhere(labels == k)
        if len(vox) < min_voxels:
            continue
        border_share = border_face[tuple(vox.T)].mean()
        deepest = tuple(int(v) for v in vox[int(np.argmax(dist[tuple(vox.T)]))])
        caps.append(
            Cap(g.index_to_physical(vox).mean(axis=0), len(vox), bool(border_share > 0.5), deepest)
        )
    return caps


def shortest_paths(
    component: np.ndarray,
    dist: np.ndarray,
    spacing: np.ndarray,
    source: tuple[int, int, int],
    targets: list[tuple[int, int, int]],
    settings: LocalSettings,
) -> list[np.ndarray | None]:
    """Minimal paths (voxel index arrays) through the component from ``source`` to each
    target, with TEASAR's penalty ``scale·(1 − d/d_max)^exponent`` per mm keeping them
    near the middle of the vessel (Sato et al. 2000)."""
    flat = np.flatnonzero(component)
    node = np.full(component.size, -1, dtype=np.int64)
    node[flat] = np.arange(len(flat))
    coords = np.column_stack(np.unravel_index(flat, component.shape))
    dmax = max(float(dist.max()), 1e-6)
    penalty = (
        1.0
        + settings.path_penalty_scale
        * (1.0 - dist[component] / dmax) ** settings.path_penalty_exponent
    )
    rows, cols, weights = [], [], []
    shape = np.asarray(component.shape)
    for off in _half_neighbourhood():
        nb = coords + off
        ok = np.all((nb >= 0) & (nb < shape), axis=1)
        nb_flat = np.ravel_multi_index(nb[ok].T, component.shape)
        j = node[nb_flat]
        good = j >= 0
        i = np.flatnonzero(ok)[good]
        j = j[good]
        length = float(np.linalg.norm(off * spacing))
        rows.append(i)
        cols.append(j)
        weights.append(length * 0.5 * (penalty[i] + penalty[j]))
    graph = sparse.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(flat), len(flat)),
    )
    src = int(node[np.ravel_multi_index(source, component.shape)])
    _, pred = csgraph.dijkstra(graph, directed=False, indices=src, return_predecessors=True)
    out: list[np.ndarray | None] = []
    for t in targets:
        k = int(node[np.ravel_multi_index(t, component.shape)])
        if k < 0 or (k != src and pred[k] < 0):
            out.append(None)
            continue
        chain = [k]
        while chain[-1] != src:
            chain.append(int(pred[chain[-1]]))
        out.append(coords[chain[::-1]])
    return out


def candidate_on_path(
    path: np.ndarray,
    component: np.ndarray,
    dist: np.ndarray,
    g: Geometry,
    point: np.ndarray,
    direction: np.ndarray | None,
    radius: float,
    settings: LocalSettings,
) -> Candidate:
    """The point ``next_point_fraction`` along the path, its tangent and its radius: the
    median cross-section radius of the path within one radius of the point (the
    distance transform alone is biased low by up to a voxel on small digital discs)."""
    pts = g.index_to_physical(path.astype(float))
    if len(pts) >= 5:
        pts[1:-1] = ndimage.gaussian_filter1d(pts, 1.0, axis=0, mode="nearest")[1:-1]
    arc = np.r_[0.0, np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))]
    s = settings.next_point_fraction * arc[-1]
    nxt = _at(pts, arc, s)
    ahead = _at(pts, arc, min(s + radius, arc[-1]))
    behind = _at(pts, arc, max(s - radius, 0.0))
    tangent = _unit(ahead - behind)
    step = nxt - point
    ref = direction if direction is not None else tangent
    angle = float(np.degrees(np.arccos(np.clip(np.dot(_unit(step), ref), -1.0, 1.0))))
    near = np.abs(arc - s) <= max(radius, float(np.max(g.spacing)))
    initial = dist[tuple(path.T)].astype(float)
    _, radii = refine_cross_sections(pts, initial, component, dist, g)
    r = float(np.median(radii[near]))
    return Candidate(nxt, tangent, max(r, 0.0), angle, False, pts)


def _at(pts: np.ndarray, arc: np.ndarray, s: float) -> np.ndarray:
    return np.array([np.interp(s, arc, pts[:, k]) for k in range(3)])


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _nearest_voxel(component: np.ndarray, g: Geometry, point: np.ndarray) -> tuple[int, int, int]:
    idx = np.argwhere(component)
    k = int(np.argmin(np.linalg.norm(g.index_to_physical(idx) - point, axis=1)))
    return tuple(int(v) for v in idx[k])


def _half_neighbourhood() -> list[np.ndarray]:
    """The 13 offsets of the 26-neighbourhood that come first in raster order."""
    offs = []
    for dz in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                o = (dz, dy, dx)
                if o > (0, 0, 0):
                    offs.append(np.array(o))
    return offs
