"""Ensembles of saved probabilities: the mean, its argmax or region painting, geometry checks,
missing and finished cases, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data import write_dataset_json
from voxseg.errors import VoxsegError
from voxseg.inference.ensemble import (
    ensemble_folders,
    load_probabilities,
    mean_probabilities,
)
from voxseg.inference.files import save_probabilities_npz
from voxseg.io import Image, read_image, write_image

SHAPE = (4, 6, 5)
SPACING = (2.5, 0.8, 0.7)
ORIGIN = (-10.0, 4.0, 33.0)
# an oblique direction (columns: LPS unit vectors of array axes z, y, x)
_c, _s = np.cos(0.3), np.sin(0.3)
DIRECTION = np.array([[0.0, -_s, _c], [0.0, _c, _s], [1.0, 0.0, 0.0]])


def _softmax(rng: np.random.Generator, classes: int = 3) -> np.ndarray:
    logits = rng.normal(size=(classes, *SHAPE)) * 2
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float16)


def _write_case(folder, case, probs, ending=".nrrd", origin=ORIGIN) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = Image(probs, SPACING, origin, DIRECTION)
    save_probabilities_npz(folder / f"{case}.npz", image)
    labels = np.argmax(probs, 0).astype(np.uint8)
    write_image(Image(labels, SPACING, origin, DIRECTION), folder / f"{case}{ending}")


def _inputs(tmp_path, n_models=3, cases=("a", "b"), seed=0):
    rng = np.random.default_rng(seed)
    folders = [tmp_path / f"model{m}" for m in range(n_models)]
    probs = {}
    for case in cases:
        for folder in folders:
            p = _softmax(rng)
            probs[folder.name, case] = p
            _write_case(folder, case, p)
    return folders, probs


def test_mean_is_the_hand_computed_mean(tmp_path):
    folders, probs = _inputs(tmp_path)
    mean = mean_probabilities([f / "a.npz" for f in folders])
    expected = sum(probs[f.name, "a"].astype(np.float64) for f in folders) / 3
    assert mean.array.dtype == np.float32
    np.testing.assert_allclose(mean.array, expected, atol=1e-6)
    assert mean.geometry.is_close(load_probabilities(folders[0] / "a.npz").geometry)


def test_labels_are_the_argmax_of_the_mean_in_the_npz_geometry(tmp_path):
    folders, probs = _inputs(tmp_path)
    out = tmp_path / "ens"
    report = ensemble_folders(folders, out, save_probabilities=True)
    assert report.done == ["a", "b"] and not report.missing
    for case in ("a", "b"):
        expected = np.argmax(sum(probs[f.name, case].astype(np.float64) for f in folders), 0)
        seg = read_image(out / f"{case}.nrrd")  # the ending of the first input's label maps
        np.testing.assert_array_equal(seg.array, expected)
        assert seg.spacing == pytest.approx(SPACING)
        assert seg.origin == pytest.approx(ORIGIN)
        np.testing.assert_allclose(seg.direction, DIRECTION, atol=1e-6)
        saved = load_probabilities(out / f"{case}.npz")
        mean = sum(probs[f.name, case].astype(np.float64) for f in folders) / 3
        np.testing.assert_allclose(saved.array, mean, atol=1e-3)  # float16 on disk


def test_mismatched_geometry_names_the_file(tmp_path):
    folders, _ = _inputs(tmp_path, n_models=2, cases=("a",))
    rng = np.random.default_rng(5)
    _write_case(folders[1], "a", _softmax(rng), origin=(0.0, 0.0, 0.0))
    with pytest.raises(VoxsegError, match=r"model1/a\.npz: geometry differs.*origin"):
        ensemble_folders(folders, tmp_path / "ens")


def test_different_class_counts_are_refused(tmp_path):
    folders, _ = _inputs(tmp_path, n_models=2, cases=("a",))
    _write_case(folders[1], "a", _softmax(np.random.default_rng(1), classes=4))
    with pytest.raises(VoxsegError, match=r"model1/a\.npz: 4 classes"):
        ensemble_folders(folders, tmp_path / "ens")


def test_cases_missing_from_an_input_are_reported_and_the_rest_done(tmp_path):
    folders, _ = _inputs(tmp_path, n_models=2, cases=("a", "b", "c"))
    (folders[1] / "b.npz").unlink()
    report = ensemble_folders(folders, tmp_path / "ens")
    assert report.done == ["a", "c"]
    assert report.missing == {"b": [str(folders[1])]}
    assert not (tmp_path / "ens" / "b.nrrd").exists()


def test_finished_cases_are_skipped(tmp_path):
    folders, _ = _inputs(tmp_path, n_models=2)
    out = tmp_path / "ens"
    ensemble_folders(folders, out)
    marker = np.full(SHAPE, 7, np.uint8)
    write_image(Image(marker, SPACING, ORIGIN, DIRECTION), out / "a.nrrd")
    report = ensemble_folders(folders, out)
    assert report.skipped == ["a", "b"] and report.done == []
    assert (read_image(out / "a.nrrd").array == 7).all()
    report = ensemble_folders(folders, out, overwrite=True, fmt="nii.gz")
    assert report.done == ["a", "b"] and (out / "a.nii.gz").is_file()


def test_region_models_paint_regions_in_class_order(tmp_path):
    """Sigmoid outputs of regions (whole=1,2; core=2): mean > 0.5, later regions on top."""
    rng = np.random.default_rng(3)
    folders = [tmp_path / "m0", tmp_path / "m1"]
    sig = [rng.random((2, *SHAPE)).astype(np.float16) for _ in folders]
    for folder, p in zip(folders, sig, strict=True):
        _write_case(folder, "a", p, ending=".nii.gz")
    ds = tmp_path / "raw"
    ds.mkdir()
    write_dataset_json(
        ds, {0: "T1"}, {"background": 0, "whole": [1, 2], "core": 2}, 1, regions_class_order=[1, 2]
    )
    ensemble_folders(folders, tmp_path / "ens", dataset=ds / "dataset.json")
    mean = (sig[0].astype(np.float64) + sig[1]) / 2
    expected = np.zeros(SHAPE, np.uint8)
    for z, y, x in np.ndindex(SHAPE):
        if mean[0, z, y, x] > 0.5:
            expected[z, y, x] = 1
        if mean[1, z, y, x] > 0.5:
            expected[z, y, x] = 2
    np.testing.assert_array_equal(read_image(tmp_path / "ens" / "a.nii.gz").array, expected)


def test_sigmoid_outputs_without_a_dataset_are_refused(tmp_path):
    rng = np.random.default_rng(4)
    folders = [tmp_path / "m0", tmp_path / "m1"]
    for folder in folders:
        _write_case(folder, "a", rng.random((2, *SHAPE)).astype(np.float16))
    with pytest.raises(VoxsegError, match="do not sum to 1.*--dataset"):
        ensemble_folders(folders, tmp_path / "ens")


def test_dataset_json_of_a_validation_fold_is_found(tmp_path):
    """fold_k/validation/ inputs: the fold's dataset.json (regions) is used."""
    rng = np.random.default_rng(6)
    folders = [tmp_path / m / "fold_0" / "validation" for m in ("m0", "m1")]
    for folder in folders:
        _write_case(folder, "a", rng.random((1, *SHAPE)).astype(np.float16))
        write_dataset_json(folder.parent, {0: "CT"}, {"background": 0, "organ": [1]}, 1)
    ensemble_folders(folders, tmp_path / "ens")
    assert read_image(tmp_path / "ens" / "a.nrrd").array.max() == 1


def test_cli_takes_several_inputs_after_one_flag(tmp_path):
    folders, probs = _inputs(tmp_path, n_models=3, cases=("a",))
    out = tmp_path / "ens"
    result = CliRunner().invoke(
        app, ["ensemble", "-i", *map(str, folders), "-o", str(out), "--save-probabilities"]
    )
    assert result.exit_code == 0, result.output
    assert "ensembled 1" in result.output
    expected = np.argmax(sum(probs[f.name, "a"].astype(np.float64) for f in folders), 0)
    np.testing.assert_array_equal(read_image(out / "a.nrrd").array, expected)
    assert (out / "a.npz").is_file()


def test_cli_reports_a_single_input_as_an_error(tmp_path):
    folders, _ = _inputs(tmp_path, n_models=1, cases=("a",))
    result = CliRunner().invoke(app, ["ensemble", "-i", str(folders[0]), "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "at least two" in result.output
