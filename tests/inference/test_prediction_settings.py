"""Prediction settings have one owner: the model's ``config.prediction``. Validation after
training and ``voxseg predict`` read it; CLI flags only override it; a misspelt setting or
post-processing step is an error."""

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.config import apply_overrides, load_model
from voxseg.errors import VoxsegError
from voxseg.inference import Predictor, predictor
from voxseg.io import read_image
from voxseg.training import ModelConfig, train_fold
from voxseg.training.config import PredictionConfig


def test_misspelt_prediction_setting_lists_valid_keys():
    with pytest.raises(VoxsegError, match=r"prediction\.ttaa.*sigma_scale, step, tta"):
        apply_overrides(ModelConfig(dataset="d"), ["prediction.ttaa=false"])


def test_postprocessing_steps_are_checked_when_the_config_is_read(tmp_path):
    cfg = apply_overrides(
        ModelConfig(dataset="d"), ['postprocessing=[{"name": "fill_holes", "labels": [1]}]']
    )
    cfg = apply_overrides(cfg, ["postprocessing.0.slice_wise=true"])
    assert cfg.postprocessing[0].arguments() == {
        "name": "fill_holes",
        "labels": [1],
        "slice_wise": True,
    }
    with pytest.raises(VoxsegError, match="fil_holes.*fill_holes"):
        apply_overrides(cfg, ['postprocessing=[{"name": "fil_holes"}]'])
    with pytest.raises(VoxsegError, match="slicewise"):
        apply_overrides(cfg, ["postprocessing.0.slicewise=true"])
    path = tmp_path / "config.json"
    data = cfg.model_dump(mode="json")
    data["postprocessing"][0]["axiss"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(VoxsegError, match=r"(?s)config\.json.*axiss"):
        load_model(ModelConfig, path)


def test_predictor_reads_the_model_settings_and_flags_override(tiny_model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    cfg = load_model(ModelConfig, folder / "config.json")
    cfg = apply_overrides(cfg, ["prediction.tta=false", "prediction.step=0.8"])
    (folder / "config.json").write_text(cfg.model_dump_json())
    own = Predictor(folder, device="cpu").settings
    assert (own.tta, own.step) == (False, 0.8)
    over = Predictor(folder, device="cpu", tta=True, step=0.25).settings
    assert (over.tta, over.step) == (True, 0.25)
    default = PredictionConfig()
    assert (default.tta, default.step, default.sigma_scale) == (True, 0.5, 1 / 8)
    with pytest.raises(VoxsegError, match="step"):
        Predictor(folder, device="cpu", step=1.5)


def test_validation_and_predict_use_the_same_settings(tiny_home, monkeypatch, tmp_path):
    """A model trained with ``prediction.tta=false`` and ``prediction.step=0.75`` is validated
    with them and ``voxseg predict`` (no flags) predicts with them: the same windows, and the
    same label map for a validation case."""
    from voxseg.cli import app

    seen = []
    real = predictor.predict_logits_and_votes

    def spy(data, networks, num_outputs, settings, **kwargs):
        seen.append((settings.tta, settings.step, settings.sigma_scale))
        return real(data, networks, num_outputs, settings, **kwargs)

    monkeypatch.setattr(predictor, "predict_logits_and_votes", spy)
    cfg = apply_overrides(
        ModelConfig(dataset="Organs"),
        [
            "training.epochs=1",
            "training.iterations_per_epoch=2",
            "training.val_iterations=0",
            "training.batch_size=2",
            "training.num_workers=0",
            "training.device=cpu",
            "logging.snapshots=false",
            "prediction.tta=false",
            "prediction.step=0.75",
        ],
    )
    fold_dir = train_fold(cfg, 0)
    validated = sorted((fold_dir / "validation").glob("*.nii.gz"))
    assert validated and set(seen) == {(False, 0.75, 1 / 8)}
    case = validated[0].name[: -len(".nii.gz")]
    image = tiny_home / "raw" / "Dataset001_Organs" / "imagesTr" / f"{case}_0000.nii.gz"
    seen.clear()
    out = tmp_path / "predicted"
    args = ["predict", "-i", str(image), "-o", str(out), "-m", str(fold_dir.parent)]
    result = CliRunner().invoke(app, [*args, "--folds", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert set(seen) == {(False, 0.75, 1 / 8)}
    predicted = read_image(next(out.glob("*.nii.gz"))).array
    np.testing.assert_array_equal(predicted, read_image(validated[0]).array)
