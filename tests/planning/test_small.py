"""Small structures: each class's typical connected object vs a configuration's voxel, and
``voxseg auto``'s rule that adds a full-resolution stage for the classes under the limit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from voxseg.data.dataset import Dataset, write_dataset_json
from voxseg.data.fingerprint import compute_fingerprint
from voxseg.io import Image, write_image
from voxseg.pipelines.auto import SMALL_STAGE, small_structure_rule
from voxseg.planning import PlannerOptions, plan_dataset
from voxseg.planning.small import (
    SMALL_OBJECT_PERCENTILE,
    SMALL_OBJECT_VOXELS,
    find_small_structures,
)

SPACING = (3.0, 0.8, 0.8)
#: large enough in-plane that a full-resolution patch at the CPU's whole-image budget covers
#: less than a quarter of the image, so the whole-image stage coarsens the grid
SHAPE = (24, 160, 160)


def _dataset(root, spots: bool, inside: bool = False):
    """Three CT-like cases: a large 'organ' (1) and 'spots' (2), either 2 mm-radius balls
    (a few voxels of a coarse grid) or, with ``spots=False``, one large box."""
    rng = np.random.default_rng(0)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    z, y, x = np.indices(SHAPE) * np.reshape(SPACING, (3, 1, 1, 1))
    for i in range(3):
        seg = np.zeros(SHAPE, np.uint8)
        seg[(((z - 36) / 25) ** 2 + ((y - 38) / 22) ** 2 + ((x - 38) / 22) ** 2) < 1] = 1
        if spots:
            centres = [(55, 55), (60, 20), (20, 60)]
            if inside:  # in the organ's middle instead
                centres = [(38, 38), (30, 44), (46, 32)]
            for cy, cx in centres[: i + 1]:
                seg[((z - 33) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) < 2.0**2] = 2
        else:
            seg[4:12, 62:90, 62:90] = 2
        image = rng.normal(0, 20, seg.shape) + 60.0 * seg
        write_image(Image(image.astype(np.float32), SPACING), root / f"imagesTr/c{i}_0000.nii.gz")
        write_image(Image(seg, SPACING), root / f"labelsTr/c{i}.nii.gz")
    write_dataset_json(root, {0: "CT"}, {"background": 0, "organ": 1, "spots": 2}, 3)
    return Dataset(root)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = {}
    for spots in (True, False, "inside"):
        name = {True: "Dataset071_S", False: "Dataset070_S", "inside": "Dataset072_S"}[spots]
        ds = _dataset(tmp_path_factory.mktemp("small") / name, bool(spots), spots == "inside")
        fp = compute_fingerprint(ds, samples_total=10_000)
        plans = plan_dataset(fp, ds.info, PlannerOptions(device="cpu"))
        out[spots] = (ds, fp, plans)
    return out


def test_typical_object_volume_against_scipy_components(planned):
    ds, fp, plans = planned[True]
    assert "3d_lowres" in plans.configurations
    low = plans.configuration("3d_lowres")
    voxel = math.prod(low.spacing)
    assert voxel > math.prod(SPACING)  # the whole-image grid is coarser than the data
    volumes = []
    for case in ds.cases():
        _, label = ds.load_case(case)
        objects, n = ndimage.label(label.array == 2, structure=np.ones((3, 3, 3)))
        volumes += list(np.bincount(objects.ravel())[1:] * math.prod(SPACING))
    assert len(volumes) == 6
    found = find_small_structures(fp, plans, "3d_lowres")
    (spots,) = found.classes
    assert (spots.name, spots.value, spots.num_objects) == ("spots", 2, 6)
    # the volume under which SMALL_OBJECT_PERCENTILE % of the spots' volume lies, by hand
    ordered = sorted(volumes)
    total, running, typical = sum(ordered), 0.0, None
    for v in ordered:
        running += v
        if running >= SMALL_OBJECT_PERCENTILE / 100 * total:
            typical = v
            break
    assert spots.typical_mm3 == pytest.approx(typical)
    assert spots.typical_voxels == pytest.approx(typical / voxel)
    assert spots.typical_voxels < SMALL_OBJECT_VOXELS
    assert "spots" in found.why and "organ" in found.why
    assert spots.host is None  # the spots lie outside the organ


def test_small_objects_inside_an_organ_get_it_as_their_host(planned):
    ds, fp, plans = planned["inside"]
    (spots,) = find_small_structures(fp, plans, "3d_lowres").classes
    assert spots.host == 1
    # every spot of every case is surrounded by organ voxels only
    for case in ds.cases():
        _, label = ds.load_case(case)
        spot = label.array == 2
        shell = ndimage.binary_dilation(spot, structure=np.ones((3, 3, 3))) & ~spot
        assert set(np.unique(label.array[shell])) == {1}
    rule = small_structure_rule(fp, plans, ["3d_lowres"], None)
    assert rule["classes"][0]["inside"] == 1 and "inside label 1" in rule["why"]


def test_auto_adds_the_full_resolution_stage_only_for_a_small_class(planned):
    _, fp, plans = planned[True]
    rule = small_structure_rule(fp, plans, ["3d_lowres"], None)
    assert rule["stage"] is True
    assert [c["name"] for c in rule["classes"]] == ["spots"]
    assert SMALL_STAGE in rule["why"]
    # a full-resolution configuration trained: nothing to add
    rule = small_structure_rule(fp, plans, ["3d_fullres"], None)
    assert rule["stage"] is False and "full-resolution grid" in rule["why"]
    # labels the pipeline cannot take: the reason is recorded, nothing is added
    rule = small_structure_rule(fp, plans, ["3d_lowres"], "labels are regions")
    assert rule["stage"] is False and "labels are regions" in rule["why"]
    # the same organ with a large second class: no small class, no stage
    _, fp_big, plans_big = planned[False]
    assert "3d_lowres" in plans_big.configurations
    rule = small_structure_rule(fp_big, plans_big, ["3d_lowres"], None)
    assert rule["stage"] is False and rule["classes"] == []
    assert "no class is too small" in rule["why"]


def test_a_large_tissue_with_small_fragments_is_not_small():
    """Counted, most objects are 1 mm³ fragments; by volume, 10 % of the class lies in
    objects up to the large piece: typical = the large piece (a known answer by hand)."""
    from voxseg.planning.small import volume_weighted_percentile

    volumes = [1.0] * 80 + [5_000.0, 100_000.0]
    assert np.percentile(volumes, SMALL_OBJECT_PERCENTILE) == 1.0
    assert volume_weighted_percentile(volumes, SMALL_OBJECT_PERCENTILE) == 100_000.0
    assert volume_weighted_percentile(volumes, 2.0) == 5_000.0
    assert volume_weighted_percentile([40.0, 60.0, 500.0], 10.0) == 60.0
    assert volume_weighted_percentile([40.0, 60.0, 500.0], 6.0) == 40.0


def test_every_class_small_adds_no_stage_and_says_why(planned, monkeypatch):
    """With no whole-image class left to guide it, the small stage is not added (it would
    have no prediction channels to take) and the rule names 3d_fullres instead."""
    import voxseg.planning.small as small

    _, fp, plans = planned[True]
    monkeypatch.setattr(small, "SMALL_OBJECT_VOXELS", 1e12)  # every class is small
    rule = small_structure_rule(fp, plans, ["3d_lowres"], None)
    assert [c["name"] for c in rule["classes"]] == ["organ", "spots"]
    assert rule["stage"] is False and "every class is small" in rule["why"]
