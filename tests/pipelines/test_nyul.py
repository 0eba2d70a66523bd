import numpy as np
import pytest

from voxseg.normalization import NORMALIZATIONS
from voxseg.normalization.nyul import fit_nyul, nyul_normalization, piecewise_linear

NYUL = "nyul"


def test_mapping_matches_a_hand_computation():
    image = np.arange(1, 102, dtype=np.float32).reshape(1, 1, 101)  # 1..101
    # percentiles of 1..101 (linear interpolation): p1 = 2, p50 = 51, p99 = 100
    norm = nyul_normalization(landmarks=[0.0, 10.0, 100.0], percentiles=[1, 50, 99])
    out = norm(image, None).ravel()
    assert out[1] == pytest.approx(0.0)  # value 2 → 0
    assert out[50] == pytest.approx(10.0)  # value 51 → 10
    assert out[99] == pytest.approx(100.0)  # value 100 → 100
    assert out[25] == pytest.approx((26 - 2) / (51 - 2) * 10.0, rel=1e-5)
    assert out[75] == pytest.approx(10 + (76 - 51) / (100 - 51) * 90.0, rel=1e-5)
    # beyond the end landmarks the end segments continue
    assert out[100] == pytest.approx(100 + 1 * 90.0 / 49.0, rel=1e-5)
    assert out[0] == pytest.approx(0 - 1 * 10.0 / 49.0, rel=1e-5)


def test_zero_background_is_left_out_of_the_percentiles():
    a = np.arange(1, 102, dtype=np.float32)
    padded = np.concatenate([np.zeros(500, np.float32), a]).reshape(1, 1, -1)
    norm = nyul_normalization(landmarks=[0.0, 10.0, 100.0], percentiles=[1, 50, 99])
    out = norm(padded, None).ravel()[500:]
    np.testing.assert_allclose(out, norm(a.reshape(1, 1, -1), None).ravel(), rtol=1e-6)


def test_learned_standardisation_removes_linear_intensity_changes(rng):
    base = rng.gamma(2.0, 50.0, size=(6, 12, 12)).astype(np.float32) + 1
    images = [base, 3.0 * base + 40.0, 0.5 * base + 7.0]
    params = fit_nyul(images)
    assert params["landmarks"][0] == 0.0 and params["landmarks"][-1] == pytest.approx(1.0)
    assert np.all(np.diff(params["landmarks"]) > 0)
    norm = NORMALIZATIONS.build(NYUL, **params)  # resolvable without importing voxseg.pipelines
    ref = norm(images[0], None)
    for other in images[1:]:
        np.testing.assert_allclose(norm(other, None), ref, atol=1e-4)


def test_piecewise_linear_ignores_repeated_landmarks():
    out = piecewise_linear(
        np.array([0.0, 1.0, 2.0]), np.array([0.0, 1.0, 1.0, 2.0]), np.array([0, 5, 6, 10.0])
    )
    np.testing.assert_allclose(out, [0, 5, 10])
