"""Every verb that takes a DATASET accepts a folder outside the workspace, run from another
working directory (an nnU-Net user's ``nnUNet_raw/DatasetXXX``), and its name or number."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.synth import generate


@pytest.fixture
def outside(tmp_path, monkeypatch):
    raw = generate(
        "organs",
        tmp_path / "nnUNet_raw" / "Dataset123_Mine",
        num_train=5,
        num_test=1,
        shape=(12, 32, 32),
        seed=2,
    )
    home = tmp_path / "home"
    elsewhere = tmp_path / "somewhere_else"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return raw, home


def _run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"{args}: {result.output}"
    return result.output


def test_every_verb_takes_a_dataset_path_from_another_directory(outside, tmp_path):
    raw, home = outside
    h = ["--home", str(home)]
    _run("dataset", "check", str(raw), *h)
    _run("plan", str(raw), "--device", "cpu", "--patch-size", "8x16x16", "-p", "1", *h)
    _run("preprocess", str(raw), "-c", "3d_fullres", "-p", "1", *h)
    train = [
        "train", str(raw), "--fold", "0", "--epochs", "1", "--iterations", "2",
        "--set", "training.val_iterations=1", "--set", "training.num_workers=0",
        "--set", "logging.snapshots=false", "--device", "cpu", *h,
    ]  # fmt: skip
    _run(*train)
    fold = home / "models" / "Dataset123_Mine" / "default" / "3d_fullres" / "fold_0"
    config = json.loads((fold / "config.json").read_text())
    assert config["dataset"] == "Dataset123_Mine"
    assert config["dataset_path"] == str(raw)
    _run(*train, "--resume")  # finds the dataset again (by its recorded path)
    out = tmp_path / "pred"
    _run("predict", "-i", str(raw / "imagesTs"), "-o", str(out), "-m", str(fold.parent), "--no-tta")
    _run("evaluate", str(out), str(raw / "labelsTs"), "--dataset", str(raw))


@pytest.mark.parametrize("name", ["Dataset123_Mine", "Mine", "123"])
def test_names_and_numbers_resolve_in_the_workspace(tmp_path, monkeypatch, name):
    home = tmp_path / "home"
    generate(
        "organs",
        home / "raw" / "Dataset123_Mine",
        num_train=2,
        num_test=0,
        shape=(8, 24, 24),
        seed=2,
    )
    monkeypatch.chdir(tmp_path)
    _run("dataset", "check", name, "--home", str(home))


def test_moved_dataset_falls_back_to_the_workspace_name(tmp_path, caplog):
    from voxseg.training.config import ModelConfig
    from voxseg.training.setup import find_dataset
    from voxseg.workspace import Workspace

    home = tmp_path / "home"
    raw = generate(
        "organs", home / "raw" / "Dataset123_Mine", num_train=2, num_test=0, shape=(8, 24, 24)
    )
    cfg = ModelConfig(dataset="Dataset123_Mine", dataset_path=str(tmp_path / "gone"))
    caplog.set_level("INFO", logger="voxseg")
    assert find_dataset(Workspace.from_env(home), cfg) == raw
    assert f"{tmp_path / 'gone'} not found; using {raw}" in caplog.text
