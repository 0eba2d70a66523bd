"""``voxseg auto``: the run rules, a budgeted run end to end from a dataset outside the
workspace, its resume, and the auto model folder predicted by ``voxseg predict``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.io import read_image
from voxseg.pipelines.auto import (
    CPU_FULLRES_MIN_SECONDS,
    CV_MIN_RUN_SECONDS,
    NUM_FOLDS,
    choose_runs,
)
from voxseg.synth import generate

CONFIGS_3D = ["2d", "3d_fullres", "3d_lowres", "3d_cascade_fullres"]


def test_cpu_trains_the_whole_image_stage_on_a_held_out_split():
    plan = choose_runs(CONFIGS_3D, 3, "cpu", 900)
    assert plan.configurations == ["3d_lowres"]
    assert plan.folds == ["0"]
    assert "held-out" in plan.validation


def test_cpu_adds_fullres_and_cross_validation_with_time():
    plan = choose_runs(CONFIGS_3D, 3, "cpu", CPU_FULLRES_MIN_SECONDS)
    assert plan.configurations == ["3d_lowres", "3d_fullres"]
    assert plan.folds == [str(k) for k in range(NUM_FOLDS)]
    assert "cross-validation" in plan.validation
    # just below: every one of 5 folds of one configuration gets the minimum
    plan = choose_runs(CONFIGS_3D, 3, "cpu", NUM_FOLDS * CV_MIN_RUN_SECONDS)
    assert plan.configurations == ["3d_lowres"] and len(plan.folds) == NUM_FOLDS


def test_gpu_and_2d_rules():
    assert choose_runs(CONFIGS_3D, 3, "cuda", 3000).configurations == ["3d_fullres"]
    assert choose_runs(CONFIGS_3D, 3, "cuda", 6 * 3600).configurations == [
        "3d_fullres",
        "2d",
        "3d_lowres",
    ]
    assert choose_runs(["2d"], 2, "cpu", 3600).configurations == ["2d"]
    # a CPU plan without the whole-image stage (small images) trains 3d_fullres
    assert choose_runs(["2d", "3d_fullres"], 3, "cpu", 600).configurations == ["3d_fullres"]


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory):
    """``voxseg auto`` on a dataset folder outside the workspace, run from another cwd,
    killed (SIGKILL) once its training has written a checkpoint, then run again."""
    root = tmp_path_factory.mktemp("auto")
    ds = generate(
        "organs",
        root / "elsewhere" / "Dataset042_Mine",
        num_train=5,
        num_test=1,
        shape=(16, 40, 40),
        seed=1,
    )
    home = root / "home"
    args = ["auto", str(ds), "-t", "20s", "--home", str(home), "--device", "cpu", "-p", "1"]
    checkpoint = (
        home / "models/Dataset042_Mine/auto/auto_3d_fullres/fold_0/checkpoint_last.safetensors"
    )
    first = subprocess.Popen(
        [sys.executable, "-m", "voxseg.cli", *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not checkpoint.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    first.kill()
    killed_early = first.wait() != 0
    cwd = os.getcwd()
    os.chdir(root)
    try:
        result = CliRunner().invoke(app, args)
    finally:
        os.chdir(cwd)
    return ds, home, result, killed_early


def test_auto_writes_a_model_folder_with_its_summary(auto_run):
    ds, home, result, _ = auto_run
    assert result.exit_code == 0, result.output
    folder = home / "models" / "Dataset042_Mine" / "auto"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["dataset_path"] == str(ds)
    assert summary["winner"] and summary["why"]
    assert "held-out" in summary["validation"]
    assert summary["runs"][0]["budget"]["epochs"] >= 1
    assert f"-m {folder}" in result.output  # the printed predict command
    assert (folder / "report" / "index.html").is_file()  # the HTML report of the model
    config = json.loads((folder / "config.json").read_text())
    assert config["dataset_path"] == str(ds)
    assert config["training"]["time_budget"] > 0


def test_auto_model_folder_predicts(auto_run, tmp_path):
    ds, home, *_ = auto_run
    folder = home / "models" / "Dataset042_Mine" / "auto"
    out = tmp_path / "pred"
    result = CliRunner().invoke(
        app, ["predict", "-i", str(ds / "imagesTs"), "-o", str(out), "-m", str(folder)]
    )
    assert result.exit_code == 0, result.output
    (pred,) = sorted(out.glob("*.nii.gz"))
    image = read_image(ds / "imagesTs" / pred.name.replace(".nii.gz", "_0000.nii.gz"))
    assert read_image(pred).array.shape == image.array.shape
    assert set(np.unique(read_image(pred).array)) <= {0, 1, 2, 3}


def test_auto_resumes_an_interrupted_run(auto_run):
    ds, home, result, killed_early = auto_run
    assert killed_early, "the first run ended before it could be interrupted"
    assert "resuming" in result.output
    assert "3d_fullres fold 0: resuming" in result.output
    state = json.loads((home / "models/Dataset042_Mine/auto/auto_state.json").read_text())
    assert state["spent"] > 0 and "select" in state["steps"]


def test_auto_rerun_after_the_end_trains_nothing(auto_run):
    ds, home, *_ = auto_run
    result = CliRunner().invoke(
        app, ["auto", str(ds), "-t", "20s", "--home", str(home), "--device", "cpu", "-p", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "already trained" in result.output


@pytest.mark.slow
def test_auto_adds_the_small_stage_for_lesions_inside_the_liver(tmp_path):
    """Lesions of 4–10 mm inside the liver: auto adds the full-resolution stage, keeps
    lesions inside the liver, and ``voxseg predict -m`` runs the pipeline it writes."""
    ds = generate(
        "organs", tmp_path / "Dataset043_Spots", num_train=6, num_test=1, seed=3, lesions=True
    )
    home = tmp_path / "home"
    result = CliRunner().invoke(
        app, ["auto", str(ds), "-t", "60s", "--home", str(home), "--device", "cpu", "-p", "1"]
    )
    assert result.exit_code == 0, result.output
    folder = home / "models" / "Dataset043_Spots" / "auto"
    spec = json.loads((folder / "pipeline.json").read_text())
    small = spec["stages"][1]
    assert small["name"] == "small" and small["inside"] == {"lesion": "liver"}
    assert small["paste"] is True  # lesions also copied to other places in the liver
    config = json.loads((folder / "stages" / "small" / "fold_0" / "config.json").read_text())
    assert config["sampling"]["paste"]["host_channel"] == 1  # the image, then the liver
    assert "lesion" not in spec["stages"][0]["output"]  # only the small stage writes lesions
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["small_structures"]["classes"][0]["inside"] == 1
    assert "copied to other places inside their host" in summary["small_structures"]["why"]
    out = tmp_path / "pred"
    result = CliRunner().invoke(
        app, ["predict", "-i", str(ds / "imagesTs"), "-o", str(out), "-m", str(folder)]
    )
    assert result.exit_code == 0, result.output
    (pred,) = sorted(out.glob("*.nii.gz"))
    seg = read_image(pred).array
    # the same folder as a pipeline, keeping each stage's output: the same label map
    staged = tmp_path / "staged"
    args = ["pipeline", "predict", str(folder), str(ds / "imagesTs"), str(staged)]
    result = CliRunner().invoke(app, [*args, "--save-stages"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_image(staged / pred.name).array, seg)
    # every lesion object lies at least half in the whole stage's liver grown by 2 voxels
    # (the final map's liver has the lesions written over it, so it is not the reference)
    liver = read_image(staged / "stages" / "whole" / pred.name).array == 1
    from scipy import ndimage

    lesions, n = ndimage.label(seg == 4, structure=np.ones((3, 3, 3)))
    grown = ndimage.binary_dilation(liver, iterations=2)
    for k in range(1, n + 1):
        assert (grown & (lesions == k)).sum() >= 0.5 * (lesions == k).sum()
