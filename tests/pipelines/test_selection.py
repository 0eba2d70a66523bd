"""Model selection on fabricated cross-validation results: merged means, ranking, ensembles,
post-processing and the printed commands (no training: validation folders are written here)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.config import write_json
from voxseg.data import write_dataset_json
from voxseg.errors import VoxsegError
from voxseg.evaluation import evaluate_folder
from voxseg.inference.files import save_probabilities_npz
from voxseg.inference.predictor import Prediction
from voxseg.io import Image, write_image
from voxseg.pipelines.selection import merged_summary, select_models
from voxseg.training.config import ModelConfig

NAME = "Dataset001_Toy"
SPACING = (2.0, 1.0, 1.0)
SHAPE = (6, 16, 16)
FOLDS = {"0": ["case_0", "case_1"], "1": ["case_2", "case_3", "case_4", "case_5"]}
LABELS = (1, 2)


def _reference(i: int) -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    seg[1:5, 2 + i % 3 : 9 + i % 3, 2:9] = 1
    seg[2:5, 10:14, 9 + i % 2 : 14 + i % 2] = 2
    return seg


def _dice(pred: np.ndarray, ref: np.ndarray, value: int) -> float:
    p, r = pred == value, ref == value
    return 2 * np.logical_and(p, r).sum() / (p.sum() + r.sum())


def _onehot(seg: np.ndarray) -> np.ndarray:
    return np.stack([seg == v for v in range(3)]).astype(np.float64)


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "voxseg_home"
    raw = home / "raw" / NAME
    (raw / "labelsTr").mkdir(parents=True)
    (raw / "imagesTr").mkdir()
    write_dataset_json(raw, {0: "CT"}, {"background": 0, "a": 1, "b": 2}, 6)
    for i in range(6):
        write_image(Image(_reference(i), SPACING), raw / "labelsTr" / f"case_{i}.nii.gz")
        image = _reference(i).astype(np.float32) * 100
        write_image(Image(image, SPACING), raw / "imagesTr" / f"case_{i}_0000.nii.gz")
    return home


def _model_folder(home, model: str, configuration: str):
    folder = home / "models" / NAME / "default" / model
    folder.mkdir(parents=True)
    write_json(folder / "config.json", ModelConfig(dataset=NAME, configuration=configuration))
    (folder / "dataset.json").write_text((home / "raw" / NAME / "dataset.json").read_text())
    return folder


def _add_fold(home, folder, fold: str, preds: dict[str, np.ndarray], probs=None) -> None:
    val = folder / f"fold_{fold}" / "validation"
    val.mkdir(parents=True)
    for case, pred in preds.items():
        write_image(Image(pred, SPACING), val / f"{case}.nii.gz")
        if probs is not None:
            save_probabilities_npz(val / f"{case}.npz", Image(probs[case], SPACING))
    evaluate_folder(val, home / "raw" / NAME / "labelsTr", surface=False)  # as validate_fold


def _good(i: int) -> np.ndarray:
    """Near-perfect, plus a false-positive speck of label 1 far from the organ."""
    pred = _reference(i)
    pred[1:5, 2 + i % 3, 2:9] = 0
    pred[5, 14:16, 0:2] = 1
    return pred


def _worse(i: int) -> np.ndarray:
    pred = _reference(i)
    pred[1:5, 2 + i % 3 : 5 + i % 3, 2:9] = 0
    pred[2:5, 10:14, 9 + i % 2 : 11 + i % 2] = 0
    if i >= 2:  # fold 1 is worse still: the merged mean differs from the mean of fold means
        pred[pred == 2] = 0
    return pred


def _fabricate(home, models=("good", "worse")):
    makers = {"good": (_good, "3d_fullres"), "worse": (_worse, "2d")}
    for model in models:
        make, configuration = makers[model]
        folder = _model_folder(home, model, configuration)
        for fold, cases in FOLDS.items():
            _add_fold(home, folder, fold, {c: make(int(c[-1])) for c in cases})


def _expected_foreground(make) -> float:
    per_label = [np.mean([_dice(make(i), _reference(i), v) for i in range(6)]) for v in LABELS]
    return float(np.mean(per_label))


def test_merged_mean_weighs_every_case_once(home):
    _fabricate(home)
    from voxseg.pipelines.selection import find_trained_models

    models = {m.name: m for m in find_trained_models(home / "models" / NAME / "default")}
    summary = merged_summary(models["worse"])
    assert summary["num_cases"] == 6
    expected = _expected_foreground(_worse)
    assert summary["foreground_mean"]["dice"] == pytest.approx(expected, abs=1e-9)
    fold_means = [
        json.loads((models["worse"].folds[k] / "summary.json").read_text())["foreground_mean"][
            "dice"
        ]
        for k in FOLDS
    ]
    assert abs(np.mean(fold_means) - expected) > 0.01  # not the mean of fold means


def test_ranking_postprocessing_and_commands(home):
    _fabricate(home)
    selection = select_models(NAME, home=home)
    assert [c.name for c in selection.ranking] == ["good", "worse"]
    good, worse = selection.ranking
    assert good.foreground_dice == pytest.approx(_expected_foreground(_good), abs=1e-9)
    assert worse.foreground_dice == pytest.approx(_expected_foreground(_worse), abs=1e-9)
    assert good.dice["a"] == pytest.approx(
        np.mean([_dice(_good(i), _reference(i), 1) for i in range(6)]), abs=1e-9
    )
    assert good.num_cases == 6 and good.folds == ["0", "1"]
    # no probabilities were saved: no ensemble, and the reason is given
    assert "ensembles with good" in selection.skipped

    # the speck is removed by keeping label 1's largest component
    assert any(
        s["name"] == "keep_largest_component" and 1 in (s["labels"] or [1])
        for s in selection.postprocessing
    )

    def without_speck(i):
        pred = _good(i)
        pred[5, 14:16, 0:2] = 0
        return pred

    assert selection.postprocessed_dice == pytest.approx(
        _expected_foreground(without_speck), abs=1e-9
    )

    pp = home / "reports" / NAME / "selection" / "good" / "postprocessing.json"
    folder = home / "models" / NAME / "default" / "good"
    assert selection.commands == [
        f"voxseg predict -i INPUT_FOLDER -o OUTPUT_FOLDER -m {folder} --folds 0 1 --no-postprocess",
        f"voxseg postprocess apply OUTPUT_FOLDER OUTPUT_FOLDER_PP --config {pp}",
    ]
    report = json.loads((home / "reports" / NAME / "selection.json").read_text())
    assert [c["name"] for c in report["ranking"]] == ["good", "worse"]
    assert report["best"]["postprocessing"] == selection.postprocessing
    assert report["commands"] == selection.commands
    assert json.loads(pp.read_text())["steps"] == selection.postprocessing


def test_filters_and_incomplete_models(home):
    _fabricate(home)
    partial = _model_folder(home, "partial", "3d_lowres")
    _add_fold(home, partial, "0", {c: _reference(int(c[-1])) for c in FOLDS["0"]})

    selection = select_models(NAME, home=home, postprocess=False)
    assert [c.name for c in selection.ranking] == ["good", "worse"]
    assert "fold(s) 1" in selection.skipped["partial"]

    only_fold_0 = select_models(NAME, home=home, folds=["0"], postprocess=False)
    assert only_fold_0.best.name == "partial"  # perfect on fold 0
    assert only_fold_0.best.foreground_dice == pytest.approx(1.0)

    only_2d = select_models(NAME, home=home, configs=["2d"], postprocess=False)
    assert [c.name for c in only_2d.ranking] == ["worse"]
    with pytest.raises(VoxsegError, match="nope"):
        select_models(NAME, home=home, models=["good", "nope"])


def _noisy_probabilities(seed: int, weight: float) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(6):
        p = _onehot(_reference(i)) * weight + rng.random((3, *SHAPE))
        out[f"case_{i}"] = (p / p.sum(0)).astype(np.float16)
    return out


def _fabricate_with_probabilities(home) -> dict[str, dict[str, np.ndarray]]:
    probs = {"m1": _noisy_probabilities(1, 0.6), "m2": _noisy_probabilities(2, 0.6)}
    for model, configuration in (("m1", "3d_fullres"), ("m2", "2d")):
        folder = _model_folder(home, model, configuration)
        for fold, cases in FOLDS.items():
            p = {c: probs[model][c] for c in cases}
            preds = {c: np.argmax(p[c], 0).astype(np.uint8) for c in cases}
            _add_fold(home, folder, fold, preds, probs=p)
    return probs


def test_pairwise_ensemble_from_validation_probabilities(home):
    probs = _fabricate_with_probabilities(home)
    selection = select_models(NAME, home=home, postprocess=False)
    names = [c.name for c in selection.ranking]
    assert "ensemble__m1__m2" in names and len(names) == 3

    def ensembled(i):
        c = f"case_{i}"
        return np.argmax(probs["m1"][c].astype(np.float64) + probs["m2"][c], 0)

    ens = next(c for c in selection.ranking if c.is_ensemble)
    assert ens.foreground_dice == pytest.approx(_expected_foreground(ensembled), abs=1e-9)
    assert ens.num_cases == 6
    singles = [c.foreground_dice for c in selection.ranking if not c.is_ensemble]
    assert selection.best is ens and ens.foreground_dice > max(singles)
    m1 = home / "models" / NAME / "default" / "m1"
    m2 = home / "models" / NAME / "default" / "m2"
    assert selection.commands == [
        f"voxseg predict -i INPUT_FOLDER -o OUTPUT_FOLDER_m1 -m {m1} --folds 0 1 "
        "--save-probabilities --no-postprocess",
        f"voxseg predict -i INPUT_FOLDER -o OUTPUT_FOLDER_m2 -m {m2} --folds 0 1 "
        "--save-probabilities --no-postprocess",
        "voxseg ensemble -i OUTPUT_FOLDER_m1 OUTPUT_FOLDER_m2 -o OUTPUT_FOLDER",
    ]


def test_models_without_every_validation_probability_are_not_ensembled(home):
    _fabricate_with_probabilities(home)
    (home / "models" / NAME / "default" / "m2" / "fold_1" / "validation" / "case_4.npz").unlink()
    selection = select_models(NAME, home=home, postprocess=False)
    assert [c.name for c in selection.ranking] == ["m1", "m2"]
    assert "--predict-probabilities" in selection.skipped["ensembles with m2"]


class _StubPredictor:
    """Stands in for a fold's network: probabilities of the reference, sharpened."""

    calls: list[dict] = []

    def __init__(self, model_dir, **kwargs):
        self.calls.append({"model": model_dir.name, **kwargs})

    def predict(self, image, probabilities=False):
        ref = (np.asarray(image.array).reshape(SHAPE) / 100).astype(np.uint8)
        probs = (_onehot(ref) * 0.9 + 0.05).astype(np.float16)
        return Prediction(image.with_array(ref), image.with_array(probs))


def test_missing_validation_probabilities_are_predicted(home):
    _fabricate(home)
    _StubPredictor.calls = []
    selection = select_models(
        NAME, home=home, predict_probabilities=True, predictor_factory=_StubPredictor
    )
    calls = sorted((c["model"], tuple(c["folds"])) for c in _StubPredictor.calls)
    assert calls == [("good", ("0",)), ("good", ("1",)), ("worse", ("0",)), ("worse", ("1",))]
    assert all(c["postprocess"] is False for c in _StubPredictor.calls)
    for model in ("good", "worse"):
        for fold, cases in FOLDS.items():
            val = home / "models" / NAME / "default" / model / f"fold_{fold}" / "validation"
            assert all((val / f"{c}.npz").is_file() for c in cases)
    ens = next(c for c in selection.ranking if c.is_ensemble)
    assert ens.foreground_dice == pytest.approx(1.0)  # the stub predicts the reference


def test_cli_prints_the_ranking_and_the_command(home):
    _fabricate(home)
    result = CliRunner().invoke(
        app,
        ["select", NAME, "--home", str(home), "--models", "good", "worse", "--no-postprocess"],
    )
    assert result.exit_code == 0, result.output
    folder = home / "models" / NAME / "default" / "good"
    assert (
        f"voxseg predict -i INPUT_FOLDER -o OUTPUT_FOLDER -m {folder} --folds 0 1 --no-postprocess"
        in result.output
    )
    assert "selection.json written" in result.output
    assert (home / "reports" / NAME / "selection.json").is_file()
