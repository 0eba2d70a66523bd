"""benchmarks/vessels_large.py: the false-positive margin, and the whole benchmark at --quick."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the script imports _common
    try:
        spec = importlib.util.spec_from_file_location(
            "bench_vessels_large", ROOT / "benchmarks" / "vessels_large.py"
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_vessels_large"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_far_from_matches_the_distance_transform_of_the_whole_grid(bench):
    rng = np.random.default_rng(0)
    mask = np.zeros((30, 40, 50), bool)
    mask[10:14, 12:30, 20:24] = True
    mask[rng.integers(0, 30, 5), rng.integers(0, 40, 5), rng.integers(0, 50, 5)] = True
    spacing = (0.7, 0.5, 0.6)
    far = bench.far_from(mask, spacing, 2.0, ndimage)
    reference = ndimage.distance_transform_edt(~mask, sampling=spacing) > 2.0
    np.testing.assert_array_equal(far, reference)
    assert bench.far_from(np.zeros((4, 4, 4), bool), spacing, 2.0, ndimage).all()


@pytest.mark.slow
def test_quick_run_scores_both_systems_on_the_trees_and_the_field(bench, tmp_path):
    """The whole benchmark at tiny sizes (1 minute of training each; minutes in all)."""
    report = bench.main(["--quick", "--work", str(tmp_path / "work")])
    cases = report["cases"]
    assert {(c["system"], c["kind"]) for c in cases} == {
        (s, k) for s in ("tracing", "global") for k in ("tree", "field")
    }
    for c in cases:
        assert 0.0 <= c["dice"] <= 1.0
        assert 0.0 <= c["centerline_overlap"] <= 1.0
        assert c["distal_length_mm"] > 0  # the trees have branches beyond the 2nd bifurcation
        assert c["fp_outside_ml"] >= 0
        assert c["seconds"] > 0 and c["peak_rss_mb"] > 100  # a python process with torch
        if c["kind"] == "field":
            assert c["shape"] == [80, 160, 160]
            assert math.isnan(c["fp_on_distractors"]) or 0 <= c["fp_on_distractors"] <= 1
    training = report["training"]
    assert training["tracing"]["budget_seconds"] == training["global"]["budget_seconds"] == 60
    assert (tmp_path / "work" / "results.md").is_file()
