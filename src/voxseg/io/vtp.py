"""Polygonal data (centerlines and surface meshes) in VTK's XML ``.vtp`` format.

:class:`PolyData` is the in-memory form: ``points`` are physical LPS millimetres, the same
space as :meth:`voxseg.io.image.Geometry.index_to_physical`, so a mesh or a centerline
lines up with the image it came from in any viewer that honours the image's geometry
(3D Slicer, ParaView with an LPS image, SimpleITK resampling).

Centerline convention (VMTK ``vmtkcenterlines`` and SeqSeg use the same names), stored as
point arrays of :attr:`PolyData.point_data`:

* ``MaximumInscribedSphereRadius`` ``(N,)`` float: the vessel radius at each point (mm).
* ``CenterlineId`` ``(N, n_lines)`` int 0/1: point ``i`` belongs to centerline ``j`` when
  ``CenterlineId[i, j] == 1`` (branches share the points of their common trunk).
* ``BifurcationIdTmp`` ``(N,)`` int: the id of the bifurcation a point lies in, ``-1``
  outside bifurcations.

Each polyline of :attr:`PolyData.lines` is one centerline, from the inlet to an outlet.
Cell arrays have one row per cell, lines first and then triangles (VTK's own order).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import vtk
from vtkmodules.util import numpy_support

from voxseg.errors import VoxsegError
from voxseg.io.image import Image

CENTERLINE_RADIUS = "MaximumInscribedSphereRadius"
CENTERLINE_ID = "CenterlineId"
BRANCH_ID = "BranchIdTmp"
BIFURCATION_ID = "BifurcationIdTmp"

_VTK_LOCK = threading.Lock()


@dataclass
class PolyData:
    """Points in physical LPS millimetres with polylines, triangles and per-point/cell arrays."""

    points: np.ndarray
    lines: list[np.ndarray] = field(default_factory=list)
    polys: np.ndarray | None = None
    point_data: dict[str, np.ndarray] = field(default_factory=dict)
    cell_data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=np.float64).reshape(-1, 3)
        self.lines = [np.asarray(line, dtype=np.int64).ravel() for line in self.lines]
        if self.polys is not None:
            self.polys = np.asarray(self.polys, dtype=np.int64).reshape(-1, 3)

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_cells(self) -> int:
        """Number of cells: polylines plus triangles."""
        return len(self.lines) + (0 if self.polys is None else int(self.polys.shape[0]))

    def validate(self) -> None:
        """Raise ``ValueError`` when indices or array lengths do not match the points/cells."""
        n = self.num_points
        cells = self.lines + ([self.polys.ravel()] if self.polys is not None else [])
        for idx in cells:
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise ValueError(f"cell refers to a point outside 0..{n - 1}")
        for name, arr in self.point_data.items():
            if len(arr) != n:
                raise ValueError(f"point array {name!r} has {len(arr)} rows, expected {n}")
        for name, arr in self.cell_data.items():
            if len(arr) != self.num_cells:
                raise ValueError(
                    f"cell array {name!r} has {len(arr)} rows, expected {self.num_cells}"
                )


def write_vtp(poly: PolyData, path: str | os.PathLike[str]) -> Path:
    """Write ``poly`` to a binary, zlib-compressed ``.vtp`` file, atomically."""
    poly.validate()
    path = Path(path)
    writer = vtk.vtkXMLPolyDataWriter()
    writer.SetInputData(to_vtk(poly))
    writer.SetDataModeToBinary()
    writer.SetCompressorTypeToZLib()
    writer.SetHeaderTypeToUInt64()
    return _write_atomically(writer, path, path.suffix or ".vtp", "VTP")


def write_stl(poly: PolyData, path: str | os.PathLike[str]) -> Path:
    """Write the triangles of ``poly`` to a binary ``.stl`` file (LPS mm), atomically; STL
    holds no lines and no point arrays."""
    poly.validate()
    if poly.polys is None or len(poly.polys) == 0:
        raise VoxsegError(f"{path}: an STL file needs triangles; the mesh has none")
    writer = vtk.vtkSTLWriter()
    writer.SetInputData(to_vtk(PolyData(poly.points, polys=poly.polys)))
    writer.SetFileTypeToBinary()
    return _write_atomically(writer, Path(path), ".stl", "STL")


def _write_atomically(writer: Any, path: Path, suffix: str, kind: str) -> Path:
    """Run a VTK ``writer`` (input and format set) into a temporary file beside ``path``,
    then move it there; VTK's error message becomes a :class:`VoxsegError`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{suffix}")
    writer.SetFileName(str(tmp))
    try:
        with _vtk_messages() as messages:
            ok = writer.Write()
        if ok != 1 or writer.GetErrorCode() != 0:
            raise VoxsegError(f"{path}: cannot write {kind} file ({_last_error(messages)})")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_vtp(path: str | os.PathLike[str]) -> PolyData:
    """Read a ``.vtp`` file (polygons other than triangles are triangulated)."""
    path = Path(path)
    if not path.is_file():
        raise VoxsegError(f"{path}: file not found")
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    errors: list[str] = []
    reader.AddObserver("ErrorEvent", lambda *_: errors.append("error"))
    with _vtk_messages() as messages:
        if not reader.CanReadFile(str(path)):
            raise VoxsegError(f"{path}: not a VTK XML PolyData (.vtp) file")
        reader.Update()
    if errors or reader.GetErrorCode() != 0:
        raise VoxsegError(
            f"{path}: cannot read VTP file, it is damaged or truncated ({_last_error(messages)})"
        )
    return from_vtk(reader.GetOutput())


def to_vtk(poly: PolyData) -> vtk.vtkPolyData:
    """Convert to a ``vtkPolyData`` (deep copies of every array)."""
    out = vtk.vtkPolyData()
    points = vtk.vtkPoints()
    points.SetDataTypeToDouble()
    points.SetData(numpy_support.numpy_to_vtk(poly.points, deep=True))
    out.SetPoints(points)
    if poly.lines:
        out.SetLines(_cell_array([len(line) for line in poly.lines], np.concatenate(poly.lines)))
    if poly.polys is not None and len(poly.polys):
        out.SetPolys(_cell_array([3] * len(poly.polys), poly.polys.ravel()))
    for name, arr in poly.point_data.items():
        out.GetPointData().AddArray(_to_vtk_array(name, arr))
    for name, arr in poly.cell_data.items():
        out.GetCellData().AddArray(_to_vtk_array(name, arr))
    return out


def from_vtk(data: vtk.vtkPolyData) -> PolyData:
    """Convert a ``vtkPolyData``; vertex cells are dropped, strips and polygons triangulated."""
    polys = data.GetPolys()
    needs_triangles = data.GetNumberOfStrips() > 0 or (
        polys.GetNumberOfCells() > 0 and polys.IsHomogeneous() != 3
    )
    if needs_triangles:
        tri = vtk.vtkTriangleFilter()
        tri.SetInputData(data)
        tri.PassVertsOn()
        tri.PassLinesOn()
        tri.Update()
        data = tri.GetOutput()
    n_pts = data.GetNumberOfPoints()
    points = (
        numpy_support.vtk_to_numpy(data.GetPoints().GetData()).astype(np.float64)
        if n_pts
        else np.zeros((0, 3))
    )
    offsets, conn = _cell_arrays(data.GetLines())
    lines = [conn[a:b].copy() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    p_off, p_conn = _cell_arrays(data.GetPolys())
    triangles = p_conn.reshape(-1, 3) if len(p_off) > 1 else None
    n_verts = data.GetNumberOfVerts()
    keep = slice(n_verts, n_verts + len(lines) + (0 if triangles is None else len(triangles)))
    return PolyData(
        points=points,
        lines=lines,
        polys=triangles,
        point_data=_arrays(data.GetPointData()),
        cell_data={k: v[keep] for k, v in _arrays(data.GetCellData()).items()},
    )


def mask_to_surface(image: Image, level: float = 0.5, smoothing_iterations: int = 20) -> PolyData:
    """Triangle surface of a mask, in physical LPS millimetres.

    Boolean and integer arrays are binarised (non-zero is inside); float arrays (e.g.
    probabilities) are contoured at ``level``. The contour is found with VTK's flying edges
    (marching cubes, Schroeder et al. 2015) on a one-voxel zero-padded copy, so surfaces
    touching the border are closed, in a frame scaled by the spacing; windowed-sinc smoothing
    (Taubin et al. 1996, little shrinkage) runs in that frame, which is an isometry of
    physical space, and the points are then placed by the image's origin and direction
    (oblique and flipped directions included; triangle winding is kept outward-consistent
    for left-handed directions). An empty mask gives an empty :class:`PolyData`.
    """
    if image.array.ndim != 3:
        raise ValueError(f"mask_to_surface needs a [z, y, x] mask; got shape {image.array.shape}")
    arr = image.array
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        # 0/1 bytes contour at 0.5 exactly as 0.0/1.0 floats do, at a quarter of the memory
        padded, level = np.pad((arr != 0).view(np.uint8), 1, mode="constant"), 0.5
    else:
        values = arr.astype(np.float32, copy=False)
        padded = np.pad(values, 1, mode="constant", constant_values=min(0.0, float(values.min())))
        del values
    spacing_xyz = np.asarray(image.spacing, dtype=float)[::-1]
    vol = vtk.vtkImageData()
    vol.SetDimensions(*padded.shape[::-1])
    vol.SetSpacing(*spacing_xyz)
    vol.SetOrigin(*(-spacing_xyz))
    # shared with VTK, not copied: ``padded`` outlives the filter below
    vol.GetPointData().SetScalars(numpy_support.numpy_to_vtk(padded.ravel(), deep=False))

    contour = vtk.vtkFlyingEdges3D()
    contour.SetInputData(vol)
    contour.SetValue(0, float(level))
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    surface = contour.GetOutput()
    if surface.GetNumberOfPoints() == 0:
        return PolyData(points=np.zeros((0, 3)), polys=np.zeros((0, 3), dtype=np.int64))
    if smoothing_iterations > 0:
        smooth = vtk.vtkWindowedSincPolyDataFilter()
        smooth.SetInputData(surface)
        smooth.SetNumberOfIterations(int(smoothing_iterations))
        smooth.SetPassBand(0.1)
        smooth.BoundarySmoothingOff()
        smooth.FeatureEdgeSmoothingOff()
        smooth.NonManifoldSmoothingOn()
        smooth.NormalizeCoordinatesOn()
        smooth.Update()
        surface = smooth.GetOutput()
    mesh = from_vtk(surface)
    # Scaled (x, y, z) frame → LPS: physical = origin + direction[:, ::-1] @ p_xyz.
    rot = image.direction[:, ::-1]
    mesh.points = mesh.points @ rot.T + np.asarray(image.origin)
    if np.linalg.det(rot) < 0 and mesh.polys is not None:
        mesh.polys = mesh.polys[:, ::-1].copy()
    mesh.point_data.clear()
    mesh.cell_data.clear()
    return mesh


def _cell_array(sizes: list[int], connectivity: np.ndarray) -> vtk.vtkCellArray:
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    cells = vtk.vtkCellArray()
    cells.SetData(
        numpy_support.numpy_to_vtkIdTypeArray(offsets, deep=True),
        numpy_support.numpy_to_vtkIdTypeArray(
            np.ascontiguousarray(connectivity, dtype=np.int64), deep=True
        ),
    )
    return cells


def _cell_arrays(cells: vtk.vtkCellArray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (length n_cells + 1) and connectivity of a ``vtkCellArray`` as int64."""
    if cells is None or cells.GetNumberOfCells() == 0:
        return np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)
    offsets = numpy_support.vtk_to_numpy(cells.GetOffsetsArray()).astype(np.int64)
    conn = numpy_support.vtk_to_numpy(cells.GetConnectivityArray()).astype(np.int64)
    return offsets, conn


def _to_vtk_array(name: str, arr: np.ndarray) -> vtk.vtkDataArray:
    arr = np.asarray(arr)
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if arr.ndim not in (1, 2):
        raise ValueError(f"array {name!r} must have shape (n,) or (n, k); got {arr.shape}")
    out = numpy_support.numpy_to_vtk(np.ascontiguousarray(arr), deep=True)
    out.SetName(name)
    return out


def _arrays(data: vtk.vtkFieldData) -> dict[str, np.ndarray]:
    """Every numeric array of point or cell data (string arrays are skipped)."""
    out = {}
    for i in range(data.GetNumberOfArrays()):
        arr = data.GetArray(i)
        if arr is None:
            continue
        out[arr.GetName() or f"array_{i}"] = numpy_support.vtk_to_numpy(arr).copy()
    return out


@contextmanager
def _vtk_messages() -> Iterator[vtk.vtkStringOutputWindow]:
    """Collect VTK's error messages instead of printing them to stderr."""
    with _VTK_LOCK:
        previous = vtk.vtkOutputWindow.GetInstance()
        window = vtk.vtkStringOutputWindow()
        vtk.vtkOutputWindow.SetInstance(window)
        vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
        try:
            yield window
        finally:
            vtk.vtkOutputWindow.SetInstance(previous)
            vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_INFO)


def _last_error(window: vtk.vtkStringOutputWindow) -> str:
    """The first VTK error message line, without source file and object address."""
    for line in window.GetOutput().splitlines():
        line = line.strip()
        if line and not line.startswith("ERROR: In ") and "): " in line:
            return line.split("): ", 1)[1]
    return "VTK reported an error"


def tree_polydata(branches: Sequence[Any]) -> PolyData:
    """VMTK-style centerline of a branch tree: one polyline from the root to each outlet over
    shared points (a child's first point is its parent's last), with the point arrays
    ``MaximumInscribedSphereRadius``, ``CenterlineId`` (membership), ``BifurcationIdTmp``
    (points within the radius of a branching point, else -1) and ``BranchIdTmp``.

    ``branches`` are objects with ``id``, ``parent`` (-1 for a root), ``children``,
    ``points`` (``(n, 3)`` LPS mm) and ``radii`` (``(n,)`` mm)."""
    if not branches:
        return PolyData(points=np.zeros((0, 3)))
    by_id = {b.id: b for b in branches}
    index_of: dict[int, np.ndarray] = {}
    points, radii, branch_of = [], [], []
    n = 0
    order: list[Any] = []
    queue = [b for b in branches if b.parent < 0]
    while queue:
        b = queue.pop(0)
        order.append(b)
        queue.extend(by_id[c] for c in b.children)
    for b in order:
        if b.parent < 0:
            index_of[b.id] = np.arange(n, n + len(b.points))
            pts, rad = b.points, b.radii
        else:
            index_of[b.id] = np.r_[index_of[b.parent][-1], np.arange(n, n + len(b.points) - 1)]
            pts, rad = b.points[1:], b.radii[1:]
        points.append(pts)
        radii.append(rad)
        branch_of.append(np.full(len(pts), b.id))
        n += len(pts)
    lines = []
    for leaf in (b for b in order if not b.children):
        parts, node = [], leaf
        while True:
            idx = index_of[node.id]
            parts.insert(0, idx if not parts else idx[:-1])
            if node.parent < 0:
                break
            node = by_id[node.parent]
        lines.append(np.concatenate(parts))
    all_points = np.concatenate(points)
    membership = np.zeros((n, len(lines)), dtype=np.int32)
    for j, line in enumerate(lines):
        membership[line, j] = 1
    bifurcation = np.full(n, -1, dtype=np.int32)
    for j, b in enumerate(b for b in order if len(b.children) >= 2):
        junction, r = b.points[-1], b.radii[-1]
        for member in [b.id, *b.children]:
            idx = index_of[member]
            near = np.linalg.norm(all_points[idx] - junction, axis=1) <= r
            bifurcation[idx[near]] = j
    branch_ids = np.concatenate(branch_of).astype(np.int32)
    branch_ids[bifurcation >= 0] = -1
    return PolyData(
        points=all_points,
        lines=lines,
        point_data={
            CENTERLINE_RADIUS: np.concatenate(radii).astype(np.float64),
            CENTERLINE_ID: membership,
            BIFURCATION_ID: bifurcation,
            BRANCH_ID: branch_ids,
        },
    )
