import os

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.cli import app
from voxseg.inference import Predictor
from voxseg.io import Image, read_image, write_image


def _rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rx @ ry @ rz


def _test_image(tiny_model_home_raw):
    return read_image(sorted((tiny_model_home_raw / "imagesTs").iterdir())[0])


@pytest.fixture
def raw_dir(tiny_model):
    home = tiny_model.parents[3]
    return home / "raw" / "Dataset001_Organs"


@pytest.mark.parametrize(
    "direction",
    [
        np.eye(3)[:, ::-1],  # ITK identity
        np.diag([-1.0, 1.0, -1.0])[:, ::-1],  # flipped
        _rotation(0.3, -0.2, 0.5)[:, ::-1],  # oblique
        np.eye(3)[:, [1, 2, 0]],  # permuted axes
    ],
    ids=["identity", "flipped", "oblique", "permuted"],
)
def test_output_has_the_input_geometry(tiny_model, raw_dir, direction):
    src = _test_image(raw_dir)
    image = Image(
        src.array, spacing=(2.7, 0.8, 0.9), origin=(10.0, -20.5, 33.0), direction=direction
    )
    pred = Predictor(tiny_model, device="cpu", tta=False).predict(image, probabilities=True)
    seg = pred.segmentation
    assert seg.array.shape == image.array.shape
    assert seg.spacing == image.spacing and seg.origin == image.origin
    np.testing.assert_array_equal(seg.direction, image.direction)
    probs = pred.probabilities
    assert probs.array.shape == (4, *image.shape)
    np.testing.assert_allclose(probs.array.astype(np.float32).sum(0), 1, atol=5e-3)
    # the memory-lean label export agrees with the argmax of the full probabilities
    agree = (probs.array.argmax(0) == seg.array).mean()
    assert agree > 0.995


def test_predicting_a_folder_in_parts_skips_finished_and_survives_bad_cases(
    tiny_model, raw_dir, tmp_path
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = _test_image(raw_dir)
    for i in range(4):
        write_image(src, inputs / f"case{i}_0000.nii.gz")
    (inputs / "broken_0000.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    runner = CliRunner()
    common = [
        "predict",
        "-i",
        str(inputs),
        "-o",
        str(out),
        "-m",
        str(tiny_model),
        "--no-tta",
        "--device",
        "cpu",
    ]
    first = runner.invoke(app, [*common, "--num-parts", "2", "--part-id", "0"])
    done_first = sorted(p.name for p in out.iterdir() if p.name.endswith(".nii.gz"))
    second = runner.invoke(app, [*common, "--num-parts", "2", "--part-id", "1"])
    done = sorted(p.name for p in out.iterdir() if p.name.endswith(".nii.gz"))
    assert done == [f"case{i}.nii.gz" for i in range(4)]
    assert len(done_first) in (2, 3) and set(done_first) < set(done)
    # the broken case is in exactly one part: that part fails (exit 1) naming it, after the
    # other cases of the part were written
    codes = sorted([first.exit_code, second.exit_code])
    assert codes == [0, 1]
    failed = first if first.exit_code else second
    assert "broken" in failed.output
    stamps = {p: os.stat(out / p).st_mtime_ns for p in done}
    again = runner.invoke(app, common)
    assert "skipped 4" in again.output
    assert {p: os.stat(out / p).st_mtime_ns for p in done} == stamps


def test_fold_ensemble_and_probabilities_file(tiny_model, raw_dir, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "-i",
            str(sorted((raw_dir / "imagesTs").iterdir())[0]),
            "-o",
            str(out),
            "-m",
            str(tiny_model),
            "--folds",
            "all",
            "--save-probabilities",
            "--overlays",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    npz = np.load(next(out.glob("*.npz")))
    assert npz["probabilities"].shape[0] == 4 and npz["probabilities"].dtype == np.float16
    assert len(list((out / "overlays").glob("*.png"))) == 1


def test_tta_flips_only_axes_mirrored_in_training(tiny_model):
    from voxseg.config import apply_overrides
    from voxseg.inference import ModelFolder

    model = ModelFolder.load(tiny_model)
    plan = model.plan_config
    plan.mirror_axes = None
    assert Predictor(model, device="cpu").settings.mirror_axes == (0, 1, 2)
    # the plan's axes (labels that keep to one side) unless the training config names some
    plan.mirror_axes = [1]
    assert Predictor(model, device="cpu").settings.mirror_axes == (1,)
    model.config = apply_overrides(model.config, ["augmentation.mirror.axes=[0, 1]"])
    assert Predictor(model, device="cpu").settings.mirror_axes == (0, 1)
    model.config = apply_overrides(model.config, ["augmentation.mirror.p_per_axis=0"])
    assert Predictor(model, device="cpu").settings.mirror_axes == ()


def test_default_windows_per_pass_follow_the_device():
    import torch

    from voxseg.inference.predictor import default_batch_windows

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert default_batch_windows(torch.device("cpu")) == 2
        torch.set_num_threads(16)
        assert default_batch_windows(torch.device("cpu")) == 4
    finally:
        torch.set_num_threads(threads)
    assert default_batch_windows(torch.device("cuda")) == 4
