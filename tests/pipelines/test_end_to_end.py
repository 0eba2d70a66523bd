"""Every recipe trained and run end to end on tiny generated data (a few iterations)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.io import read_image
from voxseg.pipelines import (
    PipelineRunner,
    evaluate_pipeline,
    finetune_pipeline,
    init_pipeline,
    read_spec,
    train_pipeline,
)
from voxseg.synth import generate

FAST = [
    "training.epochs=1",
    "training.iterations_per_epoch=2",
    "training.val_iterations=0",
    "training.batch_size=2",
    "training.num_workers=0",
    "prediction.tta=false",
    "logging.snapshots=false",
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _same_grid(pred_path, image_path):
    pred, image = read_image(pred_path), read_image(image_path)
    assert pred.geometry.differences(image.geometry, atol=1e-6) == []


@pytest.fixture(scope="module")
def cord(tmp_path_factory):
    """A cord-lesion pipeline made, trained, run and evaluated through the CLI."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cord")
    ds = generate(
        "cord",
        root / "Dataset001_Cord",
        num_train=4,
        num_test=2,
        shape=(8, 40, 40),
        lesion_free_fraction=0.0,
    )
    pipe = root / "pipe"
    cli = CliRunner()
    sets = [a for s in FAST for a in ("--set", s)]
    steps = [
        [
            "pipeline",
            "init",
            "cord-lesion",
            str(ds),
            str(pipe),
            "--spacing",
            "1.0",
            "--window",
            "16",
            "--patch-size",
            "16x16x16",
            "--device",
            "cpu",
            *sets,
        ],
        ["pipeline", "train", str(pipe), str(ds), "--device", "cpu"],
        [
            "pipeline",
            "predict",
            str(pipe),
            str(ds / "imagesTs"),
            str(root / "out"),
            "--device",
            "cpu",
            "--no-tta",
            "--save-stages",
        ],
        [
            "pipeline",
            "evaluate",
            str(pipe),
            str(ds),
            "--device",
            "cpu",
            "--no-tta",
            "-o",
            str(root / "eval"),
        ],
    ]
    for args in steps:
        result = cli.invoke(app, args)
        assert result.exit_code == 0, result.output
    return ds, pipe, root


def test_cord_lesion_outputs_lie_on_the_input_grid(cord):
    ds, pipe, root = cord
    for image in sorted((ds / "imagesTs").iterdir()):
        case = image.name.replace("_0000.nii.gz", "")
        _same_grid(root / "out" / f"{case}.nii.gz", image)
        for stage in ("cord", "lesion"):
            _same_grid(root / "out" / "stages" / stage / f"{case}.nii.gz", image)
    plans = json.loads((pipe / "stages" / "lesion" / "plans.json").read_text())
    assert plans["normalization"][0]["scheme"] == "nyul"
    assert plans["configurations"]["3d_fullres"]["spacing"] == [1.0, 1.0, 1.0]
    crop = read_image(next((pipe / "work" / "raw" / "lesion" / "imagesTr").iterdir()))
    assert crop.shape[1:] == (16, 16)
    # the cord stage: the plan's spacing coarsened to 1 mm (--cord-spacing default): synth
    # cord pixels are 0.5-0.9 mm (→ 1.0), slices 1.5-3 mm apart (kept)
    cord_spacing = json.loads((pipe / "stages" / "cord" / "plans.json").read_text())[
        "configurations"
    ]["3d_fullres"]["spacing"]
    assert cord_spacing[1:] == [1.0, 1.0]
    assert 1.5 <= cord_spacing[0] <= 3.0
    # the cord stage keeps its largest component (the centerline must follow the cord)
    config = json.loads((pipe / "stages" / "cord" / "config.json").read_text())
    assert config["postprocessing"] == [{"name": "keep_largest_component"}]


def test_cord_lesion_evaluation_reports_lesion_detection(cord):
    _, _, root = cord
    report = json.loads((root / "eval" / "pipeline_summary.json").read_text())
    assert report["num_cases"] == 2 and set(report["dice"]) == {"cord", "lesion"}
    lesion = report["lesions"]["lesion"]
    assert lesion["n_ref"] >= 1
    assert lesion["detected_ref"] == sum(c["detected_ref"] for c in lesion["per_case"].values())
    assert report["seconds_per_case"] > 0


def test_predict_runs_a_pipeline_folder_as_pipeline_predict_does(cord, tmp_path):
    # voxseg auto's model is a pipeline when it adds a small-structure stage: `voxseg predict
    # -m` must take it as it is, with the same output as `voxseg pipeline predict`
    ds, pipe, root = cord
    cli = CliRunner()
    out = tmp_path / "out"
    args = ["predict", "-i", str(ds / "imagesTs"), "-o", str(out), "-m", str(pipe)]
    result = cli.invoke(app, [*args, "--device", "cpu", "--no-tta"])
    assert result.exit_code == 0, result.output
    cases = sorted(p.name for p in (root / "out").glob("*.nii.gz"))
    assert cases and cases == sorted(p.name for p in out.glob("*.nii.gz"))
    for name in cases:
        a = read_image(root / "out" / name).array
        np.testing.assert_array_equal(read_image(out / name).array, a)
    refused = cli.invoke(app, [*args, "--device", "cpu", "--qc"])
    assert refused.exit_code != 0 and "--qc" in refused.output


def test_pipeline_folder_is_movable(cord, tmp_path):
    import shutil

    ds, pipe, _ = cord
    moved = tmp_path / "moved"
    shutil.copytree(pipe, moved, ignore=shutil.ignore_patterns("work"))
    shutil.rmtree(moved / "stages" / "cord" / "fold_all" / "validation", ignore_errors=True)
    image = read_image(next((ds / "imagesTs").iterdir()))
    a = PipelineRunner(pipe, device="cpu", tta=False).predict(image).segmentation.array
    b = PipelineRunner(moved, device="cpu", tta=False).predict(image).segmentation.array
    np.testing.assert_array_equal(a, b)


def test_spine_heatmap_then_crop(tmp_path):
    ds = generate(
        "spine", tmp_path / "Dataset002_Spine", num_train=4, num_test=1, shape=(16, 48, 48)
    )
    pipe = tmp_path / "pipe"
    init_pipeline(
        "spine",
        ds,
        pipe,
        heatmap_shape=[32, 16, 16],
        device="cpu",
        patch_size=[16, 32, 32],
        settings=FAST,
    )
    train_pipeline(pipe, ds, device="cpu")
    config = json.loads((pipe / "stages" / "locate" / "config.json").read_text())
    assert config["loss"]["name"] == "heatmap"
    assert config["loss"]["kind"] == "bce_dice"
    locate_plan = json.loads((pipe / "stages" / "locate" / "plans.json").read_text())
    assert locate_plan["configurations"]["3d_fullres"]["patch_size"] == [32, 16, 16]
    raw = tmp_path / "Dataset002_Spine" / "imagesTr"
    for crop in (pipe / "work" / "raw" / "segment" / "imagesTr").iterdir():
        whole = read_image(raw / crop.name)
        assert np.prod(read_image(crop).shape) <= np.prod(whole.shape)
    image_path = next((ds / "imagesTs").iterdir())
    result = PipelineRunner(pipe, device="cpu", tta=False).predict(read_image(image_path))
    assert result.segmentation.geometry.differences(read_image(image_path).geometry, 1e-6) == []
    for img in result.stages.values():
        assert img.shape == result.segmentation.shape


def test_cascade_trains_on_cross_validated_predictions(tmp_path):
    ds = generate(
        "organs", tmp_path / "Dataset003_Organs", num_train=4, num_test=1, shape=(16, 32, 32)
    )
    pipe = tmp_path / "pipe"
    init_pipeline(
        "cascade", ds, pipe, num_folds=2, device="cpu", patch_size=[16, 16, 16], settings=FAST
    )
    train_pipeline(pipe, ds, device="cpu")
    spec = read_spec(pipe)
    n = len(spec.stage("lowres").labels)
    splits = json.loads((ds / "splits.json").read_text())
    for k, fold in enumerate(splits):
        for case in fold["val"]:
            label = read_image(ds / "labelsTr" / f"{case}.nii.gz").array
            # the prediction the trainer's validation wrote for this held-out case
            cv = read_image(
                pipe / "stages" / "lowres" / f"fold_{k}" / "validation" / f"{case}.nii.gz"
            ).array
            channels = [
                read_image(
                    pipe / "work" / "raw" / "fullres" / "imagesTr" / f"{case}_{c:04d}.nii.gz"
                ).array
                for c in range(1, n + 1)
            ]
            for v, ch in enumerate(channels, start=1):
                np.testing.assert_array_equal(ch, (cv == v).astype(np.float32))
            assert any(not np.array_equal(ch, label == v) for v, ch in enumerate(channels, 1))
    config = json.loads((pipe / "stages" / "fullres" / "config.json").read_text())
    assert config["augmentation"]["intensity_order"][-1] == "previous_mask"
    image_path = next((ds / "imagesTs").iterdir())
    result = PipelineRunner(pipe, device="cpu", tta=False).predict(read_image(image_path))
    assert result.segmentation.geometry.differences(read_image(image_path).geometry, 1e-6) == []


def test_finetune_one_stage_reports_before_and_after(cord, tmp_path):
    _, pipe, _ = cord
    new = generate(
        "cord",
        tmp_path / "Dataset004_NewCord",
        num_train=4,
        num_test=0,
        shape=(8, 40, 40),
        seed=5,
        lesion_free_fraction=0.0,
    )
    out = tmp_path / "tuned"
    report = finetune_pipeline(pipe, new, "lesion", out, device="cpu", tta=False)
    assert report["held_out_split"] == "Tr" and len(report["held_out_cases"]) == 1
    assert report["held_out_cases"][0] not in report["trained_on"]
    assert set(report["before"]) == set(report["after"]) == {"dice", "lesions", "seconds_per_case"}
    assert (out / "finetune_report.json").is_file()
    old = load_file(pipe / "stages" / "lesion" / "fold_all" / "weights.safetensors")
    tuned = load_file(out / "stages" / "lesion" / "fold_all" / "weights.safetensors")
    assert any(not torch.equal(old[k], tuned[k]) for k in old)
    same = load_file(out / "stages" / "cord" / "fold_all" / "weights.safetensors")
    orig = load_file(pipe / "stages" / "cord" / "fold_all" / "weights.safetensors")
    assert all(torch.equal(same[k], orig[k]) for k in orig)
    evaluate_pipeline(
        out,
        new,
        tmp_path / "e",
        split="Tr",
        cases=report["held_out_cases"],
        device="cpu",
        tta=False,
    )


def test_pipeline_predict_chooses_a_dicom_series(cord, tmp_path):
    # a DICOM folder with the scan and a scout: no silent choice (the error lists both);
    # --series and --series-uid pick the scan, predicted as the same series alone in a folder
    from voxseg.synth.dicom import series_datasets, write_datasets

    ds, pipe, _ = cord
    image = read_image(sorted((ds / "imagesTs").iterdir())[0])
    scan = series_datasets(
        np.rint(image.array),
        spacing=image.spacing,
        first_position=(-20.0, -30.0, 15.0),
        series_number=3,
        description="T2 sag",
    )
    write_datasets(scan, tmp_path / "alone" / "patient")
    write_datasets(scan, tmp_path / "in" / "patient")
    scout = series_datasets(
        np.zeros((2, 16, 16)), spacing=(5, 1, 1), first_position=(0, 0, 0), description="Scout"
    )
    write_datasets(scout, tmp_path / "in" / "patient" / "scout")
    cli = CliRunner()

    def run(inputs, out, *extra):
        args = ["pipeline", "predict", str(pipe), str(inputs), str(out), "--device", "cpu"]
        return cli.invoke(app, [*args, "--no-tta", *extra])

    assert run(tmp_path / "alone", tmp_path / "ref").exit_code == 0
    reference = read_image(tmp_path / "ref" / "patient.nii.gz")
    assert reference.shape == image.shape
    refused = run(tmp_path / "in", tmp_path / "none")
    assert refused.exit_code != 0
    assert "holds 2 image series" in refused.output and "'Scout' (2 slices" in refused.output
    for extra in (["--series", "desc:t2*"], ["--series-uid", scan[0].SeriesInstanceUID]):
        out = tmp_path / extra[0].strip("-")
        result = run(tmp_path / "in", out, *extra)
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in out.glob("*.nii.gz")) == ["patient_S3.nii.gz"]
        pred = read_image(out / "patient_S3.nii.gz")
        np.testing.assert_array_equal(pred.array, reference.array)
        assert pred.geometry.differences(reference.geometry, atol=1e-6) == []
