"""Seed points for tracing, read from the files users have: voxseg's JSON list, SeqSeg's
per-case seed file, a VTP or JSON point list, and 3D Slicer markups (``.mrk.json``).

Every seed is a point in LPS millimetres (the image's physical space, as ITK and VTK
files use), an optional direction and an optional radius; :func:`voxseg.vessels.trace`
estimates a missing direction or radius from the local segmentation at the seed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voxseg.config import read_json
from voxseg.errors import VoxsegError

#: Point-data arrays read as the seed radius from a VTP point list, in this order.
RADIUS_ARRAYS = ("MaximumInscribedSphereRadius", "Radius", "radius")
#: Point-data arrays read as the seed direction from a VTP point list.
DIRECTION_ARRAYS = ("Direction", "direction", "Normals", "Tangent")


@dataclass
class Seed:
    """A start point (LPS mm), an optional direction and an optional radius (mm)."""

    point: np.ndarray
    radius: float | None = None
    direction: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.point = np.asarray(self.point, dtype=float).reshape(3)
        if not np.all(np.isfinite(self.point)):
            raise VoxsegError(f"seed point must be finite, got {self.point.tolist()}")
        if self.direction is not None:
            d = np.asarray(self.direction, dtype=float).reshape(3)
            n = float(np.linalg.norm(d))
            self.direction = d / n if n > 0 and np.isfinite(n) else None
        if self.radius is not None:
            self.radius = float(self.radius)
            if not self.radius > 0:
                raise VoxsegError(f"seed radius must be > 0, got {self.radius}")


def read_seeds(
    path: str | os.PathLike[str], case: str | None = None, radius: float | None = None
) -> list[Seed]:
    """Seeds from ``path``, by its content:

    * voxseg's JSON list: ``[[[x, y, z], [dx, dy, dz], r], ...]``, entries ``[[x, y, z], r]``,
      ``[x, y, z]`` or ``{"point": [...], "direction": [...], "radius": r}``;
    * SeqSeg's seed file: ``[{"name": case, "seeds": [[[x0, y0, z0], [x1, y1, z1], r]]}]``,
      the trace starting at the second point, heading away from the first (as SeqSeg's
      ``initialize_json``); ``case`` picks the entry (needed when there are several);
    * a ``.vtp`` point list (radius from ``MaximumInscribedSphereRadius`` or ``Radius``,
      direction from ``Direction`` or ``Normals`` when present);
    * 3D Slicer markups (``.mrk.json``): every control point of a point list, or a line's
      first point heading to its second; RAS coordinates are converted to LPS.

    ``radius`` (mm) is used for seeds whose file gives none (else the tracer estimates it).
    """
    path = Path(path)
    if not path.is_file():
        raise VoxsegError(f"{path}: seed file not found")
    if path.suffix.lower() == ".vtp":
        seeds = _from_vtp(path)
    else:
        data = read_json(path)
        if isinstance(data, dict) and "markups" in data:
            seeds = _from_slicer(path, data)
        elif _is_seqseg(data):
            seeds = _from_seqseg(path, data, case)
        else:
            seeds = _from_list(path, data)
    if not seeds:
        raise VoxsegError(f"{path}: no seeds")
    if radius is not None:
        for s in seeds:
            if s.radius is None:
                s.radius = float(radius)
    return seeds


def _entry_error(path: Path, i: int, exc: Exception) -> VoxsegError:
    return VoxsegError(
        f"{path}: seed {i} is not [[x, y, z], [dx, dy, dz], radius], [[x, y, z], radius], "
        f"[x, y, z] or {{'point': ..., 'direction': ..., 'radius': ...}} ({exc})"
    )


def _from_list(path: Path, data: Any) -> list[Seed]:
    if isinstance(data, dict) or (
        isinstance(data, list) and data and isinstance(data[0], (int, float))
    ):
        data = [data]
    if not isinstance(data, list):
        raise VoxsegError(f"{path}: expected a list of seeds, got {type(data).__name__}")
    seeds = []
    for i, entry in enumerate(data):
        try:
            if isinstance(entry, dict):
                r = entry.get("radius")
                seeds.append(Seed(entry["point"], r, entry.get("direction")))
            elif len(entry) == 3 and all(isinstance(v, (int, float)) for v in entry):
                seeds.append(Seed(entry))
            elif len(entry) == 3:
                seeds.append(Seed(entry[0], float(entry[2]), entry[1]))
            elif len(entry) == 2:
                seeds.append(Seed(entry[0], float(entry[1])))
            else:
                raise ValueError(f"{len(entry)} elements")
        except (KeyError, ValueError, TypeError) as exc:
            raise _entry_error(path, i, exc) from exc
    return seeds


def _is_seqseg(data: Any) -> bool:
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(e, dict) and "name" in e and "seeds" in e for e in data)
    )


def _from_seqseg(path: Path, data: list[dict[str, Any]], case: str | None) -> list[Seed]:
    names = [str(e["name"]) for e in data]
    if case is None:
        if len(data) > 1:
            raise VoxsegError(
                f"{path}: a SeqSeg seed file with {len(data)} cases ({', '.join(names[:8])}"
                f"{', ...' if len(names) > 8 else ''}); say which one (--case)"
            )
        entry = data[0]
    else:
        matches = [e for e in data if str(e["name"]) == case]
        if not matches:
            raise VoxsegError(
                f"{path}: no case {case!r} among {', '.join(names[:8])}"
                f"{', ...' if len(names) > 8 else ''}"
            )
        entry = matches[0]
    seeds = []
    for i, s in enumerate(entry["seeds"] or []):
        try:
            before, point, r = np.asarray(s[0], float), np.asarray(s[1], float), float(s[2])
            seeds.append(Seed(point, r, point - before))
        except (IndexError, ValueError, TypeError) as exc:
            raise VoxsegError(
                f"{path}: case {entry['name']!r} seed {i} is not "
                f"[[x0, y0, z0], [x1, y1, z1], radius] ({exc})"
            ) from exc
    if not seeds:
        raise VoxsegError(
            f"{path}: case {entry['name']!r} has no seeds (SeqSeg then seeds from the "
            "reference centerline; voxseg needs a seed)"
        )
    return seeds


def _from_vtp(path: Path) -> list[Seed]:
    from voxseg.io import read_vtp

    poly = read_vtp(path)
    if poly.lines:
        raise VoxsegError(
            f"{path}: holds {len(poly.lines)} polyline(s), a centerline rather than seed points; "
            "give a VTP of points only (or a JSON or .mrk.json seed file)"
        )
    radius = next((poly.point_data[k] for k in RADIUS_ARRAYS if k in poly.point_data), None)
    direction = next((poly.point_data[k] for k in DIRECTION_ARRAYS if k in poly.point_data), None)
    if direction is not None:
        direction = np.asarray(direction, dtype=float).reshape(len(poly.points), -1)
        if direction.shape[1] != 3:
            raise VoxsegError(f"{path}: the direction array needs 3 components per point")
    return [
        Seed(
            p,
            None if radius is None else float(np.ravel(radius)[i]),
            None if direction is None else direction[i],
        )
        for i, p in enumerate(poly.points)
    ]


def _from_slicer(path: Path, data: dict[str, Any]) -> list[Seed]:
    seeds = []
    for m, markup in enumerate(data.get("markups") or []):
        system = str(markup.get("coordinateSystem", "LPS")).upper()
        if system not in ("LPS", "RAS"):
            raise VoxsegError(f"{path}: markup {m} has coordinate system {system!r}")
        flip = np.array([-1.0, -1.0, 1.0]) if system == "RAS" else np.ones(3)
        points = [
            flip * np.asarray(p["position"], dtype=float)
            for p in markup.get("controlPoints") or []
            if p.get("positionStatus", "defined") == "defined"
        ]
        kind = str(markup.get("type", "Fiducial"))
        if kind == "Fiducial":
            seeds += [Seed(p) for p in points]
        elif kind == "Line":
            if len(points) != 2:
                raise VoxsegError(f"{path}: line markup {m} needs 2 points, has {len(points)}")
            seeds.append(Seed(points[0], None, points[1] - points[0]))
        else:
            raise VoxsegError(
                f"{path}: markup {m} is a {kind}; seeds are a point list (Fiducial) or a "
                "Line (from the seed towards the vessel)"
            )
    return seeds
