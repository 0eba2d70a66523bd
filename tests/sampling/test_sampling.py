from types import SimpleNamespace

import numpy as np
import pytest
import torch

from voxseg.sampling import PatchBatches, SamplingConfig, build_sampler, read_crop


def test_read_crop_pads_outside_like_numpy(rng):
    a = rng.normal(size=(2, 7, 9, 11)).astype(np.float32)
    start, size = (-3, 4, 8), (6, 8, 5)
    got = read_crop(a, start, size, fill=-5)
    padded = np.pad(a, ((0, 0), (3, 3), (0, 3), (0, 2)), constant_values=-5)
    expected = padded[:, 0:6, 4:12, 8:13]
    np.testing.assert_array_equal(got, expected)


def test_read_crop_entirely_outside_is_fill():
    a = np.ones((1, 4, 4, 4))
    assert (read_crop(a, (10, 0, 0), (2, 2, 2), fill=0) == 0).all()


class _Store:
    """An in-memory stand-in for the preprocessed store (same ``open`` contract)."""

    def __init__(self, cases):
        self.cases = cases

    def open(self, case_id):
        return self.cases[case_id]


def _case(shape, points):
    data = np.zeros((1, *shape), np.float32)
    seg = np.zeros((1, *shape), np.int8)
    locs = {}
    for label, pts in points.items():
        for p in pts:
            seg[(0, *p)] = label
        locs[str(label)] = [list(p) for p in pts]
    data[0] = seg[0]
    return data, seg, SimpleNamespace(foreground_locations=locs)


def test_forced_samples_are_centred_on_foreground_and_classes_balanced():
    store = _Store({"a": _case((40, 40, 40), {1: [(5, 5, 5)], 2: [(30, 30, 30)]})})
    sampler = build_sampler(SamplingConfig(name="foreground"))
    ds = PatchBatches(store, ["a"], (8, 8, 8), 3, sampler, foreground_fraction=1 / 3, seed=1)
    seen = {1: 0, 2: 0}
    for i in range(200):
        batch = ds[i]
        forced = batch["seg"][-1, 0]
        assert forced[4, 4, 4] in (1, 2)  # the centre voxel is the chosen location
        seen[int(forced[4, 4, 4])] += 1
    assert abs(seen[1] - seen[2]) < 40  # binomial(200, 0.5): sd ~7


def test_batches_are_a_function_of_the_index_only():
    store = _Store({c: _case((20, 30, 30), {1: [(3, 4, 5)]}) for c in ("a", "b", "c")})
    for c in store.cases.values():
        c[0][:] = np.random.default_rng(0).normal(size=c[0].shape)
    sampler = build_sampler(SamplingConfig())
    ds1 = PatchBatches(store, ["a", "b", "c"], (8, 16, 16), 2, sampler, seed=3)
    ds2 = PatchBatches(store, ["a", "b", "c"], (8, 16, 16), 2, sampler, seed=3)
    for i in (5, 0, 17):
        torch.testing.assert_close(ds1[i]["image"], ds2[i]["image"])
    assert not torch.equal(ds1[1]["image"], ds1[2]["image"])
    loader = torch.utils.data.DataLoader(ds1, batch_size=None, sampler=range(4), num_workers=2)
    for i, batch in enumerate(loader):
        torch.testing.assert_close(batch["image"], ds2[i]["image"])


def test_two_d_patches_are_slices():
    store = _Store({"a": _case((5, 30, 30), {1: [(2, 10, 10)]})})
    ds = PatchBatches(store, ["a"], (16, 16), 4, build_sampler(SamplingConfig()), seed=0)
    batch = ds[0]
    assert batch["image"].shape == (4, 1, 16, 16)
    assert batch["seg"].shape == (4, 1, 16, 16)


def test_roi_sampler_only_centres_in_roi():
    store = _Store({"a": _case((30, 30, 30), {3: [(20, 20, 20), (21, 20, 20)]})})
    sampler = build_sampler(SamplingConfig(name="roi", roi_label=3))
    ds = PatchBatches(store, ["a"], (6, 6, 6), 2, sampler, foreground_fraction=0, seed=0)
    for i in range(20):
        assert (ds[i]["seg"][:, 0, 3, 3, 3] == 3).all()


def test_unknown_sampler_lists_registered_names():
    with pytest.raises(Exception, match="foreground"):
        build_sampler(SamplingConfig(name="nope"))


def _two_objects():
    """One class in one case: a 10×10×10 block (1 000 voxels) and a 2×2×2 one (8 voxels),
    every voxel a stored location, and a patch centre's object read from the data."""
    data = np.zeros((1, 40, 40, 40), np.float32)
    seg = np.zeros((1, 40, 40, 40), np.int8)
    seg[0, 2:12, 2:12, 2:12] = 1
    seg[0, 30:32, 30:32, 30:32] = 1
    data[0, 2:12, 2:12, 2:12] = 1.0  # the large object
    data[0, 30:32, 30:32, 30:32] = 2.0  # the small one
    locs = {"1": np.argwhere(seg[0] == 1).tolist()}
    return data, seg, SimpleNamespace(foreground_locations=locs)


@pytest.mark.parametrize("balance", ["voxels", "objects"])
def test_object_balance_centres_small_objects_as_often_as_large_ones(balance):
    store = _Store({"a": _two_objects()})
    sampler = build_sampler(SamplingConfig(balance=balance))
    ds = PatchBatches(store, ["a"], (4, 4, 4), 1, sampler, foreground_fraction=1.0, seed=2)
    small = sum(int(ds[i]["image"][0, 0, 2, 2, 2] == 2.0) for i in range(400))
    if balance == "voxels":  # nnU-Net: in proportion to the voxels, 8 / 1 008 ≈ 0.8 %
        assert small <= 12
    else:  # each object equally likely: binomial(400, 0.5), sd 10
        assert 160 < small < 240


def test_object_balance_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="balance"):
        build_sampler(SamplingConfig(name="foreground", kwargs={"balance": "lesions"}))


@pytest.mark.parametrize("placement", ["centre", "anywhere"])
def test_forced_voxel_placement_in_the_crop(placement):
    sampler = build_sampler(SamplingConfig(placement=placement))
    shape, size, voxel = (60, 60, 60), np.array([6, 8, 10]), np.array([30, 30, 30])
    rng = np.random.default_rng(0)
    offsets = np.array(
        [
            voxel
            - sampler(
                shape,
                size,
                rng,
                force_foreground=True,
                foreground_locations={"1": [voxel.tolist()]},
                extra={},
            )
            for _ in range(3000)
        ]
    )
    if placement == "centre":  # nnU-Net: the crop's centre voxel, size // 2
        assert (offsets == size // 2).all()
    else:  # every position in the crop, uniformly: per axis counts of 3000 / size
        for axis, n in enumerate(size):
            counts = np.bincount(offsets[:, axis], minlength=n)
            assert counts.size == n and counts.min() > 0.7 * 3000 / n
            assert counts.max() < 1.3 * 3000 / n


def test_placement_rejects_an_unknown_rule():
    with pytest.raises(ValueError, match="placement"):
        build_sampler(SamplingConfig(name="foreground", kwargs={"placement": "edge"}))
