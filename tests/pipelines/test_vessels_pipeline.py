"""The vessels recipe's parts: the tracing predictor reads the model's prediction settings
and checkpoint; seed files per case."""

from __future__ import annotations

import json
import shutil

import pytest

from voxseg.errors import VoxsegError
from voxseg.pipelines.vessels import seed_file, tracing_predictor


def _copy(model, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    return folder


def test_tracing_predictor_reads_the_models_prediction_settings(tiny_model, tmp_path):
    default = tracing_predictor(tiny_model, device="cpu")
    # Nothing stored: the predictor's own defaults, as `voxseg predict` uses them.
    assert default.settings.tta is True and default.settings.step == 0.5
    folder = _copy(tiny_model, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["prediction"] = {"tta": False, "step": 0.75}
    (folder / "config.json").write_text(json.dumps(config))
    own = tracing_predictor(folder, device="cpu")
    assert own.settings.tta is False and own.settings.step == 0.75
    overridden = tracing_predictor(folder, device="cpu", tta=True, step=0.5)
    assert overridden.settings.tta is True and overridden.settings.step == 0.5


def test_tracing_predictor_loads_the_last_checkpoint(tiny_model, tmp_path):
    folder = _copy(tiny_model, tmp_path)
    fold = folder / "fold_all"
    if not (fold / "checkpoint_last.safetensors").is_file():
        pytest.skip("the tiny model keeps no last checkpoint")
    (fold / "weights.safetensors").unlink()  # a run stopped at a deadline
    with pytest.raises(VoxsegError, match="weights.safetensors"):
        tracing_predictor(folder, device="cpu")
    predictor = tracing_predictor(folder, device="cpu", checkpoint="last")
    assert predictor.model.checkpoint == "last" and len(predictor.networks) == 1


def test_seed_file_per_case(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "a.json").write_text("[[[0, 0, 0], 1.0]]")
    (seeds / "b.mrk.json").write_text("{}")
    assert seed_file(seeds, "a") == (seeds / "a.json", None)
    assert seed_file(seeds, "b") == (seeds / "b.mrk.json", None)
    one = tmp_path / "test.json"
    one.write_text("[]")
    assert seed_file(one, "a") == (one, "a")  # one SeqSeg file: the case picks the entry
    with pytest.raises(VoxsegError, match="no seed file for case 'c'"):
        seed_file(seeds, "c")
