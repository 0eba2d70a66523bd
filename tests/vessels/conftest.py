"""Analytic vessel phantoms: unions of capsules around known centerlines, in physical space."""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.io import Geometry, Image


def rasterise_tubes(geometry: Geometry, tubes: list[tuple[np.ndarray, np.ndarray]]) -> Image:
    """Mask of the union of capsules (radius linear along each segment) around LPS polylines.

    Distances are computed from the physical position of every voxel centre, so the
    mask is independent of how the grid is oriented.
    """
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in geometry.shape], indexing="ij"), -1)
    phys = geometry.index_to_physical(idx.reshape(-1, 3))
    phi = np.full(len(phys), -np.inf)
    for points, radii in tubes:
        for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:], strict=True):
            seg = b - a
            t = np.clip((phys - a) @ seg / max(seg @ seg, 1e-12), 0.0, 1.0)
            dist = np.linalg.norm(phys - (a + t[:, None] * seg), axis=1)
            np.maximum(phi, ra + t * (rb - ra) - dist, out=phi)
    mask = (phi > 0).reshape(geometry.shape).astype(np.uint8)
    return Image.from_geometry(mask, geometry)


def oblique_direction(angle_deg: float = 20.0) -> np.ndarray:
    """A rotated (oblique) direction: columns are the LPS vectors of array axes z, y, x."""
    a = np.deg2rad(angle_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return rz @ rx @ np.eye(3)[:, ::-1]


def polyline(fn, n: int = 200) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    return np.stack([fn(v) for v in t])


def distance_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Distance of each point to the densely sampled reference polyline (brute force)."""
    dense = []
    for a, b in zip(line[:-1], line[1:], strict=True):
        dense.append(a + np.linspace(0, 1, 10, endpoint=False)[:, None] * (b - a))
    dense.append(line[-1:])
    ref = np.concatenate(dense)
    return np.min(np.linalg.norm(points[:, None, :] - ref[None], axis=2), axis=1)


@pytest.fixture
def tubes():
    """Helpers: ``rasterise``, ``oblique``, ``polyline``, ``distance`` (see module)."""

    class _Tubes:
        rasterise = staticmethod(rasterise_tubes)
        oblique = staticmethod(oblique_direction)
        polyline = staticmethod(polyline)
        distance = staticmethod(distance_to_polyline)

    return _Tubes
