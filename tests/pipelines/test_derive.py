import math

import numpy as np
import pytest
from scipy import ndimage

from voxseg.io import Image
from voxseg.pipelines import (
    BBoxCropInput,
    CenterlineCropInput,
    PipelineRunner,
    PipelineSpec,
    StageSpec,
    crop_bbox,
    crop_centerline,
    derive,
)
from voxseg.pipelines.derive import centerline_box, slice_centers
from voxseg.spatial import code_to_direction, reorient


def _image(rng, shape=(10, 30, 34), spacing=(2.5, 0.8, 0.8), code="RAS"):
    return Image(
        rng.random(shape).astype(np.float32) + 1.0,
        spacing,
        (12.0, -40.0, 7.5),
        code_to_direction(code),
    )


def test_crop_bbox_is_exact_and_restores_in_place(rng):
    image = _image(rng)
    mask = np.zeros(image.shape, bool)
    mask[4:6, 10:14, 20:23] = True
    d = crop_bbox(image, mask, [5.0, 2.0, 1.0])
    # margins: ceil(5/2.5)=2, ceil(2/0.8)=3, ceil(1/0.8)=2 voxels
    assert d.image.shape == (6, 10, 7)
    np.testing.assert_array_equal(d.image.array[0], image.array[2:8, 7:17, 18:25])
    corner = image.geometry.index_to_physical(np.array([2, 7, 18]))
    np.testing.assert_allclose(d.image.geometry.index_to_physical(np.zeros(3)), corner)
    pred = np.ones(d.image.shape, np.uint8)
    back = d.restore(pred)
    assert back.shape == image.shape and back.sum() == pred.sum()
    assert back[2:8, 7:17, 18:25].all()


def test_slice_centers_match_scipy_and_interpolate_gaps():
    mask = np.zeros((6, 20, 20), bool)
    mask[0, 2:5, 3:9] = True
    mask[3, 10:15, 11:13] = True
    got = slice_centers(mask, (0, 5))
    c0 = ndimage.center_of_mass(mask[0])
    c3 = ndimage.center_of_mass(mask[3])
    np.testing.assert_allclose(got[0], c0)
    np.testing.assert_allclose(got[3], c3)
    np.testing.assert_allclose(got[1], np.array(c0) + (np.array(c3) - np.array(c0)) / 3)
    np.testing.assert_allclose(got[4], c3)  # held beyond the last slice


@pytest.mark.parametrize("code", ["RAS", "LPI", "PRI"])
def test_centerline_crop_follows_the_cord_and_restores_the_label(rng, code):
    image = _image(rng, code=code)
    # a tube along array axis 0, which is superior–inferior in these orientations
    label = np.zeros(image.shape, np.uint8)
    yy, xx = np.indices(image.shape[1:])
    for z in range(image.shape[0]):
        cy, cx = 14 + 0.6 * z, 16 - 0.5 * z
        label[z][(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = 1
    spec = CenterlineCropInput(source="cord", spacing=[0.8, 0.8, 0.8], window=[16, 16])
    d = crop_centerline(image, label > 0, spec, label)
    assert d.image.shape[1:] == (16, 16)
    assert d.image.spacing == pytest.approx((0.8, 0.8, 0.8), rel=0.02)
    # the cord sits in the middle of every window
    for k in range(d.label.shape[0]):
        if d.label[k].any():
            cy, cx = ndimage.center_of_mass(d.label[k])
            assert abs(cy - 7.5) <= 1.0 and abs(cx - 7.5) <= 1.0
    back = d.restore(d.label)
    assert back.shape == image.shape
    dice = 2 * np.sum(back & label) / (back.sum() + label.sum())
    assert dice > 0.9


@pytest.mark.parametrize("code", ["RAS", "PRI"])
def test_centerline_crop_resamples_only_near_the_cord_at_the_right_place(rng, code):
    """Known answer: on an image that is a linear function of the in-plane physical
    coordinates, every window voxel holds that function at its own physical position."""
    image = _image(rng, shape=(10, 60, 64), code=code)
    idx = np.indices(image.shape).reshape(3, -1).T.astype(float)
    phys = image.geometry.index_to_physical(idx)
    ramp = 100.0 + phys[:, 0] + 2.0 * phys[:, 1]  # x and y (LPS); constant along the cord
    image = image.with_array(ramp.reshape(image.shape).astype(np.float32))
    label = np.zeros(image.shape, np.uint8)
    label[:, 28:33, 30:35] = 1
    spec = CenterlineCropInput(source="cord", spacing=[0.5, 0.5, 0.5], window=[16, 16])
    d = crop_centerline(image, label > 0, spec, label)
    out = d.image.array[0]
    at = np.indices(out.shape).reshape(3, -1).T.astype(float)
    where = d.image.geometry.index_to_physical(at)
    expected = (100.0 + where[:, 0] + 2.0 * where[:, 1]).reshape(out.shape)
    np.testing.assert_allclose(out, expected, atol=0.05)
    # only the cord's neighbourhood is resampled: window half-width + 1 at 0.5 mm, + 2 voxels
    oriented, r = reorient(image, "sct:RPI")
    box = centerline_box(r.apply(label) > 0, np.asarray(oriented.spacing), spec)
    assert [b - a for a, b in box][1:] == [5 + 2 * (math.ceil(9 * 0.5 / 0.8) + 2)] * 2
    back = d.restore(d.label)
    np.testing.assert_array_equal(back, label)


def _spec():
    return PipelineSpec(
        name="t",
        channel_names={"0": "T2w"},
        labels={"background": 0, "cord": 1, "lesion": 2},
        stages=[
            StageSpec(name="cord", labels={"cord": [1, 2]}, output={"cord": 1}),
            StageSpec(
                name="lesion",
                labels={"lesion": [2]},
                input=CenterlineCropInput(source="cord", window=[8, 8]),
                output={"lesion": 2},
            ),
        ],
    )


class _Fixed:
    """A stand-in predictor returning a fixed label map on its input's grid."""

    def __init__(self, fill: int) -> None:
        self.fill = fill
        self.calls = 0

    def predict(self, image):
        from voxseg.inference import Prediction

        self.calls += 1
        return Prediction(image.with_array(np.full(image.shape, self.fill, np.uint8)))


def test_empty_first_stage_gives_a_message_and_an_empty_result(rng):
    image = _image(rng)
    runner = PipelineRunner("unused", spec=_spec())
    lesion = _Fixed(1)
    runner._predictors = {"cord": _Fixed(0), "lesion": lesion}
    result = runner.predict(image, case_id="case_7")
    assert lesion.calls == 0
    assert result.messages and "case_7" in result.messages[0] and "'lesion'" in result.messages[0]
    assert not result.segmentation.array.any()
    assert result.segmentation.geometry.is_close(image.geometry, atol=1e-9)
    assert derive(_spec().stages[1], image, {"cord": np.zeros(image.shape, np.uint8)}) is None


def test_outputs_are_combined_on_the_input_grid(rng):
    image = _image(rng)
    runner = PipelineRunner("unused", spec=_spec())
    runner._predictors = {"cord": _Fixed(1), "lesion": _Fixed(1)}
    result = runner.predict(image)
    seg = result.segmentation
    assert seg.geometry.is_close(image.geometry, atol=1e-9)
    assert set(np.unique(seg.array)) == {1, 2}  # lesion windows overwrite the cord
    assert (result.stages["lesion"].array > 0).sum() == (seg.array == 2).sum()


def test_spec_rejects_a_source_that_is_not_an_earlier_stage():
    with pytest.raises(ValueError, match="not an earlier stage"):
        PipelineSpec(
            name="t",
            channel_names={"0": "CT"},
            labels={"background": 0, "a": 1},
            stages=[StageSpec(name="a", labels={"a": [1]}, input=BBoxCropInput(source="b"))],
        )
    data = _spec().model_dump(mode="json")
    assert PipelineSpec.model_validate(data) == _spec()


def test_previous_prediction_fill_takes_the_nearest_other_label_in_mm():
    from voxseg.pipelines.derive import derive, fill_labels
    from voxseg.pipelines.spec import PreviousPredictionInput, StageSpec

    rng = np.random.default_rng(5)
    seg = rng.integers(0, 3, (6, 9, 8)).astype(np.uint8)
    seg[2:4, 3:6, 2:5] = 3  # the 'small' class to fill
    spacing = (2.5, 0.7, 1.1)
    filled = fill_labels(seg, [3], spacing)
    # brute force: each filled voxel takes the value of the closest voxel (in mm) not filled
    keep = np.argwhere(seg != 3) * spacing
    for idx in np.argwhere(seg == 3):
        d = np.linalg.norm(keep - idx * spacing, axis=1)
        nearest = np.flatnonzero(np.isclose(d, d.min()))
        options = {int(seg[tuple((keep[k] / spacing).round().astype(int))]) for k in nearest}
        assert int(filled[tuple(idx)]) in options
    assert np.array_equal(filled[seg != 3], seg[seg != 3])
    # the derived input: image + channels of labels 1 and 2 only, label 3 nowhere
    stage = StageSpec(
        name="small",
        labels={"x": [3]},
        input=PreviousPredictionInput(source="whole", fill=[3]),
    )
    image = Image(rng.normal(size=seg.shape).astype(np.float32), spacing)
    derived = derive(stage, image, {"whole": seg}, None, {"whole": 3})
    assert derived.image.array.shape == (3, *seg.shape)
    np.testing.assert_array_equal(derived.image.array[1], filled == 1)
    np.testing.assert_array_equal(derived.image.array[2], filled == 2)


class _Map:
    """A stand-in predictor returning a given label map (the input's grid)."""

    def __init__(self, seg: np.ndarray) -> None:
        self.seg = seg

    def predict(self, image):
        from voxseg.inference import Prediction

        return Prediction(image.with_array(self.seg.copy()))


def test_small_stage_objects_outside_their_host_organ_are_dropped(rng):
    from voxseg.pipelines.spec import PreviousPredictionInput

    image = _image(rng, shape=(12, 40, 40), spacing=(1.0, 1.0, 1.0))
    whole = np.zeros(image.shape, np.uint8)
    whole[2:10, 4:24, 4:24] = 1  # organ
    whole[2:10, 28:38, 28:38] = 2  # another organ
    small = np.zeros(image.shape, np.uint8)
    small[5:7, 10:13, 10:13] = 1  # inside organ 1: kept
    small[5:7, 22:27, 10:13] = 1  # 2 of 5 columns inside, 2 more within the margin: kept
    small[5:7, 31:34, 31:34] = 1  # inside organ 2: dropped
    small[0:2, 30:33, 5:8] = 1  # background: dropped
    # a lesion the whole stage saw (its own lesion label, a hole in no organ, 6+ voxels from
    # either): the small stage's object there is kept
    whole[5:10, 28:38, 4:14] = 3
    small[6:9, 30:36, 6:12] = 1
    # a lesion the whole stage left as a gap (background) in the organ, 3+ voxels from its
    # walls: inside the organ, kept
    whole[3:9, 12:22, 12:22] = 0
    small[5:7, 14:20, 14:20] = 1
    spec = PipelineSpec(
        name="t",
        channel_names={"0": "CT"},
        labels={"background": 0, "organ": 1, "other": 2, "lesion": 3},
        stages=[
            StageSpec(
                name="whole",
                labels={"organ": [1], "other": [2], "lesion": [3]},
                output={"organ": 1, "other": 2},
            ),
            StageSpec(
                name="small",
                labels={"lesion": [3]},
                input=PreviousPredictionInput(source="whole", fill=[3]),
                output={"lesion": 3},
                inside={"lesion": "organ"},
            ),
        ],
    )
    runner = PipelineRunner("unused", spec=spec)
    runner._predictors = {"whole": _Map(whole), "small": _Map(small)}
    out = runner.predict(image).segmentation.array
    expected = np.where(whole == 3, 0, whole)  # the whole stage's lesions are not written
    expected[5:7, 10:13, 10:13] = 3
    expected[5:7, 22:27, 10:13] = 3
    expected[6:9, 30:36, 6:12] = 3
    expected[5:7, 14:20, 14:20] = 3
    np.testing.assert_array_equal(out, expected)
    # without the rule every object is written
    spec.stages[1].inside = {}
    runner = PipelineRunner("unused", spec=spec)
    runner._predictors = {"whole": _Map(whole), "small": _Map(small)}
    assert (runner.predict(image).segmentation.array == 3).sum() == (small == 1).sum()


def test_spec_rejects_an_inside_label_the_source_does_not_have():
    from voxseg.pipelines.spec import PreviousPredictionInput

    with pytest.raises(ValueError, match="'inside' needs 'liver'"):
        PipelineSpec(
            name="t",
            channel_names={"0": "CT"},
            labels={"background": 0, "organ": 1, "lesion": 2},
            stages=[
                StageSpec(name="whole", labels={"organ": [1]}, output={"organ": 1}),
                StageSpec(
                    name="small",
                    labels={"lesion": [2]},
                    input=PreviousPredictionInput(source="whole"),
                    output={"lesion": 2},
                    inside={"lesion": "liver"},
                ),
            ],
        )


@pytest.mark.parametrize("host", ["liver", "spleen"])
def test_paste_host_channel_is_the_hosts_derived_channel(host):
    """``paste_settings`` names the channel that ``derive`` fills with the host's mask."""
    from voxseg.pipelines.derive import fill_labels
    from voxseg.pipelines.spec import PreviousPredictionInput
    from voxseg.pipelines.train import paste_settings

    names = {"liver": 1, "kidney": 2, "lesion": 3, "spleen": 4}
    whole = StageSpec(name="whole", labels={k: [v] for k, v in names.items()})
    small = StageSpec(
        name="small",
        labels={"lesion": [3]},
        input=PreviousPredictionInput(source="whole", fill=[3]),
        inside={"lesion": host},
        paste=True,
    )
    spec = PipelineSpec(
        name="p",
        channel_names={"0": "CT", "1": "PET"},
        labels={"background": 0, **names},
        stages=[whole, small],
    )
    rng = np.random.default_rng(2)
    seg = rng.integers(0, 5, (6, 9, 8)).astype(np.uint8)
    image = Image(np.stack([rng.normal(size=seg.shape)] * 2).astype(np.float32), (1, 1, 1))
    derived = derive(small, image, {"whole": seg}, None, {"whole": 4})
    cfg = paste_settings(spec, small, n_img=2)
    assert cfg == {
        "classes": [1],
        "host_channel": cfg["host_channel"],
        "channels": [0, 1],
    }
    filled = fill_labels(seg, [3], (1, 1, 1))
    np.testing.assert_array_equal(derived.image.array[cfg["host_channel"]], filled == names[host])
    # without paste, or without a host channel, nothing is pasted
    assert paste_settings(spec, small.model_copy(update={"paste": False}), 2) is None
    assert paste_settings(spec, small.model_copy(update={"inside": {}}), 2) is None
