"""``voxseg plan`` + ``voxseg preprocess`` end to end on small generated datasets."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data.dataset import Dataset
from voxseg.preprocessing import PreprocessedStore, restore_to_original

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


def test_plan_and_preprocess_organs(tmp_path):
    from voxseg.synth import generate

    home = tmp_path / "home"
    root = generate(
        "organs",
        home / "raw" / "Dataset001_Organs",
        num_train=3,
        num_test=0,
        shape=(12, 32, 32),
        seed=3,
    )
    out = _run(
        "plan",
        "Organs",
        "--home",
        str(home),
        "--device",
        "cpu",
        "-p",
        "1",
        "--orientation",
        "RAS",
        "--set",
        "configurations.3d_fullres.batch_size=3",
    )
    assert "3d_fullres" in out
    plan_file = home / "preprocessed" / "Dataset001_Organs" / "plans" / "default.json"
    plans = json.loads(plan_file.read_text())
    assert plans["orientation"] == "RAS" and plans["device"] == "cpu"
    assert plans["configurations"]["3d_fullres"]["batch_size"] == 3
    assert plans["normalization"][0]["scheme"] == "ct"
    _run(
        "preprocess",
        "Organs",
        "--home",
        str(home),
        "-c",
        "3d_fullres",
        "-p",
        "1",
        "--dtype",
        "float16",
    )
    store = PreprocessedStore(
        home / "preprocessed" / "Dataset001_Organs" / "default" / "3d_fullres"
    )
    ds = Dataset(root)
    assert store.case_ids() == ds.case_ids()
    data, seg, meta = store.open(ds.case_ids()[0])
    assert data[...].dtype == np.float16 and seg.shape[1:] == data.shape[1:]
    _, label = ds.load_case(ds.cases()[0])
    back, geometry = restore_to_original(seg[...], meta)
    assert back.shape == label.shape and geometry.is_close(label.geometry)
    assert (back == label.array).mean() > 0.95
    # a second run finds every case finished
    _run(
        "preprocess",
        "Organs",
        "--home",
        str(home),
        "-c",
        "3d_fullres",
        "-p",
        "1",
        "--dtype",
        "float16",
    )


def test_plan_and_preprocess_2d_rgb(tmp_path):
    from voxseg.synth import generate

    home = tmp_path / "home"
    generate(
        "rgb2d", home / "raw" / "Dataset002_Rgb", num_train=3, num_test=0, shape=(1, 48, 40), seed=1
    )
    _run("plan", "Rgb", "--home", str(home), "--device", "cuda", "-p", "1", "--plan-name", "p2")
    plans = json.loads((home / "preprocessed" / "Dataset002_Rgb" / "plans" / "p2.json").read_text())
    assert list(plans["configurations"]) == ["2d"]
    assert len(plans["configurations"]["2d"]["patch_size"]) == 2
    _run("preprocess", "Rgb", "--home", str(home), "--plan", "p2", "--storage", "raw", "-p", "1")
    store = PreprocessedStore(home / "preprocessed" / "Dataset002_Rgb" / "p2" / "2d")
    assert len(store.case_ids()) == 3
    data, seg, meta = store.open(store.case_ids()[0])
    assert isinstance(data, np.memmap) and data.shape[:2] == (3, 1)


def test_unknown_plan_is_a_clear_error(tmp_path, dataset_factory):
    home = tmp_path / "home"
    dataset_factory(home / "raw" / "Dataset004_X")
    result = runner.invoke(app, ["preprocess", "X", "--home", str(home), "--plan", "nope"])
    assert result.exit_code == 1
    assert "no plan 'nope'" in result.output
