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


def test_local_patch_size_holds_the_percentile_of_the_box_sides(tmp_path):
    from voxseg.vessels.sampling import PATCH_STATS, local_patch_size

    sides = [4.0] * 80 + [9.0] * 15 + [30.0] * 5  # 90th percentile: 9 mm
    (tmp_path / PATCH_STATS).write_text("side_mm\n" + "\n".join(map(str, sides)) + "\n")
    # 9 mm at 0.5/0.7/1.5 mm: 18, 12.9, 6 voxels → multiples of 4, at least 8.
    assert local_patch_size(tmp_path, [0.5, 0.7, 1.5]) == [20, 16, 8]
    assert local_patch_size(tmp_path, [0.5, 0.5, 0.5], percentile=50) == [8, 8, 8]
    with pytest.raises(VoxsegError, match="patch_stats.csv: not found"):
        local_patch_size(tmp_path / "elsewhere", [1.0, 1.0, 1.0])


def test_trace_folder_writes_every_case_and_refuses_short_traces(tmp_path):
    import numpy as np

    from voxseg.io import read_image, read_vtp
    from voxseg.pipelines.vessels import trace_folder
    from voxseg.synth import generate
    from voxseg.vessels import OracleSegmenter

    root = generate(
        "vessels", tmp_path / "raw", num_train=1, num_test=2, seed=5, shape=(64, 64, 64)
    )

    def oracle(case_id):
        return OracleSegmenter(read_image(root / "labelsTs" / f"{case_id}.nii.gz"))

    out = tmp_path / "out"
    report = trace_folder(oracle, root / "imagesTs", root / "seeds", out, output_value=3)
    assert sorted(report["cases"]) == ["vessels_test_000", "vessels_test_001"]
    for case in report["cases"]:
        pred = read_image(out / f"{case}.nii.gz")
        truth = read_image(root / "labelsTs" / f"{case}.nii.gz")
        assert pred.geometry.is_close(truth.geometry)
        assert set(np.unique(pred.array)) == {0, 3}
        p, t = pred.array > 0, truth.array > 0
        assert 2 * (p & t).sum() / (p.sum() + t.sum()) > 0.85
        assert (out / case / "surface.stl").is_file()
        assert "MaximumInscribedSphereRadius" in read_vtp(out / case / "centerline.vtp").point_data
    again = trace_folder(oracle, root / "imagesTs", root / "seeds", out)
    assert sorted(again["skipped"]) == sorted(report["cases"])
    short = {"max_steps_per_branch": 1}
    with pytest.raises(VoxsegError, match="short trace.*vessels_test_000.*--allow-short"):
        trace_folder(oracle, root / "imagesTs", root / "seeds", tmp_path / "s", tracing=short)
    allowed = trace_folder(
        oracle, root / "imagesTs", root / "seeds", tmp_path / "a", tracing=short, allow_short=True
    )
    assert any("short trace" in m for m in allowed["warnings"])


def test_vessels_recipe_spec_and_untrained_predict(tmp_path):
    from typer.testing import CliRunner

    from voxseg.cli import app
    from voxseg.pipelines import read_spec
    from voxseg.synth import generate

    root = generate(
        "vessels", tmp_path / "raw", num_train=1, num_test=1, seed=2, shape=(32, 32, 32)
    )
    runner = CliRunner()
    pipe = tmp_path / "pipe"
    r = runner.invoke(
        app,
        ["pipeline", "init", "vessels", str(root), str(pipe), "--patch-percentile", "80",
         "--set", "training.epochs=3"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    spec = read_spec(pipe)
    (stage,) = spec.stages
    assert spec.recipe == "vessels" and stage.input.kind == "centerline_patches"
    assert stage.input.patch_percentile == 80 and stage.settings == ["training.epochs=3"]
    assert spec.labels == {"background": 0, "vessel": 1}
    out = tmp_path / "out"
    r = runner.invoke(app, ["pipeline", "predict", str(pipe), str(root / "imagesTs"), str(out)])
    assert r.exit_code == 1 and "stage 'vessel' is not trained" in r.output
    lone = tmp_path / "scans"
    lone.mkdir()
    shutil.copy(next((root / "imagesTs").iterdir()), lone)
    r = runner.invoke(app, ["pipeline", "predict", str(pipe), str(lone), str(out)])
    assert r.exit_code == 1 and "no seeds folder beside" in r.output


@pytest.mark.slow
def test_vessels_recipe_trains_the_local_model_with_the_patch_rule(tmp_path):
    import csv

    import numpy as np

    from voxseg.config import read_json
    from voxseg.pipelines import init_pipeline, train_pipeline
    from voxseg.synth import generate

    root = generate(
        "vessels", tmp_path / "raw", num_train=2, num_test=1, seed=4, shape=(48, 48, 48)
    )
    pipe = tmp_path / "pipe"
    init_pipeline(
        "vessels",
        root,
        pipe,
        device="cpu",
        settings=[
            "training.epochs=1",
            "training.iterations_per_epoch=2",
            "training.val_iterations=0",
        ],
    )
    (folder,) = train_pipeline(pipe, root, device="cpu")
    plan = read_json(folder / "plans.json")["configurations"]["3d_fullres"]
    with open(pipe / "work" / "raw" / "vessel" / "patch_stats.csv") as f:
        sides = [float(row["side_mm"]) for row in csv.DictReader(f)]
    need = np.percentile(sides, 90) / np.asarray(plan["spacing"])
    patch = np.asarray(plan["patch_size"])
    assert np.all(patch >= need) and np.all((patch < need + 4) | (patch == 8))
    assert np.all(patch % 4 == 0)
    assert (folder / "fold_all" / "weights.safetensors").is_file()
