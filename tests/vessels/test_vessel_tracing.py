"""The tracing loop's rules, on analytic tubes read by an oracle local segmenter."""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.errors import VoxsegError
from voxseg.io import Geometry, Image, identity_direction
from voxseg.vessels import OracleSegmenter, Seed, TracingConfig, read_seeds, trace
from voxseg.vessels.centerline import Centerline, CenterlineBranch
from voxseg.vessels.metrics import centerline_overlap


def _grid(shape=(48, 32, 32), spacing=(0.8, 0.7, 0.7), direction=None) -> Geometry:
    return Geometry(
        shape, spacing, (5.0, -3.0, 7.0), identity_direction() if direction is None else direction
    )


def _at(g: Geometry, index) -> np.ndarray:
    return g.index_to_physical(np.asarray(index, dtype=float))


def _setup(tubes, g, ref):
    truth = tubes.rasterise(g, ref)
    image = Image.from_geometry(truth.array.astype(np.float32)[None], g)
    return image, truth


def _reference_polydata(ref) -> object:
    branches = [CenterlineBranch(i, -1, p, r) for i, (p, r) in enumerate(ref)]
    return Centerline(branches).to_polydata()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_straight_tube_runs_to_the_image_border(tubes):
    g = _grid(direction=tubes.oblique(10))
    axis = g.direction_matrix[:, 0]
    a, b = _at(g, (-10, 15.5, 15.5)), _at(g, (60, 15.5, 15.5))
    ref = [(np.linspace(a, b, 50), np.full(50, 2.0))]
    image, truth = _setup(tubes, g, ref)
    seed = Seed(_at(g, (10, 15.5, 15.5)), 2.0, axis)
    result = trace(image, [seed], OracleSegmenter(truth), TracingConfig(both_ways=False))
    steps = result.steps
    assert {s.branch for s in steps} == {0}
    assert steps[-1].status == "stopped" and steps[-1].reason == "reached the image border"
    pts = np.array([s.point for s in steps])
    # Every step lies on the axis and the walk only moves forward.
    assert tubes.distance(pts, ref[0][0]).max() < 0.6
    assert np.all(np.diff((pts - seed.point) @ axis) > 0)
    # Step length ≈ 1.5 r (4/5 of the 5 r local centerline, from the entry cap).
    assert 1.0 * 2.0 < np.median(np.linalg.norm(np.diff(pts, axis=0), axis=1)) < 2.2 * 2.0
    # Radii estimated from the local masks stay near the truth.
    assert np.all(np.abs(np.array([s.radius for s in steps]) - 2.0) < 0.3)
    assert result.segmentation.geometry.is_close(g)


def test_seed_without_direction_traces_both_ways(tubes):
    g = _grid()
    ref = [(np.linspace(_at(g, (-10, 15, 16)), _at(g, (60, 15, 16)), 50), np.full(50, 2.0))]
    image, truth = _setup(tubes, g, ref)
    result = trace(image, [Seed(_at(g, (24, 15, 16)), 2.0)], OracleSegmenter(truth))
    ends = [s for s in result.steps if s.status == "stopped"]
    assert result.num_branches == 2
    assert all(s.reason == "reached the image border" for s in ends)
    assert _dice(result.segmentation.array > 0, truth.array > 0) > 0.95


def test_bifurcation_gives_two_branches_and_dead_ends(tubes):
    g = _grid((48, 40, 40), (0.8, 0.6, 0.6), tubes.oblique(20))
    j = _at(g, (26, 20, 20))
    ez, ey = g.direction_matrix[:, 0], g.direction_matrix[:, 1]
    trunk = np.linspace(_at(g, (-5, 20, 20)), j, 30)
    left = np.linspace(j, j + 12 * ez + 7 * ey, 30)
    right = np.linspace(j, j + 12 * ez - 7 * ey, 30)
    ref = [(trunk, np.full(30, 2.2)), (left, np.full(30, 1.7)), (right, np.full(30, 1.7))]
    image, truth = _setup(tubes, g, ref)
    seed = Seed(_at(g, (6, 20, 20)), 2.2, ez)
    result = trace(image, [seed], OracleSegmenter(truth), TracingConfig(both_ways=False))
    assert result.num_branches == 2
    ends = [s for s in result.steps if s.status == "stopped"]
    assert len(ends) == 2
    assert all(s.reason.startswith("dead end") for s in ends)
    # Each dead end stops near the end of a different child.
    tips = np.array([left[-1], right[-1]])
    for s in ends:
        assert np.min(np.linalg.norm(tips - np.array(s.point), axis=1)) < 3 * 1.7
    assert {int(np.argmin(np.linalg.norm(tips - np.array(s.point), axis=1))) for s in ends} == {
        0,
        1,
    }
    pred = result.segmentation
    assert centerline_overlap(pred, _reference_polydata(ref)) > 0.95
    assert _dice(pred.array > 0, truth.array > 0) > 0.9
    assert result.centerline is not None and len(result.centerline.branches) == 3


def test_dead_end_stops_the_branch(tubes):
    g = _grid()
    end = _at(g, (30, 15.5, 15.5))
    ref = [(np.linspace(_at(g, (-5, 15.5, 15.5)), end, 40), np.full(40, 2.0))]
    image, truth = _setup(tubes, g, ref)
    seed = Seed(_at(g, (5, 15.5, 15.5)), 2.0, g.direction_matrix[:, 0])
    result = trace(image, [seed], OracleSegmenter(truth), TracingConfig(both_ways=False))
    last = result.steps[-1]
    assert last.reason == "dead end (fewer than 2 caps)"
    assert last.caps == 1
    assert np.linalg.norm(np.array(last.point) - end) < 2 * 2.0
    assert result.num_branches == 1


def test_min_radius_stops_a_tapering_vessel(tubes):
    g = _grid((60, 32, 32), (0.5, 0.5, 0.5))
    line = np.linspace(_at(g, (-5, 16, 16)), _at(g, (70, 16, 16)), 60)
    radii = np.linspace(3.0, 0.3, 60)
    image, truth = _setup(tubes, g, [(line, radii)])
    cfg = TracingConfig(min_radius_mm=1.2, both_ways=False)
    seed = Seed(_at(g, (4, 16, 16)), 2.8, g.direction_matrix[:, 0])
    result = trace(image, [seed], OracleSegmenter(truth), cfg)
    last = result.steps[-1]
    assert last.reason.startswith("radius") and last.radius < 1.2
    true_r = np.interp(
        tubes.distance(np.array([last.point]), line[:1])[0],
        np.linspace(0, np.linalg.norm(line[-1] - line[0]), 60),
        radii,
    )
    assert true_r < 1.6  # it stopped where the vessel really is thin
    assert all(s.radius >= 1.2 for s in result.steps[:-1])


def test_step_limits(tubes):
    g = _grid()
    ref = [(np.linspace(_at(g, (-10, 15, 16)), _at(g, (60, 15, 16)), 50), np.full(50, 1.5))]
    image, truth = _setup(tubes, g, ref)
    seed = Seed(_at(g, (4, 15, 16)), 1.5, g.direction_matrix[:, 0])
    per_branch = trace(
        image,
        [seed],
        OracleSegmenter(truth),
        TracingConfig(max_steps_per_branch=4, both_ways=False),
    )
    assert [s.status for s in per_branch.steps] == ["ok"] * 4 + ["stopped"]
    assert per_branch.steps[-1].reason == "step limit of the branch reached"
    limited = trace(image, [seed, seed], OracleSegmenter(truth), TracingConfig(max_steps=3))
    assert sum(s.status == "ok" for s in limited.steps) == 3
    assert limited.steps[-1].reason == "global step limit reached"
    assert limited.num_branches == 1  # the second seed never starts


def test_second_seed_on_a_traced_vessel_stops_inside(tubes):
    g = _grid()
    ref = [(np.linspace(_at(g, (-10, 15, 16)), _at(g, (60, 15, 16)), 50), np.full(50, 2.0))]
    image, truth = _setup(tubes, g, ref)
    ez = g.direction_matrix[:, 0]
    seeds = [Seed(_at(g, (4, 15, 16)), 2.0, ez), Seed(_at(g, (8, 15, 16)), 2.0, ez)]
    cfg = TracingConfig(max_steps_inside=3, both_ways=False)
    result = trace(image, seeds, OracleSegmenter(truth), cfg)
    second = [s for s in result.steps if s.branch == 1]
    assert second[-1].reason == "inside an already traced branch"
    assert len(second) == 3


def test_retry_with_a_larger_box_recovers(tubes):
    g = _grid()
    ref = [(np.linspace(_at(g, (-10, 15, 16)), _at(g, (60, 15, 16)), 50), np.full(50, 2.0))]
    image, truth = _setup(tubes, g, ref)
    oracle = OracleSegmenter(truth)
    calls = {"n": 0}

    def flaky(sub: Image) -> Image:
        calls["n"] += 1
        if calls["n"] == 1:  # the first local prediction misses the vessel
            return sub.with_array(np.zeros(sub.shape, np.float32))
        return oracle(sub)

    seed = Seed(_at(g, (10, 15, 16)), 2.0, g.direction_matrix[:, 0])
    result = trace(image, [seed], flaky)
    assert result.steps[0].attempt == 1 and result.steps[0].status == "ok"
    # Without a retry the seed's first box finds nothing: an error that names the seed.
    with pytest.raises(VoxsegError, match="seed 0 .* no vessel within"):
        trace(image, [seed], _first_call_empty(oracle), TracingConfig(max_retries=0))


def _first_call_empty(oracle):
    state = {"n": 0}

    def seg(sub: Image) -> Image:
        state["n"] += 1
        if state["n"] == 1:
            return sub.with_array(np.zeros(sub.shape, np.float32))
        return oracle(sub)

    return seg


def test_noisy_local_predictions_still_trace(tubes):
    g = _grid()
    ref = [(np.linspace(_at(g, (-10, 15, 16)), _at(g, (60, 15, 16)), 50), np.full(50, 2.0))]
    image, truth = _setup(tubes, g, ref)
    seed = Seed(_at(g, (4, 15, 16)), 2.0, g.direction_matrix[:, 0])
    result = trace(image, [seed], OracleSegmenter(truth, blur=0.7, noise=0.15, seed=3))
    assert result.steps[-1].reason == "reached the image border"
    assert _dice(result.segmentation.array > 0, truth.array > 0) > 0.85


def test_gaussian_weighted_running_average():
    from voxseg.vessels.subvolume import Box
    from voxseg.vessels.tracing import _Assembly

    asm = _Assembly((1, 1, 30), 0.25)
    asm.add(
        np.ones((1, 1, 20), np.float32),
        Box((0, 0, 0), (1, 1, 20), (1, 1, 30)),
        np.array([0, 0, 9.5]),
        (1.0, 1.0, 1.0),
    )
    asm.add(
        np.zeros((1, 1, 20), np.float32),
        Box((0, 0, 10), (1, 1, 30), (1, 1, 30)),
        np.array([0, 0, 19.5]),
        (1.0, 1.0, 1.0),
    )
    p = asm.probabilities()[0, 0]
    np.testing.assert_allclose(p[:10], 1.0)
    np.testing.assert_allclose(p[20:], 0.0)
    assert np.all(np.diff(p[10:20]) < 0)  # overlap: weights shift from one box to the other
    np.testing.assert_allclose(p[14] + p[15], 1.0, atol=1e-6)  # symmetric about the midpoint


@pytest.mark.parametrize(
    "content",
    [
        "[[[1, 2, 3], [0, 0, 2], 1.5]]",
        "[[[1, 2, 3], 1.5]]",
        '{"point": [1, 2, 3], "direction": [0, 0, 1], "radius": 1.5}',
    ],
)
def test_read_seeds_formats(tmp_path, content):
    path = tmp_path / "seeds.json"
    path.write_text(content)
    (seed,) = read_seeds(path)
    np.testing.assert_allclose(seed.point, [1, 2, 3])
    assert seed.radius == 1.5
    if seed.direction is not None:
        np.testing.assert_allclose(seed.direction, [0, 0, 1])


def test_read_seeds_rejects_bad_entries(tmp_path):
    path = tmp_path / "seeds.json"
    path.write_text("[[[1, 2, 3]]]")
    with pytest.raises(VoxsegError, match="seed 0"):
        read_seeds(path)


def test_oracle_samples_the_mask_like_scipy_on_the_whole_array(rng):
    from scipy import ndimage
    from scipy.spatial.transform import Rotation

    for t in range(10):
        g = Geometry(
            (20, 25, 30),
            (0.7, 0.5, 0.9),
            (1.0, -2.0, 3.0),
            Rotation.random(random_state=t).as_matrix(),
        )
        mask = (rng.random(g.shape) > 0.6).astype(np.uint8)
        origin = tuple(g.index_to_physical(rng.uniform(-5, 25, 3)))
        sub = Geometry(
            (9, 11, 7), (0.6,) * 3, origin, Rotation.random(random_state=50 + t).as_matrix()
        )
        got = OracleSegmenter(Image.from_geometry(mask, g))(
            Image.from_geometry(np.zeros(sub.shape, np.float32), sub)
        ).array
        idx = np.stack(np.meshgrid(*[np.arange(n) for n in sub.shape], indexing="ij"), -1)
        coords = g.physical_to_index(sub.index_to_physical(idx.reshape(-1, 3)))
        ref = ndimage.map_coordinates(mask.astype(np.float32), coords.T, order=0, cval=0.0)
        np.testing.assert_array_equal(got, ref.reshape(sub.shape))


def test_block_assembly_matches_a_dense_running_average(rng):
    from voxseg.vessels.subvolume import Box
    from voxseg.vessels.tracing import _Assembly

    shape, spacing = (23, 19, 30), (0.8, 0.6, 0.5)
    asm = _Assembly(shape, 0.25, block=4)
    total, weight = np.zeros(shape), np.zeros(shape)
    for _ in range(6):
        lo = rng.integers(0, np.array(shape) - 5)
        hi = np.minimum(lo + rng.integers(3, 12, 3), shape)
        box = Box(tuple(map(int, lo)), tuple(map(int, hi)), shape)
        centre = (lo + hi - 1) / 2 + rng.normal(0, 0.5, 3)
        prob = rng.random(box.size).astype(np.float32)
        asm.add(prob, box, centre, spacing)
        # the reference: the same Gaussian weight on a dense grid
        grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)], indexing="ij")
        sigma = 0.25 * np.asarray(box.size) * np.asarray(spacing)
        d2 = sum(
            ((g - c) * s / sg) ** 2
            for g, c, s, sg in zip(grids, centre, spacing, sigma, strict=True)
        )
        w = np.exp(-d2 / 2)
        total[box.slices] += w * prob
        weight[box.slices] += w
    ref = np.divide(total, weight, out=np.zeros(shape), where=weight > 0)
    np.testing.assert_allclose(asm.probabilities(), ref, atol=1e-5)
    region = asm.region()
    outside = np.ones(shape, dtype=bool)
    outside[region.slices] = False
    assert not weight[outside].any()  # every voxel a box reached lies in the region
    np.testing.assert_allclose(asm.probabilities(region), ref[region.slices], atol=1e-5)


def test_written_outputs_hold_the_trace_on_the_image_grid(tubes, tmp_path):
    """The files are written from the traced region only; read back (SimpleITK) they hold
    the whole-grid segmentation and probabilities, on the image's grid."""
    from voxseg.io import read_image

    g = _grid(shape=(64, 80, 80), direction=tubes.oblique(10))
    a, b = _at(g, (-10, 20, 20)), _at(g, (40, 20, 20))
    ref = [(np.linspace(a, b, 50), np.full(50, 2.0))]
    image, truth = _setup(tubes, g, ref)
    seed = Seed(_at(g, (10, 20, 20)), 2.0, g.direction_matrix[:, 0])
    result = trace(image, [seed], OracleSegmenter(truth), TracingConfig(both_ways=False))
    assert result.region is not None and np.prod(result.region.size) < np.prod(g.shape)
    result.write(tmp_path / "out", image=image)
    result.write_labels(tmp_path / "labels.nii.gz", value=3)
    seg = read_image(tmp_path / "out" / "segmentation.nii.gz")
    prob = read_image(tmp_path / "out" / "probabilities.nii.gz")
    labels = read_image(tmp_path / "labels.nii.gz")
    for written in (seg, prob, labels):
        assert written.geometry.is_close(g)
    np.testing.assert_array_equal(seg.array, result.segmentation.array)
    np.testing.assert_array_equal(prob.array, result.probabilities.array)
    np.testing.assert_array_equal(labels.array, (result.segmentation.array > 0) * 3)
    assert _dice(seg.array > 0, truth.array > 0) > 0.9
