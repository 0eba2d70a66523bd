"""Each normalisation scheme against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest

from voxseg.normalization import NORMALIZATIONS, normalize, scheme_for_channel


@pytest.fixture
def image(rng):
    return rng.normal(40, 25, (4, 6, 5)).astype(np.float32)


def test_ct_clips_then_zscores_with_dataset_statistics(image):
    out = NORMALIZATIONS.build("ct", mean=30.0, std=12.0, lower=10.0, upper=60.0)(image, None)
    expected = (np.minimum(np.maximum(image.astype(np.float64), 10), 60) - 30) / 12
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_zscore_whole_image(image):
    out = NORMALIZATIONS.build("zscore")(image, None)
    x = image.astype(np.float64)
    np.testing.assert_allclose(out, (x - x.mean()) / x.std(), atol=1e-5)


def test_zscore_within_mask_leaves_outside_untouched(image):
    mask = np.zeros(image.shape, bool)
    mask[1:3, 2:5, 1:4] = True
    image[~mask] = 0
    out = NORMALIZATIONS.build("zscore", use_mask=True)(image, mask)
    inside = image[mask].astype(np.float64)
    np.testing.assert_allclose(out[mask], (inside - inside.mean()) / inside.std(), atol=1e-5)
    assert np.all(out[~mask] == 0)


def test_rescale_rgb_and_none(image):
    out = NORMALIZATIONS.build("rescale_to_0_1")(image, None)
    np.testing.assert_allclose(out, (image - image.min()) / (image.max() - image.min()), atol=1e-6)
    rgb = np.arange(256, dtype=np.float32).reshape(4, 8, 8)
    np.testing.assert_allclose(NORMALIZATIONS.build("rgb_to_0_1")(rgb, None), rgb / 255.0)
    np.testing.assert_array_equal(NORMALIZATIONS.build("none")(image, None), image)


def test_channel_names_choose_schemes():
    assert scheme_for_channel("CT") == "ct"
    assert scheme_for_channel("T2") == "zscore"
    assert scheme_for_channel("noNorm") == "none"
    assert scheme_for_channel("rgb_to_0_1") == "rgb_to_0_1"
    assert scheme_for_channel("rescale_to_0_1") == "rescale_to_0_1"


def test_plugin_registers_by_name(image):
    @NORMALIZATIONS.register("test_double")
    def double():
        return lambda img, mask=None: img * 2

    try:
        assert scheme_for_channel("test_double") == "test_double"
        out = normalize(np.stack([image, image]), [("test_double", {}), ("none", {})])
        np.testing.assert_allclose(out[0], image * 2)
        np.testing.assert_allclose(out[1], image)
    finally:
        NORMALIZATIONS._items.pop("test_double")
