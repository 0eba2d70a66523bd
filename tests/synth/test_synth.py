"""Phantom generators: determinism, valid datasets, exact geometry, analytic centerlines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data import Dataset
from voxseg.errors import VoxsegError
from voxseg.io import Image, read_image, to_sitk
from voxseg.io.vtp import read_vtp
from voxseg.synth import generate, kinds, phantom
from voxseg.synth._common import reorient

SMALL = {
    "organs": {"shape": (12, 32, 32)},
    "vessels": {"shape": (28, 28, 28)},
    "cord": {"shape": (8, 40, 40)},
    "spine": {"shape": (16, 48, 48)},
    "rgb2d": {"shape": (1, 48, 48)},
}


def _arrays(root, kind):
    """Every image and label array of a generated dataset, by file name."""
    ending = ".png" if kind == "rgb2d" else ".nii.gz"
    return {
        p.relative_to(root).as_posix(): read_image(p).array
        for p in sorted(root.rglob(f"*{ending}"))
    }


def test_every_kind_is_registered():
    assert kinds() == ["cord", "organs", "rgb2d", "spine", "vessels"]


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_same_seed_same_arrays_other_seed_other_arrays(tmp_path, kind):
    opts = dict(num_train=2, num_test=1, **SMALL[kind])
    a = _arrays(generate(kind, tmp_path / "a", seed=3, **opts), kind)
    b = _arrays(generate(kind, tmp_path / "b", seed=3, **opts), kind)
    c = _arrays(generate(kind, tmp_path / "c", seed=4, **opts), kind)
    assert len(a) == 6 and a.keys() == b.keys() == c.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    images = [n for n in a if n.startswith("images")]
    assert all(not np.array_equal(a[n], c[n]) for n in images)


def test_a_case_depends_neither_on_the_case_count_nor_on_the_workers(tmp_path):
    few = generate("cord", tmp_path / "few", num_train=1, num_test=1, **SMALL["cord"])
    many = generate("cord", tmp_path / "many", workers=2, num_train=3, num_test=2, **SMALL["cord"])
    for rel in ("imagesTr/cord_000_0000.nii.gz", "labelsTs/cord_test_000.nii.gz"):
        np.testing.assert_array_equal(read_image(few / rel).array, read_image(many / rel).array)


@pytest.mark.parametrize("kind", ["organs", "vessels", "cord", "spine"])
def test_dataset_loads_with_declared_labels_and_shared_geometry(tmp_path, kind):
    root = generate(kind, tmp_path / kind, num_train=3, num_test=2, **SMALL[kind])
    ds = Dataset(root)
    assert ds.info.numTraining == 3
    assert ds.info.channel_names == phantom(kind).channel_names
    declared = set(ds.info.label_values)
    for split, n in (("Tr", 3), ("Ts", 2)):
        cases = ds.cases(split)
        assert len(cases) == n
        for case in cases:
            image, label = ds.load_case(case)
            assert image.array.shape[0] == 1 and np.isfinite(image.array).all()
            assert label is not None and image.geometry.differences(label.geometry) == []
            assert set(np.unique(label.array).tolist()) <= declared
            assert label.array.any(), f"{case.case_id}: empty label"


def test_rgb2d_follows_the_nnunet_natural_image_convention(tmp_path):
    root = generate("rgb2d", tmp_path / "rgb", num_train=2, num_test=1, **SMALL["rgb2d"])
    ds = Dataset(root)
    assert ds.info.file_ending == ".png"
    assert ds.info.channel_names == {"0": "R", "1": "G", "2": "B"}
    assert ds.case_ids() == ["rgb2d_000", "rgb2d_001"] and ds.case_ids("Ts") == ["rgb2d_test_000"]
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == [
        "rgb2d_000_0000.png",
        "rgb2d_001_0000.png",
    ]
    from PIL import Image as PILImage

    rgb = np.asarray(PILImage.open(root / "imagesTr" / "rgb2d_000_0000.png"))
    mask = np.asarray(PILImage.open(root / "labelsTr" / "rgb2d_000.png"))
    assert rgb.shape == (48, 48, 3) and rgb.dtype == np.uint8  # one file, three channels
    assert mask.shape == (48, 48) and set(np.unique(mask).tolist()) == {0, 1}


def test_rgb2d_raw_folder_masks_are_0_255(tmp_path):
    root = generate(
        "rgb2d", tmp_path / "raw", num_train=2, num_test=1, raw_folder=True, **SMALL["rgb2d"]
    )
    assert not (root / "dataset.json").exists()
    names = sorted(p.name for p in (root / "images").iterdir())
    assert (
        names
        == sorted(p.name for p in (root / "masks").iterdir())
        == [
            "rgb2d_000.png",
            "rgb2d_001.png",
        ]
    )
    assert [p.name for p in (root / "test" / "masks").iterdir()] == ["rgb2d_test_000.png"]
    mask = read_image(root / "masks" / "rgb2d_000.png").array
    assert set(np.unique(mask).tolist()) == {0, 255}


def test_reorient_keeps_every_voxel_in_place_per_simpleitk():
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 100, (5, 6, 7)).astype(np.int16)
    image = Image(arr, (2.5, 0.8, 0.7), (10.0, -20.0, 30.0), np.eye(3)[:, ::-1])
    for perm, flips in [
        ((0, 1, 2), (True, False, True)),
        ((2, 1, 0), (False, True, False)),
        ((1, 2, 0), (True, True, True)),
    ]:
        moved = reorient(image, perm, flips)
        back = sitk.Resample(
            to_sitk(moved), to_sitk(image), sitk.Transform(), sitk.sitkNearestNeighbor, -1
        )
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), arr)


def test_organs_vary_spacing_and_orientation_but_keep_anatomy_in_place(tmp_path):
    root = generate("organs", tmp_path / "o", num_train=5, num_test=0, **SMALL["organs"])
    ds = Dataset(root)
    spacings, directions = set(), set()
    for case in ds.cases():
        label = read_image(case.label)
        spacings.add(tuple(np.round(sorted(label.spacing), 3)))
        directions.add(tuple(np.round(label.direction, 3).ravel()))
        geometry = label.geometry
        # Independent of how the array is stored, the liver lies on the patient's right
        # (LPS: smaller x) of the spleen, and the two kidneys are separate bodies.
        liver = geometry.index_to_physical(np.argwhere(label.array == 1)).mean(axis=0)
        spleen = geometry.index_to_physical(np.argwhere(label.array == 3)).mean(axis=0)
        assert liver[0] < spleen[0], case.case_id
        assert ndimage.label(label.array == 2)[1] >= 2, case.case_id
        assert max(label.spacing) / min(label.spacing) > 1.5  # thick slices
    assert len(spacings) == 5
    assert len(directions) == 5


def test_organs_are_not_separable_by_a_threshold(tmp_path):
    root = generate("organs", tmp_path / "o", num_train=1, num_test=0, shape=(24, 64, 64))
    image, label = Dataset(root).load_case(Dataset(root).cases()[0])
    hu, liver = image.array[0], label.array == 1
    best = 0.0
    for lo in np.percentile(hu[liver], [1, 5, 10, 25]):
        for hi in np.percentile(hu[liver], [75, 90, 95, 99]):
            pred = (hu >= lo) & (hu <= hi)
            best = max(best, 2 * (pred & liver).sum() / (pred.sum() + liver.sum()))
    assert 0.0 < best < 0.8


def test_vessel_centerlines_follow_the_mask_ridge_with_matching_radii(tmp_path):
    root = generate("vessels", tmp_path / "v", num_train=2, num_test=0, shape=(48, 48, 48))
    for case in Dataset(root).cases():
        label = read_image(case.label)
        poly = read_vtp(case.extras["centerline"])
        radius = poly.point_data["MaximumInscribedSphereRadius"]
        members = poly.point_data["CenterlineId"]
        bifurcation = poly.point_data["BifurcationIdTmp"]
        assert members.shape == (poly.num_points, len(poly.lines))
        for j, line in enumerate(poly.lines):
            assert line[0] == 0  # every path starts at the inlet
            assert set(np.flatnonzero(members[:, j])) == set(line.tolist())
        assert (members.sum(axis=1) >= 1).all()

        idx = np.rint(label.geometry.physical_to_index(poly.points)).astype(int)
        assert (label.array[tuple(idx.T)] == 1).all(), "centerline point outside the vessel"
        edt = ndimage.distance_transform_edt(label.array, sampling=label.spacing)
        vox = float(np.mean(label.spacing))
        error = (edt[tuple(idx.T)] - radius)[bifurcation < 0] / vox
        assert abs(np.median(error)) < 0.3  # unbiased
        assert np.percentile(np.abs(error), 95) < 0.7 and np.abs(error).max() < 1.0
        # The ridge: the distance transform peaks on the centerline, not beside it.
        peak = ndimage.maximum_filter(edt, size=3)[tuple(idx.T)]
        assert np.median(peak - edt[tuple(idx.T)]) < 0.6 * vox

        tree = json.loads((root / "centerlines" / f"{case.case_id}.json").read_text())
        n_unique = sum(len(b["points"]) for b in tree["branches"]) - (len(tree["branches"]) - 1)
        assert n_unique == poly.num_points
        trunk = np.asarray(tree["branches"][0]["points"])
        np.testing.assert_allclose(poly.points[: len(trunk)], trunk, atol=1e-5)


def test_vessel_seed_lies_in_the_root_vessel_pointing_along_it(tmp_path):
    root = generate("vessels", tmp_path / "v", num_train=2, num_test=1, shape=(40, 40, 40))
    for split, case_id in (
        ("Tr", "vessels_000"),
        ("Tr", "vessels_001"),
        ("Ts", "vessels_test_000"),
    ):
        seeds = json.loads((root / "seeds" / f"{case_id}.json").read_text())
        label = read_image(root / f"labels{split}" / f"{case_id}.nii.gz")
        tree = json.loads((root / "centerlines" / f"{case_id}.json").read_text())
        assert len(seeds) == 1
        point, direction, radius = seeds[0]
        idx = np.rint(label.geometry.physical_to_index(np.asarray(point))).astype(int)
        assert label.array[tuple(idx)] == 1
        trunk = np.asarray(tree["branches"][0]["points"])
        assert np.linalg.norm(trunk - point, axis=1).min() < 1e-4  # on the root branch
        assert abs(np.linalg.norm(direction) - 1) < 1e-5
        assert np.dot(direction, trunk[-1] - trunk[0]) > 0  # into the vessel
        assert min(tree["branches"][0]["radii"]) <= radius <= max(tree["branches"][0]["radii"])


def test_vessel_cta_field_has_distractors_apart_from_the_labelled_tree(tmp_path):
    root = generate(
        "vessels", tmp_path / "v", num_train=1, num_test=0, shape=(48, 80, 80),
        other_trees=3, bright_structures=4,
    )  # fmt: skip
    label = read_image(root / "labelsTr" / "vessels_000.nii.gz")
    image = read_image(root / "imagesTr" / "vessels_000_0000.nii.gz").array
    distractors = read_image(root / "distractors" / "vessels_000.nii.gz")
    assert distractors.geometry == label.geometry
    d, lab = distractors.array, label.array > 0
    assert (d == 1).sum() > 0.2 * lab.sum()  # other vessels
    assert (d == 2).sum() > 0  # plates and chambers
    # never part of, nor touching, the labelled tree (scipy's distance, mm)
    dist = ndimage.distance_transform_edt(~lab, sampling=label.spacing)
    assert not (lab & (d > 0)).any()
    assert dist[d == 1].min() > 2 * max(label.spacing)
    assert dist[d == 2].min() > 3.0
    background = np.median(image[(d == 0) & ~lab])
    assert np.median(image[d == 1]) > background + 0.3  # as bright as a vessel
    assert np.median(image[d == 2]) > background + 0.3
    # the labelled tree is still the arrays' only label, and the options are recorded
    assert set(np.unique(label.array)) == {0, 1}
    options = json.loads((root / "synth.json").read_text())["options"]
    assert options["other_trees"] == 3 and options["bright_structures"] == 4


def test_vessels_without_distractor_options_write_no_distractor_map(tmp_path):
    root = generate("vessels", tmp_path / "v", num_train=1, num_test=0, shape=(28, 28, 28))
    assert not (root / "distractors").exists()
    with pytest.raises(VoxsegError, match="other_trees"):
        phantom("vessels", other_trees=-1)


def test_cord_targets_lesion_free_cases_and_anisotropy(tmp_path):
    both = generate("cord", tmp_path / "b", num_train=6, num_test=0, seed=1, **SMALL["cord"])
    lesion = generate(
        "cord", tmp_path / "l", num_train=6, num_test=0, seed=1, target="lesion", **SMALL["cord"]
    )
    assert Dataset(both).info.labels == {"background": 0, "cord": 1, "lesion": 2}
    assert Dataset(lesion).info.labels == {"background": 0, "lesion": 1}
    with_lesion = 0
    for case in Dataset(both).cases():
        a = read_image(case.label).array
        b = read_image(lesion / "labelsTr" / case.label.name)
        np.testing.assert_array_equal(b.array, (a == 2).astype(np.uint8))
        with_lesion += bool((a == 2).any())
        assert b.spacing[0] > 1.4 > 1.0 > b.spacing[1]
    assert 0 < with_lesion < 6


def test_spine_is_small_in_a_large_field_of_view_and_multiclass_counts_vertebrae(tmp_path):
    root = generate(
        "spine", tmp_path / "s", num_train=1, num_test=0, multiclass=True, shape=(24, 64, 64)
    )
    label = read_image(root / "labelsTr" / "spine_000.nii.gz").array
    found = sorted(set(np.unique(label).tolist()) - {0})
    assert len(found) >= 2 and found == list(range(found[0], found[-1] + 1))
    box = ndimage.find_objects((label > 0).astype(np.uint8))[0]
    in_plane = (box[1].stop - box[1].start) * (box[2].stop - box[2].start)
    assert in_plane < 0.35 * label.shape[1] * label.shape[2]
    assert len(Dataset(root).info.labels) == 18


def test_options_are_validated():
    with pytest.raises(VoxsegError, match="unknown synth 'nope'.*organs"):
        phantom("nope")
    with pytest.raises(VoxsegError, match="unknown option.*target"):
        phantom("organs", target="cord")
    with pytest.raises(VoxsegError, match="too small"):
        phantom("organs", shape=(2, 8, 8))
    with pytest.raises(VoxsegError, match="target"):
        phantom("cord", target="brain")
    with pytest.raises(VoxsegError, match="shape must be 1 Y X"):
        phantom("rgb2d", shape=(2, 64, 64))
    assert phantom("organs", scale=0.5).grid_shape() == (24, 48, 48)


def test_cli_writes_a_dataset_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    out = tmp_path / "Dataset001_Organs"
    args = [
        "synth",
        "organs",
        str(out),
        "--num-train",
        "2",
        "--num-test",
        "1",
        "--shape",
        "12",
        "32",
        "32",
        "--seed",
        "5",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    ds = Dataset(out)
    assert ds.case_ids() == ["organs_000", "organs_001"] and ds.case_ids("Ts") == [
        "organs_test_000"
    ]
    assert read_image(ds.image_path("organs_000", 0)).shape == (12, 32, 32)
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    bad = runner.invoke(app, ["synth", "organs", str(tmp_path / "x"), "--target", "cord"])
    assert bad.exit_code == 1 and "unknown option" in bad.output


#: organs phantom with lesions=False: sha256 of every array and geometry of 4 cases
#: (shape 16×40×40, seed 3), computed before lesions existed; the option must not move it.
ORGANS_HASH = "456eab1b807ea2bf75f22913448dcf93d6965da15961c665bb4799524df4a407"


def _organs_hash(**options) -> str:
    import hashlib

    from voxseg.synth import case_rng

    organs = phantom("organs", shape=(16, 40, 40), **options)
    digest = hashlib.sha256()
    for i in range(4):
        case = organs.make_case(case_rng(3, "organs", "Tr", i), i)
        for image in (case.image, case.label):
            digest.update(np.ascontiguousarray(image.array).tobytes())
            for values in (image.spacing, image.origin, image.direction):
                digest.update(np.asarray(values, float).tobytes())
    return digest.hexdigest()


def test_organs_without_lesions_are_unchanged():
    assert _organs_hash() == ORGANS_HASH
    assert _organs_hash(lesions=False) == ORGANS_HASH
    assert _organs_hash(lesions=True) != ORGANS_HASH


@pytest.mark.parametrize("shape", [(48, 96, 96), (24, 128, 128)])
def test_organ_lesions_have_a_physical_size_whatever_the_grid(shape):
    from voxseg.synth import case_rng
    from voxseg.synth.organs import LESION_DIAMETER_MM

    organs = phantom("organs", shape=shape, lesions=True)
    assert organs.labels()["lesion"] == 4
    diameters, counts = [], []
    for i in range(10):
        case = organs.make_case(case_rng(0, "organs", "Tr", i), i)
        label = to_sitk(case.label)
        # SimpleITK measures each 26-connected lesion in mm (the reference for the size)
        components = sitk.ConnectedComponent(label == 4, True)
        shapes = sitk.LabelShapeStatisticsImageFilter()
        shapes.Execute(components)
        counts.append(shapes.GetNumberOfLabels())
        diameters += [2 * shapes.GetEquivalentSphericalRadius(k) for k in shapes.GetLabels()]
        arr = case.label.array
        lesion = arr == 4
        if lesion.any():  # inside the liver: the voxels around the lesions are mostly liver
            ring = ndimage.binary_dilation(lesion, np.ones((3, 3, 3))) & ~lesion
            assert np.mean(arr[ring] == 1) > 0.9, i
            hu = case.image.array[0] if case.image.array.ndim == 4 else case.image.array
            assert hu[lesion].mean() < hu[arr == 1].mean() - 10  # hypodense, as before
    lo, hi = LESION_DIAMETER_MM
    # the voxelised sphere's volume stays within a few % of the drawn one
    assert lo * 0.95 <= min(diameters) and max(diameters) <= hi * 1.05, diameters
    assert max(diameters) - min(diameters) > 0.5 * (hi - lo)  # the whole range is drawn
    assert sum(1 <= n <= 4 for n in counts) >= 7 and max(counts) <= 4, counts
    assert 0 in counts  # some cases are lesion-free


def test_synth_cli_lesions_flag(tmp_path):
    out = tmp_path / "Dataset009_Lesions"
    result = CliRunner().invoke(
        app,
        ["synth", "organs", str(out), "--lesions", "--num-train", "1", "--num-test", "0"]
        + ["--shape", "24", "64", "64"],
    )
    assert result.exit_code == 0, result.output
    info = json.loads((out / "dataset.json").read_text())
    assert info["labels"] == {"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "lesion": 4}
