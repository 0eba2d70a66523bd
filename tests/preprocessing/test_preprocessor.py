"""preprocess_case / preprocess_dataset / restore_to_original on small generated datasets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from voxseg.data.dataset import Dataset
from voxseg.data.fingerprint import compute_fingerprint
from voxseg.errors import VoxsegError
from voxseg.io import Image
from voxseg.planning import PlannerOptions, plan_dataset
from voxseg.preprocessing import PreprocessedStore, preprocess_case, preprocess_dataset
from voxseg.preprocessing.inverse import restore_to_original
from voxseg.preprocessing.preprocessor import sample_foreground_locations


def _plans(root, **options):
    ds = Dataset(root)
    fp = compute_fingerprint(ds, samples_total=20_000)
    return ds, fp, plan_dataset(fp, ds.info, PlannerOptions(device="cpu", **options))


def _with_spacing(plans, spacing):
    cfg = plans.configurations["3d_fullres"].model_copy(update={"spacing": list(spacing)})
    return cfg


def test_unchanged_spacing_is_crop_plus_ct_normalisation(small_dataset):
    ds, fp, plans = _plans(small_dataset)
    image, label = ds.load_case(ds.case("c01"))
    data, seg, meta = preprocess_case(image, plans, "3d_fullres", label, case_id="c01")
    nz = np.nonzero(image.array[0])
    box = tuple(slice(int(a.min()), int(a.max()) + 1) for a in nz)
    stats = fp.channels[0]
    ref = np.clip(image.array[0][box], stats.percentile_00_5, stats.percentile_99_5)
    ref = (ref - stats.mean) / stats.std
    np.testing.assert_allclose(data[0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(seg[0], label.array[box])
    assert meta.bbox == [[s.start, s.stop] for s in box]
    assert meta.spacing_before == meta.spacing_after == list(image.spacing)
    for k, locs in meta.foreground_locations.items():
        expected = {tuple(p) for p in np.argwhere(seg[0] == int(k)).tolist()}
        assert {tuple(p) for p in locs} == expected  # fewer than 10 000: all of them


def test_one_voxel_class_survives_downsampling(small_dataset):
    ds, _, plans = _plans(small_dataset)
    image, label = ds.load_case(ds.case("c00"))
    lab = np.where(label.array == 2, 1, label.array).astype(np.uint8)
    z, y, x = np.argwhere(lab == 1)[0]
    lab[z, y, x] = 2
    cfg = _with_spacing(plans, [4.0, 3.0, 3.0])
    data, seg, meta = preprocess_case(image, plans, cfg, label.with_array(lab), case_id="c00")
    assert meta.shape_after_resampling == list(seg.shape[1:]) == list(data.shape[1:])
    assert meta.shape_after_resampling[1] < meta.shape_after_crop[1] / 2
    assert (seg == 2).sum() >= 1
    assert 2 in meta.classes and len(meta.foreground_locations["2"]) >= 1


def test_location_sampling_is_bounded_and_inside_the_class(rng):
    seg = np.zeros((40, 100, 100), np.int8)
    seg[:, :60] = 1  # 240 000 voxels: 1% is 2 400, so 10 000 are drawn
    seg[5, 5, 70] = 2
    locs = sample_foreground_locations(seg, [1, 2, 3], seed=0)
    assert set(locs) == {"1", "2"}
    pts = np.array(locs["1"])
    assert len(pts) == 10_000 == len({tuple(p) for p in pts.tolist()})
    assert np.all(seg[tuple(pts.T)] == 1)
    assert locs["2"] == [[5, 5, 70]]
    assert sample_foreground_locations(seg, [1], seed=0) == {"1": locs["1"]}


def _oblique_flipped_direction() -> np.ndarray:
    a = np.deg2rad(12)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    perm_flip = np.array([[0, 0, -1], [0, 1, 0], [1, 0, 0]], dtype=float)
    return rot @ perm_flip


def test_forward_inverse_is_exact_without_resampling(tmp_path, dataset_factory):
    root = dataset_factory(tmp_path / "Dataset002_Obl", direction=_oblique_flipped_direction())
    ds, _, plans = _plans(root, orientation="ASR")
    image, label = ds.load_case(ds.case("c02"))
    data, seg, meta = preprocess_case(image, plans, "3d_fullres", label, case_id="c02")
    r = meta.reorientation
    assert r is not None and r["transpose"] != [0, 1, 2] and any(r["flip"])
    back, geometry = restore_to_original(seg, meta)
    np.testing.assert_array_equal(back, label.array)
    assert geometry.is_close(label.geometry)
    one_hot = np.stack([(seg[0] == k) for k in range(3)]).astype(np.float32)
    probs, _ = restore_to_original(one_hot, meta, is_probabilities=True)
    assert probs.shape == (3, *label.shape)
    np.testing.assert_array_equal(probs.argmax(0), label.array)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-6)


def test_forward_inverse_with_resampling_differs_only_at_borders(tmp_path, dataset_factory):
    root = dataset_factory(
        tmp_path / "Dataset003_Rs", shape=(16, 40, 36), direction=_oblique_flipped_direction()
    )
    ds, _, plans = _plans(root, orientation="SPL")
    image, label = ds.load_case(ds.case("c00"))
    cfg = _with_spacing(plans, [s * 1.5 for s in plans.configurations["3d_fullres"].spacing])
    _, seg, meta = preprocess_case(image, plans, cfg, label, case_id="c00")
    back, _ = restore_to_original(seg, meta)
    original = label.array
    assert back.shape == original.shape
    wrong = back != original
    assert wrong.mean() < 0.03
    border = np.zeros(original.shape, bool)
    for k in np.unique(original):
        m = original == k
        border |= m ^ ndimage.binary_erosion(m, border_value=1)
    near_border = ndimage.binary_dilation(border, iterations=1)
    assert np.all(near_border[wrong])


def test_resume_after_a_crash(small_dataset, tmp_path, monkeypatch):
    ds, _, plans = _plans(small_dataset)
    folder = tmp_path / "store"
    import voxseg.preprocessing.store as store_module

    real = store_module.write_json

    def crash_on_c01(path, data, **kw):
        if path.name == "c01.json":
            raise RuntimeError("killed")
        real(path, data, **kw)

    monkeypatch.setattr(store_module, "write_json", crash_on_c01)
    with pytest.raises(VoxsegError, match="c01"):
        preprocess_dataset(ds, plans, "3d_fullres", folder)
    store = PreprocessedStore(folder)
    assert store.case_ids() == ["c00"]
    assert (folder / "c01.b2nd").exists()  # arrays written, metadata missing: unfinished
    first = (folder / "c00.json").stat().st_mtime_ns
    monkeypatch.setattr(store_module, "write_json", real)
    preprocess_dataset(ds, plans, "3d_fullres", folder)
    assert store.case_ids() == ["c00", "c01", "c02"]
    assert (folder / "c00.json").stat().st_mtime_ns == first  # skipped, not redone
    data, seg, meta = store.open("c01")
    assert data.shape[1:] == seg.shape[1:] == tuple(meta.shape_after_resampling)
    with pytest.raises(VoxsegError, match="preprocessed with"):
        preprocess_dataset(ds, plans, "3d_fullres", folder, dtype="float16")


def test_preprocess_case_on_an_in_memory_image_without_label(rng, ellipsoids):
    image, _ = ellipsoids(rng, (10, 20, 18))
    img = Image(image, spacing=(2.0, 1.0, 1.0))
    from voxseg.planning.plans import Plans

    plans = Plans.model_validate(
        {
            "dataset": "x",
            "channel_names": {"0": "MR"},
            "labels": {"background": 0, "a": 1},
            "num_cases": 1,
            "original_median_spacing": [2, 1, 1],
            "original_median_shape": [10, 20, 18],
            "normalization": [
                {
                    "channel": 0,
                    "channel_name": "MR",
                    "scheme": "zscore",
                    "params": {"use_mask": True},
                }
            ],
            "configurations": {},
        }
    )
    from voxseg.nets.topology import Topology
    from voxseg.planning.plans import ConfigurationPlan

    cfg = ConfigurationPlan(
        name="3d_fullres",
        spatial_dims=3,
        spacing=[1.0, 1.0, 1.0],
        median_shape=[20, 20, 18],
        patch_size=[16, 16, 16],
        batch_size=2,
        topology=Topology.simple(),
        data_from="3d_fullres",
    )
    data, seg, meta = preprocess_case(img, plans, cfg)
    assert seg is None and meta.foreground_locations == {}
    assert data.shape[1] == math.ceil(meta.shape_after_crop[0] * 2 - 0.5)
    inside = data[0][data[0] != 0]
    assert abs(inside.mean()) < 0.1
