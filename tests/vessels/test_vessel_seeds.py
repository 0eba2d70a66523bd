"""Seeds where users put them, on a small generated tree with a known centerline: the inlet
of a tree that starts inside the image, the middle of a segment with and without a
direction, near the bifurcation, off the vessel; and the short-trace warnings."""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.errors import VoxsegError
from voxseg.io import Geometry, Image
from voxseg.vessels import OracleSegmenter, Seed, TracingConfig, trace
from voxseg.vessels.centerline import Centerline, CenterlineBranch
from voxseg.vessels.metrics import centerline_overlap

SPACING = (0.6, 0.6, 0.6)


@pytest.fixture
def tree(tubes):
    """A Y-shaped tree on an oblique grid: the trunk (r 2.0 mm, rounded end) starts 3.5 mm
    inside the low-z face, so its wall ends 1.5 mm inside the field of view (a tree whose
    inlet a user clicks), and splits into two children (r 1.5 mm) that end inside the image."""
    g = Geometry((64, 40, 40), SPACING, (-4.0, 12.0, 30.0), tubes.oblique(15))

    def at(index) -> np.ndarray:
        return g.index_to_physical(np.asarray(index, dtype=float))

    root, junction = at((3.5 / SPACING[0], 20, 20)), at((30, 20, 20))
    tips = at((58, 9, 20)), at((58, 31, 20))
    ref = [(np.linspace(root, junction, 40), np.full(40, 2.0))]
    ref += [(np.linspace(junction, tip, 40), np.full(40, 1.5)) for tip in tips]
    truth = tubes.rasterise(g, [(p[[0, -1]], r[[0, -1]]) for p, r in ref])  # straight pieces
    image = Image.from_geometry(truth.array.astype(np.float32)[None], g)
    centerline = Centerline(
        [CenterlineBranch(i, -1 if i == 0 else 0, p, r) for i, (p, r) in enumerate(ref)]
    ).to_polydata()
    axis = (junction - root) / np.linalg.norm(junction - root)
    return {"image": image, "truth": truth, "ref": ref, "cl": centerline, "axis": axis}


def _overlap(result, tree) -> float:
    return centerline_overlap(result.segmentation, tree["cl"])


def _along(tree, mm: float) -> np.ndarray:
    """The trunk's centerline point ``mm`` from the root."""
    root = tree["ref"][0][0][0]
    return root + mm * tree["axis"]


def test_seed_at_a_closed_inlet_traces_the_whole_tree(tree):
    # The seed 0.8 mm from the trunk's closed end, pointing into the vessel: the box behind
    # the seed has no open end, which used to stop the trace after one step.
    seed = Seed(_along(tree, 0.8), 2.0, tree["axis"])
    result = trace(tree["image"], [seed], OracleSegmenter(tree["truth"]))
    assert sum(s.status == "ok" for s in result.steps) > 10
    assert _overlap(result, tree) > 0.95
    ends = [s for s in result.steps if s.status == "stopped"]
    tips = np.array([tree["ref"][1][0][-1], tree["ref"][2][0][-1]])
    # Both children are followed to their ends.
    assert ends[1].branch == 1 and ends[1].reason == "dead end (fewer than 2 caps)"  # backwards
    stops = np.array([s.point for s in ends])
    assert all(np.linalg.norm(stops - tip, axis=1).min() < 3.0 for tip in tips)
    assert result.warnings == []


def test_mid_segment_seed_with_a_direction_traces_both_ways(tree):
    seed = Seed(_along(tree, 9.0), 2.0, tree["axis"])
    result = trace(tree["image"], [seed], OracleSegmenter(tree["truth"]))
    assert _overlap(result, tree) > 0.95
    # The backward branch reaches the root (the trunk behind the seed is traced too).
    root = tree["ref"][0][0][0]
    assert min(np.linalg.norm(np.array(s.point) - root) for s in result.steps) < 2 * 2.0
    forward_only = trace(
        tree["image"], [seed], OracleSegmenter(tree["truth"]), TracingConfig(both_ways=False)
    )
    assert _overlap(forward_only, tree) < _overlap(result, tree) - 0.05


def test_mid_segment_seed_without_direction(tree):
    seed = Seed(_along(tree, 9.0), 2.0)
    result = trace(tree["image"], [seed], OracleSegmenter(tree["truth"]))
    assert _overlap(result, tree) > 0.95
    assert result.warnings == []


def test_seed_near_the_bifurcation_without_direction(tree):
    junction = tree["ref"][0][0][-1]
    seed = Seed(junction - 1.0 * tree["axis"], 2.0)
    result = trace(tree["image"], [seed], OracleSegmenter(tree["truth"]))
    assert _overlap(result, tree) > 0.95


def test_rough_direction_is_enough(tree):
    # 40 degrees off the vessel axis.
    other = np.cross(tree["axis"], [0.0, 0.0, 1.0])
    rough = np.cos(np.radians(40)) * tree["axis"] + np.sin(np.radians(40)) * other / np.linalg.norm(
        other
    )
    result = trace(
        tree["image"], [Seed(_along(tree, 0.8), 2.0, rough)], OracleSegmenter(tree["truth"])
    )
    assert _overlap(result, tree) > 0.95


def test_seed_outside_the_vessel_is_a_clear_error(tree):
    normal = np.cross(tree["axis"], [0.0, 0.0, 1.0])
    normal /= np.linalg.norm(normal)
    off = _along(tree, 9.0) + 6.0 * normal  # 4 mm outside the 2 mm wall
    assert (
        tree["truth"].array[
            tuple(np.round(tree["image"].geometry.physical_to_index(off)).astype(int))
        ]
        == 0
    )
    with pytest.raises(VoxsegError, match=r"seed 0 at \(.*\) mm: no vessel within 2 mm"):
        trace(tree["image"], [Seed(off, 2.0, tree["axis"])], OracleSegmenter(tree["truth"]))


def test_seed_outside_the_image_is_a_clear_error(tree):
    far = _along(tree, -30.0)
    with pytest.raises(VoxsegError, match="seed 0 .* lies outside the image"):
        trace(tree["image"], [Seed(far, 2.0)], OracleSegmenter(tree["truth"]))


def test_short_trace_warns_with_the_reason_of_every_branch(tree):
    seed = Seed(_along(tree, 9.0), 2.0, tree["axis"])
    short = trace(
        tree["image"], [seed], OracleSegmenter(tree["truth"]), TracingConfig(max_steps_per_branch=1)
    )
    text = " ".join(short.warnings)
    assert any("2 successful step(s), fewer than min_steps=3" in w for w in short.warnings)
    assert any("every branch stopped for the same reason: step limit" in w for w in short.warnings)
    assert "branch 0: 1 step(s), step limit of the branch reached" in text
    assert "branch 1: 1 step(s), step limit of the branch reached" in text
    assert short.steps_json()["warnings"] == short.warnings


def test_every_branch_failing_the_same_way_warns(tree):
    oracle = OracleSegmenter(tree["truth"])
    calls = {"n": 0}

    def fails_after_a_while(sub: Image) -> Image:
        calls["n"] += 1
        if calls["n"] > 8:
            return sub.with_array(np.zeros(sub.shape, np.float32))
        return oracle(sub)

    seed = Seed(_along(tree, 0.8), 2.0, tree["axis"])
    result = trace(tree["image"], [seed], fails_after_a_while, TracingConfig(both_ways=False))
    reasons = {e["reason"] for e in result.branch_ends()}
    assert reasons == {"no vessel at the box centre"}
    assert any("every branch stopped for the same reason" in w for w in result.warnings)


def test_seed_without_radius_gets_the_vessel_radius(tree):
    seed = Seed(_along(tree, 9.0) + np.array([0.3, -0.2, 0.1]))  # off the axis by 0.37 mm
    result = trace(tree["image"], [seed], OracleSegmenter(tree["truth"]))
    assert abs(result.seeds[0].radius - 2.0) < 0.35
    assert _overlap(result, tree) > 0.95


def test_read_seqseg_seed_file(tmp_path):
    import json

    from voxseg.vessels import read_seeds

    cases = [
        {"name": "0001", "seeds": [[[0.0, 0.0, 0.0], [0.0, 3.0, 4.0], 1.2]]},
        {"name": "0002", "seeds": [[[1.0, 1.0, 1.0], [1.0, 1.0, 3.0], 2.5]]},
    ]
    path = tmp_path / "test.json"
    path.write_text(json.dumps(cases))
    (seed,) = read_seeds(path, case="0001")
    # SeqSeg starts at the second point, heading away from the first.
    np.testing.assert_allclose(seed.point, [0, 3, 4])
    np.testing.assert_allclose(seed.direction, [0, 0.6, 0.8])
    assert seed.radius == 1.2
    with pytest.raises(VoxsegError, match="2 cases .*0001, 0002.*--case"):
        read_seeds(path)
    with pytest.raises(VoxsegError, match="no case '0003'"):
        read_seeds(path, case="0003")


def test_read_vtp_point_list(tmp_path):
    from voxseg.io import PolyData, write_vtp
    from voxseg.vessels import read_seeds

    points = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    write_vtp(
        PolyData(points, point_data={"MaximumInscribedSphereRadius": np.array([1.5, 0.8])}),
        tmp_path / "seeds.vtp",
    )
    seeds = read_seeds(tmp_path / "seeds.vtp")
    np.testing.assert_allclose([s.point for s in seeds], points)
    assert [s.radius for s in seeds] == [1.5, 0.8]
    assert all(s.direction is None for s in seeds)
    write_vtp(PolyData(points), tmp_path / "bare.vtp")
    assert [s.radius for s in read_seeds(tmp_path / "bare.vtp", radius=2.0)] == [2.0, 2.0]
    write_vtp(PolyData(points, lines=[np.array([0, 1])]), tmp_path / "centerline.vtp")
    with pytest.raises(VoxsegError, match="polyline.*a centerline rather than seed points"):
        read_seeds(tmp_path / "centerline.vtp")


def test_read_json_point_list(tmp_path):
    from voxseg.vessels import read_seeds

    (tmp_path / "points.json").write_text("[[1, 2, 3], [4, 5, 6]]")
    seeds = read_seeds(tmp_path / "points.json")
    np.testing.assert_allclose([s.point for s in seeds], [[1, 2, 3], [4, 5, 6]])
    assert all(s.radius is None and s.direction is None for s in seeds)


def test_read_slicer_markups(tmp_path):
    import json

    from voxseg.vessels import read_seeds

    def markup(kind, system, positions):
        return {
            "type": kind,
            "coordinateSystem": system,
            "controlPoints": [{"position": p, "positionStatus": "defined"} for p in positions],
        }

    doc = {
        "@schema": "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/"
        "Markups/Resources/Schema/markups-schema-v1.0.3.json#",
        "markups": [
            markup("Fiducial", "RAS", [[10.0, 20.0, 30.0]]),
            markup("Line", "LPS", [[0.0, 0.0, 0.0], [0.0, 0.0, -5.0]]),
        ],
    }
    path = tmp_path / "seeds.mrk.json"
    path.write_text(json.dumps(doc))
    fiducial, line = read_seeds(path)
    np.testing.assert_allclose(fiducial.point, [-10, -20, 30])  # RAS → LPS
    assert fiducial.direction is None
    np.testing.assert_allclose(line.point, [0, 0, 0])
    np.testing.assert_allclose(line.direction, [0, 0, -1])
    doc["markups"] = [markup("Curve", "LPS", [[0.0, 0.0, 0.0]])]
    path.write_text(json.dumps(doc))
    with pytest.raises(VoxsegError, match="markup 0 is a Curve"):
        read_seeds(path)


def test_seed_pointing_out_of_the_vessel_still_traces_it(tree):
    # At the inlet with the direction reversed: forwards is a dead end at once, backwards
    # (from the same seed) follows the tree.
    seed = Seed(_along(tree, 0.8), 2.0, -tree["axis"])
    result = trace(tree["image"], [seed], OracleSegmenter(tree["truth"]))
    assert result.branch_ends()[0]["steps"] == 0
    assert _overlap(result, tree) > 0.95
