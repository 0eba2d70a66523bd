"""Copy-paste of labelled objects (``sampling.paste``), checked against hand-made cases and
scipy's connected components."""

from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage

from voxseg.sampling import PatchBatches, SamplingConfig, build_sampler
from voxseg.sampling.paste import PasteConfig, find_objects, make_object, paste_objects

LESION, LIVER_MEAN, LESION_MEAN = 4, 60.0, 30.0


def _ball(shape, centre, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def _donor(shape=(20, 20, 20), centres=((10, 10, 10),), radius=3):
    """CT channel (liver 60, lesions 30) and a liver mask channel; lesion label 4."""
    image = np.zeros((2, *shape), np.float32)
    image[0], image[1] = LIVER_MEAN, 1.0
    label = np.zeros(shape, np.int16)
    for c in centres:
        ball = _ball(shape, c, radius)
        image[0][ball] = LESION_MEAN
        label[ball] = LESION
    return image, label


def _objects(image, label, host_channel=1):
    out = []
    for value, start, size, mask in find_objects(label, [LESION], 32):
        sl = tuple(slice(a, a + b) for a, b in zip(start, size, strict=True))
        out.append(make_object(value, image[(slice(None), *sl)], mask, image[1][sl] > 0.5))
    return out


def _target(shape=(24, 32, 32), host_mean=100.0):
    """Left half outside the host (-50), right half host (``host_mean``), nothing labelled."""
    image = np.zeros((2, *shape), np.float32)
    image[0] = -50.0
    image[0, :, :, shape[2] // 2 :] = host_mean
    image[1, :, :, shape[2] // 2 :] = 1.0
    return image, np.zeros((1, *shape), np.int16)


def test_objects_are_the_connected_components_with_their_surroundings():
    image, label = _donor((30, 30, 30), ((8, 8, 8), (20, 20, 20), (8, 21, 9)), 3)
    objects = _objects(image, label)
    reference, n = ndimage.label(label == LESION, np.ones((3, 3, 3)))
    assert len(objects) == n == 3
    sizes = sorted(int(o.mask.sum()) for o in objects)
    assert sizes == sorted(int((reference == i).sum()) for i in range(1, n + 1))
    for o in objects:
        np.testing.assert_allclose(o.surround, [LIVER_MEAN, 1.0])
        assert o.image.shape[1:] == o.mask.shape
        # the box keeps two voxels of margin on every side
        for ax in range(3):
            profile = o.mask.any(axis=tuple(a for a in range(3) if a != ax))
            assert not profile[:2].any() and not profile[-2:].any()


def test_large_objects_are_not_banked():
    label = np.zeros((40, 40, 40), np.int16)
    label[5:35, 5:35, 5:35] = LESION
    assert find_objects(label, [LESION], 16) == []


@pytest.mark.parametrize("gain", [1.0, 0.5])
def test_the_object_keeps_its_contrast_to_the_host_scaled(gain):
    objects = _objects(*_donor())
    image, label = _target(host_mean=100.0)
    cfg = PasteConfig(classes=[LESION], host_channel=1, channels=[0], contrast=(gain, gain))
    placed = paste_objects(image, label, objects * 3, np.random.default_rng(0), cfg)
    assert placed == 3
    inside = label[0] == LESION
    assert inside.sum() == 3 * objects[0].mask.sum()
    # donor: lesion 30 in liver 60 (contrast -30); host 100 -> 100 - 30·gain
    np.testing.assert_allclose(image[0][inside], 100.0 - 30.0 * gain)
    # the host channel is not touched, and every lesion voxel lies in the host
    assert (image[1][inside] == 1.0).all()
    # around the objects the host keeps its own value (the rim of a flat donor is flat)
    assert set(np.unique(image[0][~inside])) == {-50.0, 100.0}


def test_objects_go_only_onto_free_host_voxels():
    objects = _objects(*_donor())
    image, label = _target()
    label[0, :, :, 28:] = 2  # part of the host already holds another class
    cfg = PasteConfig(classes=[LESION], host_channel=1, max_objects=4)
    rng = np.random.default_rng(1)
    for _ in range(20):
        im, lab = image.copy(), label.copy()
        placed = paste_objects(im, lab, objects * 4, rng, cfg)
        new = lab[0] == LESION
        assert new.any()
        assert (image[1][new] == 1).all() and (label[0][new] == 0).all()
        # pasted objects do not touch each other or the other class (one-voxel rim kept free)
        grown = ndimage.binary_dilation(new, np.ones((3, 3, 3)))
        assert not (grown & (label[0] == 2)).any()
        _, n = ndimage.label(new, np.ones((3, 3, 3)))
        assert n == placed


def test_nothing_is_pasted_without_room():
    objects = _objects(*_donor())
    image, label = _target()
    image[1] = 0.0  # no host anywhere
    before = image.copy()
    cfg = PasteConfig(classes=[LESION], host_channel=1)
    assert paste_objects(image, label, objects, np.random.default_rng(0), cfg) == 0
    np.testing.assert_array_equal(image, before)
    assert not label.any()


def test_a_host_label_is_replaced_by_the_object():
    objects = _objects(*_donor())
    image, _ = _target()
    label = np.zeros((1, 24, 32, 32), np.int16)
    label[0, :, :, 16:] = 1  # the organ is a label here, not a channel
    cfg = PasteConfig(classes=[LESION], host_label=1, channels=[0], contrast=(1, 1))
    assert paste_objects(image, label, objects, np.random.default_rng(3), cfg) == 1
    assert (label[0] == LESION).sum() == objects[0].mask.sum()
    assert ((label[0] == LESION) <= (image[1] == 1)).all()


def test_a_two_d_patch_receives_one_slice_of_the_object():
    objects = _objects(*_donor())
    image, label = _target(shape=(1, 32, 32))
    cfg = PasteConfig(classes=[LESION], host_channel=1)
    assert paste_objects(image, label, objects, np.random.default_rng(0), cfg) == 1
    area = (label[0, 0] == LESION).sum()
    # a slice of a radius-3 ball: a disc of 29 voxels at its centre, smaller off centre
    assert 1 <= area <= 29


def test_a_channel_the_input_lacks_is_named():
    objects = _objects(*_donor())
    image, label = _target()
    cfg = PasteConfig(classes=[LESION], host_channel=5)
    with pytest.raises(ValueError, match=r"channel 5, but the input has 2 channel\(s\)"):
        paste_objects(image, label, objects, np.random.default_rng(0), cfg)


def test_the_config_names_one_host():
    with pytest.raises(ValidationError, match="not both"):
        PasteConfig(classes=[1], host_channel=1, host_label=1)
    with pytest.raises(ValidationError, match="low <= high"):
        PasteConfig(classes=[1], contrast=(1.0, 0.5))


class _Store:
    def __init__(self, cases):
        self.cases = cases

    def open(self, case_id):
        return self.cases[case_id]


def _stored(with_lesion: bool):
    image, label = _donor((24, 32, 32), ((12, 16, 16),) if with_lesion else ())
    locs = {str(LESION): np.argwhere(label == LESION).tolist()} if with_lesion else {}
    return image, label[None], SimpleNamespace(foreground_locations=locs)


def test_batches_receive_objects_from_other_cases_reproducibly():
    store = _Store({"a": _stored(True), "b": _stored(False)})
    sampling = SamplingConfig(
        foreground_fraction=0.0,
        paste={
            "classes": [LESION],
            "host_channel": 1,
            "probability": 1.0,
            "channels": [0],
            "contrast": [1, 1],
        },
    )

    def batches(paste):
        return PatchBatches(
            store, ["a", "b"], (16, 16, 16), 2, build_sampler(sampling), seed=4, paste=paste
        )

    plain, pasted = batches(None), batches(sampling.paste)
    found = 0
    for i in range(10):
        a, b = pasted[i], pasted[i]
        assert np.array_equal(a["seg"], b["seg"]) and np.array_equal(a["image"], b["image"])
        # the first crop of a batch is cut before any paste draws: the same crop plus objects
        first = plain[i]["seg"][0, 0].numpy() == LESION
        assert (a["seg"][0, 0].numpy()[first] == LESION).all()
        for k in range(2):
            lesion = a["seg"][k, 0].numpy() == LESION
            found += int(lesion.any())
            # lesion voxels carry the lesion's value: 30 in a liver of 60
            np.testing.assert_allclose(a["image"][k, 0].numpy()[lesion], LESION_MEAN, atol=1e-4)
    assert found >= 10
