"""VTP centerlines and meshes: round trips, VTK interoperability, mask surfaces."""

from __future__ import annotations

import numpy as np
import pytest
import vtk
from scipy.spatial.transform import Rotation
from vtkmodules.util import numpy_support

from voxseg.errors import VoxsegError
from voxseg.io import Geometry, Image, PolyData, mask_to_surface, read_vtp, write_vtp

ROTATION = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()


def _centerlines(rng) -> PolyData:
    n = 7
    membership = np.zeros((n, 2), dtype=np.int32)
    membership[[0, 1, 2, 3, 4], 0] = 1
    membership[[0, 1, 2, 5, 6], 1] = 1
    return PolyData(
        points=rng.normal(size=(n, 3)) * 10,
        lines=[np.array([0, 1, 2, 3, 4]), np.array([0, 1, 2, 5, 6])],
        polys=np.array([[0, 1, 5], [2, 3, 6]]),
        point_data={
            "MaximumInscribedSphereRadius": rng.random(n) + 0.5,
            "CenterlineId": membership,
            "BifurcationIdTmp": np.array([-1, -1, 0, -1, -1, -1, -1], dtype=np.int32),
            "Tangent": rng.normal(size=(n, 3)).astype(np.float32),
        },
        cell_data={"Label": np.array([1, 2, 3, 4], dtype=np.int64), "Normal": rng.random((4, 3))},
    )


def test_round_trip_keeps_points_cells_and_arrays(tmp_path, rng):
    poly = _centerlines(rng)
    back = read_vtp(write_vtp(poly, tmp_path / "centerlines.vtp"))
    np.testing.assert_array_equal(back.points, poly.points)
    assert len(back.lines) == 2
    for a, b in zip(back.lines, poly.lines, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.polys, poly.polys)
    assert set(back.point_data) == set(poly.point_data)
    for name, arr in poly.point_data.items():
        assert back.point_data[name].dtype == arr.dtype
        np.testing.assert_array_equal(back.point_data[name], arr)
    for name, arr in poly.cell_data.items():
        np.testing.assert_array_equal(back.cell_data[name], arr)
    assert back.point_data["CenterlineId"].shape == (7, 2)


def test_written_file_is_compressed_binary_readable_by_vtk(tmp_path, rng):
    poly = _centerlines(rng)
    path = write_vtp(poly, tmp_path / "c.vtp")
    head = path.read_bytes()[:400].decode("latin-1")
    assert 'compressor="vtkZLibDataCompressor"' in head
    assert list(tmp_path.iterdir()) == [path]
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    out = reader.GetOutput()
    assert (out.GetNumberOfLines(), out.GetNumberOfPolys()) == (2, 2)
    radius = numpy_support.vtk_to_numpy(out.GetPointData().GetArray("MaximumInscribedSphereRadius"))
    np.testing.assert_array_equal(radius, poly.point_data["MaximumInscribedSphereRadius"])


def test_reads_vtk_made_mesh_and_triangulates_quads(tmp_path):
    plane = vtk.vtkPlaneSource()
    plane.SetResolution(3, 2)  # 6 quads
    plane.Update()
    writer = vtk.vtkXMLPolyDataWriter()
    writer.SetInputData(plane.GetOutput())
    writer.SetFileName(str(tmp_path / "plane.vtp"))
    writer.Write()
    mesh = read_vtp(tmp_path / "plane.vtp")
    assert mesh.points.shape == (12, 3)
    assert mesh.polys.shape == (12, 3)
    assert "Normals" in mesh.point_data


def test_damaged_files_raise_voxseg_error(tmp_path, rng):
    path = write_vtp(_centerlines(rng), tmp_path / "c.vtp")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VoxsegError, match="c.vtp: cannot read VTP file"):
        read_vtp(path)
    (tmp_path / "junk.vtp").write_text("hello")
    with pytest.raises(VoxsegError, match="junk.vtp: not a VTK XML PolyData"):
        read_vtp(tmp_path / "junk.vtp")
    with pytest.raises(VoxsegError, match="file not found"):
        read_vtp(tmp_path / "absent.vtp")


def test_invalid_polydata_is_refused_before_writing(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        write_vtp(PolyData(points=np.zeros((2, 3)), lines=[np.array([0, 2])]), tmp_path / "a.vtp")
    bad_array = PolyData(points=np.zeros((2, 3)), point_data={"r": np.zeros(3)})
    with pytest.raises(ValueError, match="'r' has 3 rows"):
        write_vtp(bad_array, tmp_path / "b.vtp")
    assert list(tmp_path.iterdir()) == []


def _sphere_mask(geometry: Geometry, radius: float) -> tuple[Image, np.ndarray]:
    index = np.stack(np.meshgrid(*[np.arange(s) for s in geometry.shape], indexing="ij"), -1)
    centre = geometry.index_to_physical((np.asarray(geometry.shape) - 1) / 2 + 0.3)
    inside = np.linalg.norm(geometry.index_to_physical(index) - centre, axis=-1) < radius
    return Image.from_geometry(inside.astype(np.uint8), geometry), centre


def _signed_volume(mesh: PolyData) -> float:
    tri = mesh.points[mesh.polys]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)


@pytest.mark.parametrize(
    "direction",
    [np.eye(3), ROTATION, ROTATION[:, ::-1], np.diag([-1.0, 1.0, 1.0])],
    ids=["identity", "oblique", "oblique-left-handed", "flipped"],
)
def test_sphere_surface_lies_on_the_analytic_sphere(direction):
    geometry = Geometry((22, 36, 32), (1.5, 0.6, 0.7), (10.0, -20.0, 5.0), direction)
    radius = 7.5
    mask, centre = _sphere_mask(geometry, radius)
    mesh = mask_to_surface(mask)
    distance = np.abs(np.linalg.norm(mesh.points - centre, axis=1) - radius)
    assert distance.mean() < 0.5 * min(geometry.spacing)
    # Outward-facing triangles: the divergence-theorem volume is positive and close.
    assert _signed_volume(mesh) == pytest.approx(4 / 3 * np.pi * radius**3, rel=0.03)


def test_smoothing_brings_the_surface_closer_to_the_sphere():
    geometry = Geometry((20, 20, 20), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), ROTATION)
    mask, centre = _sphere_mask(geometry, 6.0)
    errors = []
    for iterations in (0, 20):
        points = mask_to_surface(mask, smoothing_iterations=iterations).points
        errors.append(np.abs(np.linalg.norm(points - centre, axis=1) - 6.0).mean())
    assert errors[1] < errors[0]


def test_mask_touching_the_border_gives_a_closed_surface():
    mask = Image(np.ones((4, 5, 6), dtype=bool), spacing=(2.0, 1.0, 1.0))
    mesh = mask_to_surface(mask, smoothing_iterations=0)
    edges = np.sort(mesh.polys[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).all()
    assert _signed_volume(mesh) == pytest.approx(8 * 5 * 6, rel=0.1)


def test_probability_map_is_contoured_at_level_and_empty_mask_gives_empty_mesh():
    z = np.arange(12, dtype=np.float32)[:, None, None] * np.ones((1, 6, 6), np.float32)
    ramp = Image(z / 11.0, spacing=(1.0, 1.0, 1.0), direction=np.eye(3))
    mesh = mask_to_surface(ramp, level=0.5, smoothing_iterations=0)
    # The plane where z / 11 = 0.5 is at index z = 5.5 (array axis z is LPS x here); the
    # padding closes the region above it with a cap at z = 11.5.
    interior = (mesh.points[:, 1] > 0.5) & (mesh.points[:, 1] < 4.5)
    interior &= (mesh.points[:, 2] > 0.5) & (mesh.points[:, 2] < 4.5)
    np.testing.assert_allclose(np.unique(mesh.points[interior, 0]), [5.5, 11.5], atol=1e-5)
    empty = mask_to_surface(Image(np.zeros((3, 3, 3), np.uint8)))
    assert empty.points.shape == (0, 3) and empty.num_cells == 0


def test_stl_is_readable_by_vtk_with_the_same_triangles(tmp_path):
    from voxseg.io import write_stl

    points = np.array([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 3]])
    polys = np.array([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    write_stl(PolyData(points, polys=polys), tmp_path / "mesh.stl")
    reader = vtk.vtkSTLReader()
    reader.SetFileName(str(tmp_path / "mesh.stl"))
    reader.Update()
    out = reader.GetOutput()
    assert out.GetNumberOfCells() == 4
    got = numpy_support.vtk_to_numpy(out.GetPoints().GetData())
    np.testing.assert_allclose(sorted(map(tuple, got)), sorted(map(tuple, points)))
    with pytest.raises(VoxsegError, match="needs triangles"):
        write_stl(PolyData(points), tmp_path / "lines.stl")


def test_mask_surface_is_that_of_the_mask_as_floats():
    """A label mask is contoured from 0/1 bytes (a quarter of the memory); the surface is the
    one VTK gives the same mask as 0.0/1.0 floats at level 0.5, point for point."""
    geometry = Geometry((22, 36, 32), (1.5, 0.6, 0.7), (10.0, -20.0, 5.0), ROTATION)
    mask, _ = _sphere_mask(geometry, 7.5)
    labels = mask.with_array(mask.array * np.uint8(3))  # any non-zero value is inside
    floats = mask.with_array(mask.array.astype(np.float32))
    for iterations in (0, 20):
        got = mask_to_surface(labels, smoothing_iterations=iterations)
        want = mask_to_surface(floats, level=0.5, smoothing_iterations=iterations)
        np.testing.assert_array_equal(got.polys, want.polys)
        np.testing.assert_allclose(got.points, want.points, atol=1e-9)
