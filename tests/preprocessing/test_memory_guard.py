"""Peak-memory estimates from headers: checked against the peak RSS of a real run, and the
refusals of ``preprocess`` and ``predict`` when a case cannot fit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from voxseg.io import Image, write_image
from voxseg.io import header as header_module

MEASURE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from voxseg.io import Image, read_image
    from voxseg.io.header import read_header
    from voxseg.planning import read_plans
    from voxseg.preprocessing.memory_guard import preprocess_peak_bytes
    from voxseg.preprocessing.preprocessor import preprocess_case

    def hwm():  # VmHWM: the peak RSS of this process image (ru_maxrss survives fork + exec)
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith("VmHWM"))

    plans_dir, folder, spacing = sys.argv[1], sys.argv[2], [float(s) for s in sys.argv[3:]]
    plans = read_plans(plans_dir, "default")
    cfg = plans.configuration("3d_fullres").model_copy(update={"spacing": spacing})
    warm = Image(np.random.rand(8, 16, 16).astype(np.float32), (2.0, 0.8, 0.8))
    preprocess_case(warm, plans, cfg, np.zeros((8, 16, 16), np.uint8))
    base = hwm()
    image, label = read_image(f"{folder}/img.nii.gz"), read_image(f"{folder}/lab.nii.gz")
    preprocess_case(image, plans, cfg, label)
    peak = hwm() - base
    headers = read_header(f"{folder}/img.nii.gz"), read_header(f"{folder}/lab.nii.gz")
    estimate = preprocess_peak_bytes([headers[0]], headers[1], spacing)
    print(json.dumps({"peak": peak, "estimate": estimate}))
    """
)


@pytest.mark.parametrize("spacing", [[1.0, 0.8, 0.8], [2.0, 1.6, 1.6]], ids=["2V", "V/4"])
def test_preprocess_estimate_bounds_the_measured_peak(tiny_home, tmp_path, spacing):
    plans_dir = tiny_home / "preprocessed" / "Dataset001_Organs"
    rng = np.random.default_rng(0)
    shape = (64, 256, 256)  # 16 MiB of float32: large enough to dominate the allocator's noise
    image = Image((rng.normal(size=shape) * 100).astype(np.float32), (2.0, 0.8, 0.8))
    write_image(image, tmp_path / "img.nii.gz")
    write_image(
        image.with_array((rng.random(shape) > 0.7).astype(np.uint8)), tmp_path / "lab.nii.gz"
    )
    args = [sys.executable, "-c", MEASURE, str(plans_dir), str(tmp_path), *map(str, spacing)]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["peak"] <= got["estimate"] <= 3 * got["peak"], got


def test_preprocess_and_predict_refuse_a_case_that_cannot_fit(tiny_model, tmp_path, monkeypatch):
    from voxseg.cli import app

    home = tiny_model.parents[3]
    monkeypatch.setenv("VOXSEG_HOME", str(home))
    monkeypatch.setattr(header_module, "available_memory", lambda: 50_000)
    runner = CliRunner()
    store = tmp_path / "pre"
    monkeypatch.setenv("VOXSEG_PREPROCESSED", str(store))
    (store / "Dataset001_Organs").mkdir(parents=True)
    plans = home / "preprocessed" / "Dataset001_Organs" / "plans"
    shutil.copytree(plans, store / "Dataset001_Organs" / "plans")
    result = runner.invoke(app, ["preprocess", "Dataset001_Organs", "-c", "3d_fullres", "-p", "1"])
    assert result.exit_code == 1
    assert "preprocessing organs_000" in result.output and "needs about" in result.output
    assert "Traceback" not in result.output
    images = home / "raw" / "Dataset001_Organs" / "imagesTs"
    out = tmp_path / "out"
    args = ["predict", "-i", str(images), "-o", str(out), "-m", str(tiny_model), "--no-tta"]
    result = runner.invoke(app, [*args, "--device", "cpu"])
    assert result.exit_code == 1
    assert "predicting organs_test_000" in result.output and "needs about" in result.output
    monkeypatch.setenv("VOXSEG_MEMORY_CHECK", "0")
    assert runner.invoke(app, [*args, "--device", "cpu"]).exit_code == 0
