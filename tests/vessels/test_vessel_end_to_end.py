"""End to end on ``voxseg synth vessels``: trace from the seeds with an oracle local model,
evaluate against the analytic centerlines; and the command line."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.data import Dataset
from voxseg.io import read_image, read_vtp
from voxseg.synth import generate
from voxseg.vessels import OracleSegmenter, centerline_metrics, read_seeds, trace


def test_tracing_recovers_generated_trees(tmp_path):
    root = generate("vessels", tmp_path / "raw", num_train=3, num_test=0, seed=7)
    ds = Dataset(root)
    for case in ds.cases():
        image, label = ds.load_case(case)
        seeds = read_seeds(root / "seeds" / f"{case.case_id}.json")
        result = trace(image, seeds, OracleSegmenter(label))
        pred, truth = result.segmentation.array > 0, label.array > 0
        dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
        metrics = centerline_metrics(result.segmentation, read_vtp(case.extras["centerline"]))
        assert metrics["centerline_overlap"] >= 0.9, (case.case_id, metrics)
        assert dice >= 0.85, (case.case_id, dice)
        assert metrics["centerline_distance_mm"] < 1.0


def test_cli_centerline_sample_trace(tmp_path):
    root = generate("vessels", tmp_path / "raw", num_train=2, num_test=0, seed=3)
    runner = CliRunner()
    case = "vessels_000"
    r = runner.invoke(
        app,
        ["centerline", str(root / "labelsTr" / f"{case}.nii.gz"), "-o", str(tmp_path / "cl.vtp")],
    )
    assert r.exit_code == 0, r.output
    poly = read_vtp(tmp_path / "cl.vtp")
    assert "MaximumInscribedSphereRadius" in poly.point_data
    assert json.loads((tmp_path / "cl.json").read_text())["branches"]

    r = runner.invoke(
        app,
        [
            "vessels",
            "sample",
            str(root),
            "-o",
            str(tmp_path / "patches"),
            "--set",
            "patches_per_point=1",
            "--set",
            "patches_at_bifurcation=1",
            "--set",
            "num_folds=2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert len(Dataset(tmp_path / "patches").case_ids()) > 5

    out = tmp_path / "trace"
    r = runner.invoke(
        app,
        [
            "trace",
            str(root / "imagesTr" / f"{case}_0000.nii.gz"),
            "--seeds",
            str(root / "seeds" / f"{case}.json"),
            "--oracle",
            str(root / "labelsTr" / f"{case}.nii.gz"),
            "-o",
            str(out),
            "--set",
            "max_steps=500",
        ],
    )
    assert r.exit_code == 0, r.output
    for name in (
        "segmentation.nii.gz",
        "probabilities.nii.gz",
        "surface.vtp",
        "centerline.vtp",
        "steps.json",
        "overview.png",
    ):
        assert (out / name).is_file(), name
    seg = read_image(out / "segmentation.nii.gz")
    image = read_image(root / "imagesTr" / f"{case}_0000.nii.gz")
    assert seg.geometry.is_close(image.geometry)
    steps = json.loads((out / "steps.json").read_text())
    assert steps["num_steps"] == len(steps["steps"]) > 5
    assert np.isclose(steps["config"]["box_scale"], 5.0)

    r = runner.invoke(
        app,
        [
            "trace",
            str(root / "imagesTr" / f"{case}_0000.nii.gz"),
            "--seeds",
            str(root / "seeds" / f"{case}.json"),
            "-o",
            str(out),
        ],
    )
    assert r.exit_code == 1 and "--model" in r.output


def test_cli_short_trace_exits_non_zero_unless_allowed(tmp_path):
    root = generate("vessels", tmp_path / "raw", num_train=1, num_test=0, seed=3)
    case = "vessels_000"
    args = [
        "trace",
        str(root / "imagesTr" / f"{case}_0000.nii.gz"),
        "--seeds",
        str(root / "seeds" / f"{case}.json"),
        "--oracle",
        str(root / "labelsTr" / f"{case}.nii.gz"),
        "-o",
        str(tmp_path / "trace"),
        "--set",
        "max_steps_per_branch=1",
    ]
    runner = CliRunner()
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    assert "short trace" in r.output and "branch 0: 1 step(s)" in r.output
    assert "--allow-short" in r.output
    steps = json.loads((tmp_path / "trace" / "steps.json").read_text())
    assert steps["warnings"] and steps["branch_ends"][0]["reason"].startswith("step limit")
    r = runner.invoke(app, [*args, "--allow-short"])
    assert r.exit_code == 0, r.output
    assert "warning" in r.output


def test_cli_seed_off_the_vessel_is_a_clear_error(tmp_path):
    root = generate("vessels", tmp_path / "raw", num_train=1, num_test=0, seed=3)
    case = "vessels_000"
    label = read_image(root / "labelsTr" / f"{case}.nii.gz")
    outside = np.argwhere(label.array == 0)[0]  # a background voxel (an image corner)
    point = label.geometry.index_to_physical(outside.astype(float))
    (tmp_path / "seeds.json").write_text(json.dumps([[point.tolist(), 1.0]]))
    r = CliRunner().invoke(
        app,
        [
            "trace",
            str(root / "imagesTr" / f"{case}_0000.nii.gz"),
            "--seeds",
            str(tmp_path / "seeds.json"),
            "--oracle",
            str(root / "labelsTr" / f"{case}.nii.gz"),
            "-o",
            str(tmp_path / "trace"),
        ],
    )
    assert r.exit_code == 1
    assert "seed 0 at" in r.output and "no vessel within" in r.output
