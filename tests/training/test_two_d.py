"""2D natural images train and predict like 3D volumes: rgb2d phantoms → 2d plan → train →
predict PNGs of the input's size."""

import numpy as np
from PIL import Image as PILImage
from typer.testing import CliRunner

from voxseg.cli import app


def test_rgb_pngs_train_and_predict_in_2d(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("VOXSEG_HOME", str(home))
    runner = CliRunner()

    def ok(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    raw = home / "raw" / "Dataset005_Lines"
    ok("synth", "rgb2d", raw, "--num-train", 5, "--num-test", 2, "--shape", 1, 64, 64)
    ok("plan", "Lines", "--device", "cpu", "-p", 1)
    ok("preprocess", "Lines", "-c", "2d", "-p", 1)
    ok(
        "train",
        "Lines",
        "-c",
        "2d",
        "--fold",
        "all",
        "--epochs",
        1,
        "--iterations",
        2,
        "--set",
        "training.val_iterations=1",
        "--set",
        "training.num_workers=0",
        "--set",
        "training.device=cpu",
    )
    model = home / "models" / "Dataset005_Lines" / "default" / "2d"
    out = tmp_path / "pred"
    ok("predict", "-i", raw / "imagesTs", "-o", out, "-m", model, "--device", "cpu")
    outputs = sorted(out.glob("*.png"))
    assert len(outputs) == 2
    for png in outputs:
        src = PILImage.open(raw / "imagesTs" / f"{png.stem}_0000.png")
        pred = np.asarray(PILImage.open(png))
        assert pred.shape == (src.height, src.width)
        assert set(np.unique(pred)) <= {0, 1}
